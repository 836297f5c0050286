package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"slices"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/zeebo/blake3"
)

// ResticPolynomial is the fixed irreducible polynomial chunker studies use
// for the restic chunker, so that a study can be repeated exactly.
const ResticPolynomial = 0x3DA3358B4DC173

// Grid returns every valid chunker setting of kinds × average sizes 2^avgBits,
// with the given minimum and maximum sizes (average/4 and average×4 when
// none are given).
func Grid(kinds []string, avgBits, mins, maxs []int) ([]chunkstore.ChunkerParams, error) {
	var out []chunkstore.ChunkerParams
	for _, kind := range kinds {
		for _, b := range avgBits {
			avg := 1 << b
			for _, lo := range cmpOr(mins, avg/4) {
				for _, hi := range cmpOr(maxs, avg*4) {
					p := chunkstore.ChunkerParams{Kind: kind, MinSize: lo, AvgSize: avg, MaxSize: hi}
					if kind == chunkstore.ChunkerRestic {
						p.Polynomial = ResticPolynomial
					}
					if p.Validate() == nil {
						out = append(out, p)
					}
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("bench: no valid chunker setting in the grid")
	}
	return out, nil
}

func cmpOr(list []int, def int) []int {
	if len(list) == 0 {
		return []int{def}
	}
	return list
}

// StudyResult is how one chunker setting did on a series of versions.
type StudyResult struct {
	Params     chunkstore.ChunkerParams
	Bytes      int64   // all versions added up
	Seconds    float64 // time spent cutting chunks (hashing excluded)
	Chunks     int
	Mean       int
	P50, P99   int
	Added      []int64 // bytes of chunks each version adds to those before it
	DedupRatio float64 // Bytes ÷ unique bytes
	// Histogram counts chunks by size class: Histogram[i] is the chunks of
	// 2^i to 2^(i+1)-1 bytes.
	Histogram []int
}

// MBps is the chunking throughput in MB/s.
func (r StudyResult) MBps() float64 {
	if r.Seconds == 0 {
		return 0
	}
	return float64(r.Bytes) / r.Seconds / 1e6
}

// StudyChunkers cuts the files, taken as successive versions of one stream
// (nightly dumps, say), with each setting, and measures what each version
// would add to a repository. Nothing is stored; memory is 16 bytes per
// distinct chunk plus 4 per chunk.
func StudyChunkers(ctx context.Context, versions []string, grid []chunkstore.ChunkerParams) ([]StudyResult, error) {
	var out []StudyResult
	for _, p := range grid {
		r, err := study(ctx, versions, p)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func study(ctx context.Context, versions []string, p chunkstore.ChunkerParams) (StudyResult, error) {
	r := StudyResult{Params: p, Histogram: make([]int, 32)}
	seen := map[[16]byte]struct{}{}
	var sizes []int32
	var unique int64
	buf := make([]byte, p.BufferSize())
	for _, path := range versions {
		var added int64
		err := chunkFile(ctx, path, p, buf, func(data []byte, cut time.Duration) {
			r.Seconds += cut.Seconds()
			sum := blake3.Sum256(data)
			key := [16]byte(sum[:16])
			if _, ok := seen[key]; !ok {
				seen[key] = struct{}{}
				added += int64(len(data))
			}
			r.Bytes += int64(len(data))
			sizes = append(sizes, int32(len(data)))
			r.Histogram[bits.Len(uint(len(data)))-1]++
		})
		if err != nil {
			return r, err
		}
		r.Added = append(r.Added, added)
		unique += added
	}
	r.Chunks = len(sizes)
	if r.Chunks > 0 {
		r.Mean = int(r.Bytes / int64(r.Chunks))
		slices.Sort(sizes)
		r.P50 = int(sizes[len(sizes)/2])
		r.P99 = int(sizes[len(sizes)*99/100])
	}
	if unique > 0 {
		r.DedupRatio = float64(r.Bytes) / float64(unique)
	}
	return r, nil
}

// chunkFile cuts the file at path with p, using buf, and calls fn with each
// chunk and the time spent cutting it.
func chunkFile(ctx context.Context, path string, p chunkstore.ChunkerParams, buf []byte, fn func(data []byte, cut time.Duration)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := p.NewChunker(f, buf)
	if err != nil {
		return err
	}
	for {
		start := time.Now()
		data, err := c.Next()
		cut := time.Since(start)
		if err == io.EOF {
			return nil
		}
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fn(data, cut)
	}
}
