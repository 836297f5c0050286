package chunkstore_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

func chunks(t testing.TB, p chunkstore.ChunkerParams, data []byte) [][]byte {
	t.Helper()
	c, err := p.NewChunker(bytes.NewReader(data), make([]byte, p.BufferSize()))
	if err != nil {
		t.Fatal(err)
	}
	return chunksOf(t, c)
}

// chunksOf returns copies of the chunks c cuts, none of them empty.
func chunksOf(t testing.TB, c chunkstore.Chunker) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		b, err := c.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Fatal("an empty chunk")
		}
		out = append(out, append([]byte(nil), b...))
	}
}

func resticParams(t testing.TB) chunkstore.ChunkerParams {
	cfg, err := chunkstore.NewConfig(chunkstore.ChunkerParams{Kind: chunkstore.ChunkerRestic, MinSize: 16 << 10, AvgSize: 64 << 10, MaxSize: 256 << 10}, chunkstore.Compression{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Chunker
}

func TestChunkersCoverInput(t *testing.T) {
	for _, p := range []chunkstore.ChunkerParams{chunkstore.DefaultChunkerParams(), resticParams(t)} {
		t.Run(p.Kind, func(t *testing.T) {
			for _, n := range []int{0, 1, p.MinSize - 1, p.MinSize, p.MaxSize, p.MaxSize + 1, 3 << 20} {
				data := dataset.Random(uint64(n), n)
				got := chunks(t, p, data)
				if joined := bytes.Join(got, nil); !bytes.Equal(joined, data) {
					t.Fatalf("%d bytes: chunks do not join to the input", n)
				}
				for i, c := range got {
					if len(c) == 0 || len(c) > p.MaxSize || (len(c) < p.MinSize && i != len(got)-1) {
						t.Fatalf("%d bytes: chunk %d of %d has %d bytes, outside %d..%d", n, i, len(got), len(c), p.MinSize, p.MaxSize)
					}
				}
			}
		})
	}
}

// newBytesAfterInsert chunks data, inserts 4 KiB at its middle, chunks again
// and returns how many chunks and bytes of the second version are new.
func newBytesAfterInsert(t testing.TB, p chunkstore.ChunkerParams, data []byte) (newChunks, newBytes, total int) {
	seen := map[string]bool{}
	for _, c := range chunks(t, p, data) {
		seen[string(c)] = true
	}
	edited := dataset.Insert(data, len(data)/2+777, dataset.Random(99, 4096))
	for _, c := range chunks(t, p, edited) {
		if !seen[string(c)] {
			newChunks++
			newBytes += len(c)
		}
		total++
	}
	return newChunks, newBytes, total
}

// TestDefaultChunkerResyncsOnPages is the design brief's resync test: a 4 KiB
// insert into zero-padded page data must re-store only the chunks around it.
func TestDefaultChunkerResyncsOnPages(t *testing.T) {
	data := dataset.Pages(1, 1024) // 16 MiB
	p := chunkstore.DefaultChunkerParams()
	n, b, total := newBytesAfterInsert(t, p, data)
	t.Logf("%s: %d of %d chunks new, %d bytes", p.Kind, n, total, b)
	if n > 3 || b > 3*p.MaxSize {
		t.Errorf("%s: a 4 KiB insert made %d chunks (%d bytes) new; want at most 3", p.Kind, n, b)
	}
	rp := resticParams(t)
	rn, rb, rtotal := newBytesAfterInsert(t, rp, data)
	t.Logf("%s: %d of %d chunks new, %d bytes (the Rabin trap of design brief §4)", rp.Kind, rn, rtotal, rb)
}

func TestChunkerParamsValidate(t *testing.T) {
	for _, p := range []chunkstore.ChunkerParams{
		{Kind: "nope", MinSize: 1024, AvgSize: 4096, MaxSize: 8192},
		{Kind: chunkstore.ChunkerFastCDC, MinSize: 1024, AvgSize: 5000, MaxSize: 8192},
		{Kind: chunkstore.ChunkerFastCDC, MinSize: 8192, AvgSize: 4096, MaxSize: 16384},
		{Kind: chunkstore.ChunkerFastCDC, MinSize: 1024, AvgSize: 4096, MaxSize: 64 << 20},
		{Kind: chunkstore.ChunkerRestic, MinSize: 1024, AvgSize: 4096, MaxSize: 8192, Polynomial: 4},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", p)
		}
	}
}
