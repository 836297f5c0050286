package chunkstore

import (
	"testing"

	"github.com/dedupstore/dedupstore/internal/dataset"
)

// rollByByte is rollPart as the format defines it, a byte at a time.
func rollByByte(h uint64, part []byte) (uint64, uint64) {
	var best uint64
	for _, b := range part {
		h = h<<1 + gear[b]
		if b != 0 {
			best = max(best, h)
		}
	}
	return h, best
}

// Features are stored: its two bytes per step must give what the
// definition gives, on pages, random data, zeros and short inputs, at odd
// and even lengths, for any number of parts.
func TestFeaturesAsDefined(t *testing.T) {
	pages := dataset.Pages(1, 8)
	random := dataset.Random(2, 100_001)
	zeros := make([]byte, 5000)
	mixed := append(append([]byte{0, 0, 7}, zeros[:300]...), random[:999]...)
	for _, d := range [][]byte{pages, random, zeros, mixed, {0}, {9}, {0, 9}, {9, 0}, nil} {
		for _, l := range []int{len(d), len(d) / 2, len(d) / 3, max(0, len(d)-1)} {
			for _, n := range []int{1, 3, DeltaFeatures, 16} {
				got, want := Features(d[:l], n), features(d[:l], n, rollByByte)
				if len(got) != len(want) {
					t.Fatalf("%d bytes, %d parts: %d features, want %d", l, n, len(got), len(want))
				}
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("%d bytes, %d parts: feature %d is %x, want %x", l, n, i, got[i], want[i])
					}
				}
			}
		}
	}
}
