package chunkstore_test

import (
	"encoding/json"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
)

func FuzzParsePackTrailer(f *testing.F) {
	var p chunkstore.PackBuilder
	p.Add(chunkstore.EncodedChunk{Data: []byte("hello"), PlainLength: 5})
	data, _ := p.Finish()
	f.Add(data[5:], int64(len(data)))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, trailer []byte, size int64) {
		if size < int64(len(trailer)) {
			size = int64(len(trailer))
		}
		entries, err := chunkstore.ParsePackTrailer(trailer, size)
		if err == nil && int64(len(entries))*45 > size {
			t.Fatalf("%d entries from a pack of %d bytes", len(entries), size)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	cfg, _ := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0)
	seed, _ := json.Marshal(cfg)
	f.Add(seed)
	f.Add([]byte(`{"version":2,"chunker":{"kind":"restic","min_size":1024,"avg_size":4096,"max_size":8192,"polynomial":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := chunkstore.ParseConfig(data); err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("ParseConfig accepted a config that does not validate: %v", err)
			}
		}
	})
}
