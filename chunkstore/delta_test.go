package chunkstore_test

import (
	"bytes"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

func shared(a, b []uint64) int {
	n := 0
	for i := range a {
		if a[i] == b[i] {
			n++
		}
	}
	return n
}

// A chunk with a few bytes changed keeps most features; an unrelated chunk
// shares none.
func TestFeaturesFindSimilarChunks(t *testing.T) {
	base := dataset.Pages(1, 4) // 64 KiB of pages
	similar := append([]byte(nil), base...)
	for _, off := range []int{100, 20000, 50000} {
		copy(similar[off:], "changed rows")
	}
	other := dataset.Pages(2, 4)
	fb, fs, fo := chunkstore.Features(base, 16), chunkstore.Features(similar, 16), chunkstore.Features(other, 16)
	if n := shared(fb, fs); n < 12 {
		t.Errorf("a chunk with 3 small changes shares %d of 16 features, want >= 12", n)
	}
	if n := shared(fb, fo); n > 1 {
		t.Errorf("an unrelated chunk shares %d of 16 features", n)
	}
	if got := chunkstore.Features([]byte("abc"), 16); len(got) != 3 {
		t.Errorf("3 bytes give %d features, want 3", len(got))
	}
}

// One encoder serves many bases in turn; a delta decodes with its bases
// only, and is far smaller than the chunk compressed alone.
func TestDeltaRoundTrip(t *testing.T) {
	enc, err := chunkstore.NewDeltaEncoder(chunkstore.LevelFastest, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for seed := range uint64(4) {
		a, b := dataset.Pages(10+seed, 4), dataset.Pages(20+seed, 4)
		plain := append(append([]byte(nil), a[:32<<10]...), b[32<<10:]...)
		copy(plain[1000:], "a changed row")
		for _, bases := range [][][]byte{{a}, {a, b}} {
			delta, err := enc.Encode(nil, plain, bases...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := chunkstore.DecodeDelta(nil, delta, bases...)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("seed %d, %d bases: decoded %d bytes, %v", seed, len(bases), len(got), err)
			}
			if len(bases) == 2 && len(delta) > len(plain)/50 {
				t.Errorf("seed %d: delta of %d bytes for a %d-byte chunk made of its bases", seed, len(delta), len(plain))
			}
			if wrong, err := chunkstore.DecodeDelta(nil, delta, dataset.Pages(99, 4)); err == nil && bytes.Equal(wrong, plain) {
				t.Errorf("seed %d: a delta decoded right with the wrong base", seed)
			}
		}
	}
	if _, err := chunkstore.NewDeltaEncoder(chunkstore.LevelNone, 1<<20); err == nil {
		t.Error("a delta encoder without compression was made")
	}
}
