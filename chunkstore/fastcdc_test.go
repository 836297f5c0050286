package chunkstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"testing"
	"testing/iotest"

	cdc "github.com/PlakarKorp/go-cdc-chunkers"
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc" // registers "fastcdc-v1.0.0"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

// libraryCuts returns the lengths of the chunks go-cdc-chunkers'
// "fastcdc-v1.0.0" cuts data into.
func libraryCuts(t testing.TB, p chunkstore.ChunkerParams, data []byte) []int {
	t.Helper()
	c, err := cdc.NewChunker(chunkstore.ChunkerFastCDC, bytes.NewReader(data), &cdc.ChunkerOpts{MinSize: p.MinSize, NormalSize: p.AvgSize, MaxSize: p.MaxSize, Key: p.Key})
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for {
		b, err := c.Next()
		if len(b) > 0 {
			out = append(out, len(b))
		}
		if errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// Our FastCDC cuts exactly where the library's does: keyed and not, at
// the library's own defaults (its fixed masks) and at ours, on random data,
// database pages (chunks at their maximum in zero runs), zeros and short
// streams, whatever sizes the reader's reads have.
func TestFastCDCCutsAsTheLibrary(t *testing.T) {
	keyed := chunkstore.DefaultChunkerParams()
	keyed.Key = bytes.Repeat([]byte{7}, 32)
	params := []chunkstore.ChunkerParams{
		chunkstore.DefaultChunkerParams(),
		keyed,
		{Kind: chunkstore.ChunkerFastCDC, MinSize: 2 << 10, AvgSize: 8 << 10, MaxSize: 64 << 10},
		{Kind: chunkstore.ChunkerFastCDC, MinSize: 100, AvgSize: 1024, MaxSize: 3000},
		{Kind: chunkstore.ChunkerFastCDC, MinSize: 64, AvgSize: 128, MaxSize: 129},
	}
	inputs := map[string][]byte{
		"random": dataset.Random(3, 3<<20+12345),
		"pages":  dataset.Pages(3, 200),
		"zeros":  make([]byte, 1<<20+7),
		"short":  dataset.Random(4, 101),
		"one":    {42},
		"empty":  nil,
	}
	for _, p := range params {
		for name, data := range inputs {
			want := libraryCuts(t, p, data)
			for _, half := range []bool{false, true} {
				t.Run(fmt.Sprintf("%d-%d-%d/%s/half=%v/keyed=%v", p.MinSize, p.AvgSize, p.MaxSize, name, half, p.Key != nil), func(t *testing.T) {
					var r io.Reader = bytes.NewReader(data)
					if half {
						r = iotest.HalfReader(r)
					}
					c, err := p.NewChunker(r, make([]byte, p.BufferSize()))
					if err != nil {
						t.Fatal(err)
					}
					got := cutLengths(t, c)
					if !slices.Equal(got, want) {
						t.Fatalf("%d chunks, the library cuts %d; first difference at chunk %d", len(got), len(want), firstDiff(got, want))
					}
				})
			}
		}
	}
}

// cutLengths returns the lengths of the chunks c cuts.
func cutLengths(t testing.TB, c chunkstore.Chunker) []int {
	t.Helper()
	var out []int
	for _, chunk := range chunksOf(t, c) {
		out = append(out, len(chunk))
	}
	return out
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// FuzzFastCDC: on any data, at any valid small sizes, keyed or not, our
// cuts are the library's.
func FuzzFastCDC(f *testing.F) {
	f.Add([]byte("seed"), uint16(64), uint8(7), uint16(100), false)
	f.Add(bytes.Repeat([]byte{0, 1, 2}, 3000), uint16(100), uint8(8), uint16(1000), true)
	f.Fuzz(func(t *testing.T, data []byte, minSize uint16, avgBits uint8, extra uint16, keyed bool) {
		p := chunkstore.ChunkerParams{Kind: chunkstore.ChunkerFastCDC, MinSize: 64 + int(minSize%512)}
		p.AvgSize = 1 << max(int(avgBits%14), bits.Len(uint(p.MinSize)))
		p.MaxSize = p.AvgSize + 1 + int(extra)
		if keyed {
			p.Key = bytes.Repeat([]byte{byte(avgBits)}, 32)
		}
		if p.Validate() != nil {
			t.Skip()
		}
		c, err := p.NewChunker(bytes.NewReader(data), make([]byte, p.BufferSize()))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := cutLengths(t, c), libraryCuts(t, p, data); !slices.Equal(got, want) {
			t.Fatalf("%+v: cuts %v, the library's %v", p, got, want)
		}
	})
}
