package chunkstore_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
)

// Sizes of the pack format: per chunk a header and a trailer entry.
const entryBytes = 45 + 8*chunkstore.DeltaFeatures

var headerBytes = int(chunkstore.PackOverhead(1, nil)-chunkstore.PackOverhead(0, nil)) - entryBytes

// FuzzParsePackTrailer: a trailer that parses describes entries inside the
// pack, and a pack built of those entries has the same trailer.
func FuzzParsePackTrailer(f *testing.F) {
	var p chunkstore.PackBuilder
	p.Add(chunkstore.EncodedChunk{Data: []byte("hello"), PlainLength: 5})
	data, _ := p.Finish(nil)
	f.Add(data[headerBytes+5:], int64(len(data)))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, trailer []byte, size int64) {
		if size < int64(len(trailer)) {
			size = int64(len(trailer))
		}
		entries, err := chunkstore.ParsePackTrailer(trailer, size, nil)
		if err != nil {
			return
		}
		if int64(len(entries))*entryBytes > size {
			t.Fatalf("%d entries from a pack of %d bytes", len(entries), size)
		}
		var again []byte
		for _, e := range entries {
			again = append(again, e.ID[:]...)
			again = appendU32(again, e.Offset, e.Length, e.PlainLength)
			again = append(again, byte(e.Codec))
			slot := len(again)
			for _, b := range e.Bases {
				again = append(again, b[:]...)
			}
			for _, f := range e.Features {
				again = binary.LittleEndian.AppendUint64(again, f)
			}
			again = append(again, make([]byte, entryBytes-45-(len(again)-slot))...)
		}
		if !bytes.Equal(again, trailer[:len(again)]) {
			t.Fatalf("entries %+v do not re-encode to the trailer", entries)
		}
	})
}

func appendU32(b []byte, vs ...uint32) []byte {
	for _, v := range vs {
		b = append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	return b
}

// FuzzScanPack builds a pack of chunks the fuzzer chooses, damages one
// byte, and scans it: every blob whose header and bytes the damage missed
// is found where it is, and nothing outside the pack's bytes.
func FuzzScanPack(f *testing.F) {
	f.Add([]byte("first chunk"), []byte("second, longer chunk of bytes"), []byte("3"), uint16(20), byte(1))
	f.Add([]byte{}, []byte("DDSB"), []byte("DDSBDDSB"), uint16(70), byte(0xff))
	f.Fuzz(func(t *testing.T, a, b, c []byte, at uint16, flip byte) {
		var p chunkstore.PackBuilder
		for i, data := range [][]byte{a, b, c} {
			p.Add(chunkstore.EncodedChunk{ID: chunkstore.ID{byte(i + 1)}, Data: data, PlainLength: len(data)})
		}
		pack, entries := p.Finish(nil)
		damaged := bytes.Clone(pack)
		pos := int(at) % len(damaged)
		damaged[pos] ^= flip
		found := map[chunkstore.ID]chunkstore.PackEntry{}
		for _, e := range chunkstore.ScanPack(damaged) {
			if int64(e.Offset)+int64(e.Length) > int64(len(damaged)) {
				t.Fatalf("entry %+v outside the pack", e)
			}
			found[e.ID] = e
		}
		for _, e := range entries {
			headerStart := int(e.Offset) - headerBytes
			if flip != 0 && pos >= headerStart && pos < int(e.Offset+e.Length) {
				continue // the damage hit this blob
			}
			if got, ok := found[e.ID]; !ok || !reflect.DeepEqual(got, e) {
				t.Fatalf("intact blob %+v not found (damage at %d; found %+v)", e, pos, found)
			}
		}
	})
}

// FuzzParseConfig: a config that parses validates, and encodes to one that
// parses to the same.
func FuzzParseConfig(f *testing.F) {
	cfg, _ := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0)
	seed, _ := json.Marshal(cfg)
	f.Add(seed)
	f.Add([]byte(`{"version":2,"chunker":{"kind":"restic","min_size":1024,"avg_size":4096,"max_size":8192,"polynomial":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := chunkstore.ParseConfig(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config that does not validate: %v", err)
		}
		again, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if c2, err := chunkstore.ParseConfig(again); err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("config %+v round-trips to %+v, %v", c, c2, err)
		}
	})
}
