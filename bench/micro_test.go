package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/index"
	"github.com/zeebo/blake3"
)

// The parts of the pipeline one at a time, on one core, per byte of input.

const partSize = 64 << 20

func newStore(b *testing.B, level string) *chunkstore.Store {
	cfg, err := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{Level: level}, 0)
	if err != nil {
		b.Fatal(err)
	}
	s, err := chunkstore.Create(context.Background(), local.New(b.TempDir()), cfg, chunkstore.Secret{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

func BenchmarkChunk(b *testing.B) {
	restic := chunkstore.DefaultChunkerParams()
	restic.Kind, restic.Polynomial = chunkstore.ChunkerRestic, ResticPolynomial
	for _, p := range []chunkstore.ChunkerParams{chunkstore.DefaultChunkerParams(), restic} {
		for _, kind := range []string{"random", "pages"} {
			b.Run("chunker="+p.Kind+"/data="+kind, func(b *testing.B) {
				d := input(kind)[:partSize]
				buf := make([]byte, p.BufferSize())
				b.SetBytes(int64(len(d)))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					c, err := p.NewChunker(bytes.NewReader(d), buf)
					if err != nil {
						b.Fatal(err)
					}
					for {
						if _, err := c.Next(); errors.Is(err, io.EOF) {
							break
						} else if err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

func BenchmarkHash(b *testing.B) {
	s := newStore(b, chunkstore.LevelFastest)
	d := input("random")[:64<<10]
	b.SetBytes(int64(len(d)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s.Hash(d)
	}
}

// BenchmarkFeatures computes a chunk's features, which a repository that
// makes deltas computes for every new chunk.
func BenchmarkFeatures(b *testing.B) {
	for _, kind := range []string{"pages", "random"} {
		b.Run("data="+kind, func(b *testing.B) {
			d := input(kind)[:64<<10]
			b.SetBytes(int64(len(d)))
			b.ReportAllocs()
			for b.Loop() {
				chunkstore.Features(d, chunkstore.DeltaFeatures)
			}
		})
	}
}

// BenchmarkCompress encodes 64 KiB chunks at each level, reporting the
// stored fraction.
func BenchmarkCompress(b *testing.B) {
	for _, level := range []string{chunkstore.LevelFastest, chunkstore.LevelDefault, chunkstore.LevelBetter, chunkstore.LevelBest} {
		for _, kind := range []string{"pages", "random"} {
			b.Run("level="+level+"/data="+kind, func(b *testing.B) {
				s := newStore(b, level)
				d := input(kind)[:partSize]
				dst := make([]byte, 0, 80<<10)
				b.SetBytes(64 << 10)
				b.ReportAllocs()
				var in, out int64
				for i := 0; i < b.N; i++ {
					off := (i * 64 << 10) % (len(d) - 64<<10)
					c := s.Encode(dst, chunkstore.ID{}, d[off:off+64<<10])
					in += 64 << 10
					out += int64(len(c.Data))
				}
				b.ReportMetric(float64(out)/float64(in), "stored/plain")
			})
		}
	}
}

func BenchmarkDecompress(b *testing.B) {
	s := newStore(b, chunkstore.LevelFastest)
	d := input("pages")[:64<<10]
	id := s.Hash(d)
	var p chunkstore.PackBuilder
	e := p.Add(s.Encode(nil, id, d))
	packID, _, _, err := s.WritePack(context.Background(), &p)
	if err != nil {
		b.Fatal(err)
	}
	loc := chunkstore.Location{Pack: packID, Blob: e.Blob}
	scratch, dst := make([]byte, 0, 80<<10), make([]byte, 0, 64<<10)
	b.SetBytes(int64(len(d)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := s.LoadChunk(context.Background(), id, loc, scratch, dst); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPackWrite seals a 16 MiB pack and writes it durably.
func BenchmarkPackWrite(b *testing.B) {
	s := newStore(b, chunkstore.LevelNone)
	d := input("random")[:16<<20]
	p := chunkstore.NewPackBuilder(17 << 20)
	b.SetBytes(int64(len(d)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p.Reset()
		for off := 0; off < len(d); off += 64 << 10 {
			var id chunkstore.ID
			binary.LittleEndian.PutUint64(id[:], uint64(i<<32|off))
			p.Add(chunkstore.EncodedChunk{ID: id, Data: d[off : off+64<<10], PlainLength: 64 << 10})
		}
		if _, _, _, err := s.WritePack(context.Background(), p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIndex looks up and inserts chunks in an index of 1 M chunks.
func BenchmarkIndex(b *testing.B) {
	idx, err := index.Open(filepath.Join(b.TempDir(), "index.db"), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer idx.Close()
	const n = 1 << 20
	id := func(i int) chunkstore.ID {
		var buf [8]byte
		binary.LittleEndian.PutUint64(buf[:], uint64(i))
		return blake3.Sum256(buf[:])
	}
	insert := func(from, count int) {
		entries := make([]chunkstore.PackEntry, count)
		for j := range entries {
			entries[j] = chunkstore.PackEntry{ID: id(from + j), Blob: chunkstore.Blob{Length: 30000, PlainLength: 65536}}
		}
		if err := idx.AddPack(index.Pack{ID: id(-1 - from), Size: 1, Chunks: count}, entries); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i += 8192 {
		insert(i, 8192)
	}
	b.Run("op=lookup/chunks=1M", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, found, err := idx.Lookup(id(i % n)); err != nil || !found {
				b.Fatal(found, err)
			}
		}
	})
	b.Run("op=insert-pack-of-256/chunks=1M", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			insert(n+i*256, 256)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256), "ns/chunk")
	})
}
