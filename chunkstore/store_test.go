package chunkstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

func newStore(t *testing.T) (*chunkstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := chunkstore.Create(context.Background(), local.New(dir), cfg, chunkstore.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, dir
}

// writePack stores the given chunks in one pack and returns their locations.
func writePack(t *testing.T, s *chunkstore.Store, plains ...[]byte) (chunkstore.ID, []chunkstore.PackEntry) {
	t.Helper()
	var p chunkstore.PackBuilder
	for _, plain := range plains {
		p.Add(s.Encode(nil, s.Hash(plain), plain))
	}
	id, entries, _, err := s.WritePack(context.Background(), &p)
	if err != nil {
		t.Fatal(err)
	}
	return id, entries
}

// ReadPackTrailer reads trailers shorter and longer than its first read
// of a pack's end, and packs shorter than that read.
func TestReadPackTrailerSizes(t *testing.T) {
	s, _ := newStore(t)
	for _, n := range []int{1, 1000, 3000} { // 3000 entries: 135,000 bytes of trailer
		plains := make([][]byte, n)
		for i := range plains {
			plains[i] = []byte(fmt.Sprint("chunk ", n, " ", i))
		}
		id, entries := writePack(t, s, plains...)
		var size int64
		s.Backend().List(context.Background(), chunkstore.PackName(id), "", func(o chunkstore.ObjectInfo) error { size = o.Size; return nil })
		got, err := chunkstore.ReadPackTrailer(context.Background(), s.Backend(), chunkstore.PackName(id), size, s.Cipher())
		if err != nil {
			t.Fatalf("%d entries: %v", n, err)
		}
		if !reflect.DeepEqual(got, entries) {
			t.Errorf("%d entries: read back %d, differing", n, len(got))
		}
	}
}

func TestStoreRoundTrip(t *testing.T) {
	s, _ := newStore(t)
	plains := [][]byte{dataset.Pages(1, 4), dataset.Random(2, 70000), {}, []byte("x")}
	packID, entries := writePack(t, s, plains...)
	if got := entries[0].Codec; got != chunkstore.CodecZstd {
		t.Errorf("page data stored with codec %v, want zstd", got)
	}
	if got := entries[1].Codec; got != chunkstore.CodecRaw {
		t.Errorf("random data stored with codec %v, want raw", got)
	}
	for i, e := range entries {
		got, err := s.LoadChunk(context.Background(), e.ID, chunkstore.Location{Pack: packID, Blob: e.Blob}, nil, nil)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if !bytes.Equal(got, plains[i]) {
			t.Errorf("chunk %d: loaded bytes differ", i)
		}
	}
	// The pack describes itself.
	var size int64
	s.Backend().List(context.Background(), chunkstore.PackPrefix, "", func(o chunkstore.ObjectInfo) error { size = o.Size; return nil })
	trailer, err := chunkstore.ReadPackTrailer(context.Background(), s.Backend(), chunkstore.PackName(packID), size, s.Cipher())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(trailer, entries) {
		t.Errorf("trailer %v differs from entries %v", trailer, entries)
	}
}

func TestStoreHashIsKeyed(t *testing.T) {
	a, _ := newStore(t)
	b, _ := newStore(t)
	data := []byte("same bytes")
	if first, again := a.Hash(data), a.Hash(data); first != again {
		t.Fatal("Hash is not deterministic")
	}
	if a.Hash(data) == b.Hash(data) {
		t.Error("two repositories with different keys gave the same chunk ID")
	}
}

func TestLoadChunkDetectsDamage(t *testing.T) {
	for _, damage := range []string{"flip", "truncate", "delete"} {
		t.Run(damage, func(t *testing.T) {
			s, dir := newStore(t)
			packID, entries := writePack(t, s, dataset.Pages(3, 2), dataset.Random(4, 30000))
			path := filepath.Join(dir, filepath.FromSlash(chunkstore.PackName(packID)))
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			switch damage {
			case "flip":
				data[entries[1].Offset+100] ^= 1
				err = os.WriteFile(path, data, 0o644)
			case "truncate":
				err = os.WriteFile(path, data[:entries[1].Offset+10], 0o644)
			case "delete":
				err = os.Remove(path)
			}
			if err != nil {
				t.Fatal(err)
			}
			e := entries[1]
			got, err := s.LoadChunk(context.Background(), e.ID, chunkstore.Location{Pack: packID, Blob: e.Blob}, nil, nil)
			if !errors.Is(err, chunkstore.ErrCorrupt) {
				t.Fatalf("LoadChunk of a damaged chunk = %d bytes, %v; want ErrCorrupt", len(got), err)
			}
			if !strings.Contains(err.Error(), e.ID.String()) {
				t.Errorf("error %q does not name chunk %s", err, e.ID)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	s, dir := newStore(t)
	cfg, err := chunkstore.ReadConfig(context.Background(), local.New(dir), chunkstore.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cfg.Key, s.Config().Key) || !reflect.DeepEqual(cfg.Chunker, chunkstore.DefaultChunkerParams()) || cfg.PackSize != chunkstore.DefaultPackSize {
		t.Errorf("read back config %+v, want %+v", cfg, s.Config())
	}
	if _, err := chunkstore.Create(context.Background(), local.New(dir), cfg, chunkstore.Secret{}); !errors.Is(err, chunkstore.ErrExist) {
		t.Errorf("Create over an existing repository: %v, want ErrExist", err)
	}
	cfg.Version = 99
	future, _ := json.Marshal(cfg)
	if _, err := chunkstore.ParseConfig(future); !errors.Is(err, chunkstore.ErrUnsupportedVersion) {
		t.Errorf("config of version 99: %v, want ErrUnsupportedVersion", err)
	}
	for v := 1; v < chunkstore.FormatVersion; v++ { // 1: before blob headers; 2: before time-ordered pack names
		cfg.Version = v
		older, _ := json.Marshal(cfg)
		if _, err := chunkstore.ParseConfig(older); !errors.Is(err, chunkstore.ErrUnsupportedVersion) || !strings.Contains(err.Error(), "not migrated") {
			t.Errorf("config of version %d: %v, want ErrUnsupportedVersion saying it is not migrated", v, err)
		}
	}
	for _, bad := range []string{"", "{", fmt.Sprintf(`{"version":%d}`, chunkstore.FormatVersion), "null"} {
		if _, err := chunkstore.ParseConfig([]byte(bad)); !errors.Is(err, chunkstore.ErrCorrupt) {
			t.Errorf("ParseConfig(%q) = %v, want ErrCorrupt", bad, err)
		}
	}
}

// TestPackNamesSortByTime: a listing after PacksAfter(t) holds every pack
// named at t or later and none named before, whatever their random bytes.
func TestPackNamesSortByTime(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)
	var names []string
	for i, d := range []time.Duration{-5 * time.Hour, -time.Nanosecond, 0, time.Nanosecond, 5 * time.Hour, 50 * 24 * time.Hour} {
		for range 20 {
			id, err := chunkstore.NewPackID(t0.Add(d))
			if err != nil {
				t.Fatal(err)
			}
			if got := chunkstore.PackTime(id); !got.Equal(t0.Add(d)) {
				t.Fatalf("PackTime = %v, want %v", got, t0.Add(d))
			}
			name := chunkstore.PackName(id)
			if back, err := chunkstore.ParsePackName(name); err != nil || back != id {
				t.Fatalf("ParsePackName(%s) = %v, %v", name, back, err)
			}
			if after := name > chunkstore.PacksAfter(t0); after != (i >= 2) {
				t.Errorf("pack named %v from t0 (%s) sorts after PacksAfter(t0) = %v", d, name, after)
			}
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for i := 1; i < len(names); i++ {
		a, _ := chunkstore.ParsePackName(names[i-1])
		b, _ := chunkstore.ParsePackName(names[i])
		if chunkstore.PackTime(a).After(chunkstore.PackTime(b)) {
			t.Errorf("%s sorts before %s but was named later", names[i-1], names[i])
		}
	}
	for _, bad := range []string{"data/ab/" + strings.Repeat("a", 64), "data/aaaaa/" + strings.Repeat("b", 64)} {
		if _, err := chunkstore.ParsePackName(bad); err == nil {
			t.Errorf("ParsePackName(%s) succeeded", bad)
		}
	}
}

func TestParseID(t *testing.T) {
	var id chunkstore.ID
	id[0], id[31] = 0xab, 0x01
	got, err := chunkstore.ParseID(id.String())
	if err != nil || got != id {
		t.Errorf("ParseID(%s) = %v, %v", id, got, err)
	}
	for _, bad := range []string{"", "ab", strings.Repeat("g", 64), id.String() + "00"} {
		if _, err := chunkstore.ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
	if n, err := chunkstore.ParsePackName(chunkstore.PackName(id)); err != nil || n != id {
		t.Errorf("ParsePackName(PackName) = %v, %v", n, err)
	}
}

// A pack whose trailer, footer or tail is damaged still yields every chunk
// whose header and bytes are intact; a chunk with damaged bytes or a
// damaged header is not returned, and the scan finds its way past it.
func TestSalvagePack(t *testing.T) {
	plains := [][]byte{dataset.Pages(5, 3), dataset.Random(6, 40000), dataset.Pages(7, 2), dataset.Random(8, 9000), []byte("last")}
	for _, tc := range []struct {
		name   string
		damage func(data []byte, entries []chunkstore.PackEntry) []byte
		want   []int // the chunks salvaged
		lost   int
	}{
		{"trailer flip", func(d []byte, _ []chunkstore.PackEntry) []byte { d[len(d)-100] ^= 1; return d }, []int{0, 1, 2, 3, 4}, 0},
		{"truncated by a byte", func(d []byte, _ []chunkstore.PackEntry) []byte { return d[:len(d)-1] }, []int{0, 1, 2, 3, 4}, 0},
		{"garbage appended", func(d []byte, _ []chunkstore.PackEntry) []byte { return append(d, "DDSBgarbage"...) }, []int{0, 1, 2, 3, 4}, 0},
		{"cut in the last chunk", func(d []byte, e []chunkstore.PackEntry) []byte { return d[:e[4].Offset+2] }, []int{0, 1, 2, 3}, 0},
		{"chunk bytes flipped", func(d []byte, e []chunkstore.PackEntry) []byte { d[e[1].Offset+10] ^= 1; return d }, []int{0, 2, 3, 4}, 1},
		{"header flipped", func(d []byte, e []chunkstore.PackEntry) []byte { d[e[2].Offset-10] ^= 1; return d }, []int{0, 1, 3, 4}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, dir := newStore(t)
			packID, entries := writePack(t, s, plains...)
			path := filepath.Join(dir, filepath.FromSlash(chunkstore.PackName(packID)))
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.damage(data, entries), 0o644); err != nil {
				t.Fatal(err)
			}
			damaged, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, lost := s.Salvage(context.Background(), damaged, chunkstore.ScanPack(damaged))
			if len(got) != len(tc.want) || lost != tc.lost {
				t.Fatalf("salvaged %d chunks, %d lost; want %d, %d lost", len(got), lost, len(tc.want), tc.lost)
			}
			for i, e := range got {
				want := entries[tc.want[i]]
				if !reflect.DeepEqual(e, want) {
					t.Errorf("salvaged entry %d = %+v, want %+v", i, e, want)
				}
				plain, err := s.LoadChunk(context.Background(), e.ID, chunkstore.Location{Pack: packID, Blob: e.Blob}, nil, nil)
				if err != nil || !bytes.Equal(plain, plains[tc.want[i]]) {
					t.Errorf("salvaged chunk %d does not load: %v", i, err)
				}
			}
		})
	}
}

// ReadObject reads an object whole, refuses one over its limit as
// corrupt, and passes a missing one's ErrNotExist on.
func TestReadObject(t *testing.T) {
	ctx := context.Background()
	b := local.New(t.TempDir())
	if err := b.Put(ctx, "o", strings.NewReader("0123456789")); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{0, 10} {
		if data, err := chunkstore.ReadObject(ctx, b, "o", limit); err != nil || string(data) != "0123456789" {
			t.Errorf("limit %d: %q, %v", limit, data, err)
		}
	}
	if _, err := chunkstore.ReadObject(ctx, b, "o", 9); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Errorf("over the limit: %v, want ErrCorrupt", err)
	}
	if _, err := chunkstore.ReadObject(ctx, b, "missing", 0); !errors.Is(err, chunkstore.ErrNotExist) {
		t.Errorf("missing: %v, want ErrNotExist", err)
	}
}
