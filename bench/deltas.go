package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// DeltaVariant is one way of storing new chunks as deltas against similar
// stored ones (see chunkstore.Features): Features features per chunk, the
// Bases stored chunks sharing the most of them (at least MinVotes) as the
// dictionary, zstd at Level for whole chunks and deltas alike, and a delta
// kept only if MinGain times smaller than the chunk compressed whole (a
// chunk kept whole is the best base for its own later versions). Features
// 0 stores every new chunk whole.
type DeltaVariant struct {
	Features int    `json:"features"`
	Bases    int    `json:"bases"`
	MinVotes int    `json:"min_votes"`
	MinGain  int    `json:"min_gain"`
	Level    string `json:"level"`
}

// RepositoryDeltas is the variant a repository of dedupctl init's defaults
// makes (see storage/dedup/delta.go, whose tests keep the two equal).
var RepositoryDeltas = DeltaVariant{Features: chunkstore.DeltaFeatures, Bases: 1, MinVotes: 1, MinGain: 2, Level: chunkstore.LevelFastest}

func (v DeltaVariant) String() string {
	if v.Features == 0 {
		return "no deltas, " + v.Level
	}
	return fmt.Sprintf("%d features, %d base(s), >= %d votes, %dx gain, %s", v.Features, v.Bases, v.MinVotes, v.MinGain, v.Level)
}

// DeltaResult is what one variant stored of a series of versions.
type DeltaResult struct {
	Variant   DeltaVariant `json:"variant"`
	Logical   int64        `json:"logical_bytes"` // all versions added up
	Added     []int64      `json:"added_bytes"`   // stored bytes each version adds: compressed chunks and deltas
	NewChunks int          `json:"new_chunks"`    // chunks not stored before
	Deltas    int          `json:"deltas"`        // of those, stored as deltas
	// DeltaSeconds is the time spent finding bases and encoding deltas,
	// on one core.
	DeltaSeconds float64 `json:"delta_seconds"`
}

// Stored is the bytes all versions add up to.
func (r DeltaResult) Stored() int64 {
	var stored int64
	for _, a := range r.Added {
		stored += a
	}
	return stored
}

// Ratio is logical bytes ÷ stored bytes.
func (r DeltaResult) Ratio() float64 {
	if r.Stored() == 0 {
		return 0
	}
	return float64(r.Logical) / float64(r.Stored())
}

// StudyDeltas cuts the files, taken as successive versions of one stream,
// with p, and stores each version's new chunks as each variant would: whole
// (compressed) or as a delta against the stored whole chunks that share the
// most features with it, whichever is smaller. Bases are always chunks
// stored whole, so a delta's depth is one; a delta's features lead to its
// base, so that the next version of a chunk stored as a delta finds the
// base its last version was made against. Nothing is written; memory is
// every chunk stored whole, in plain.
func StudyDeltas(ctx context.Context, versions []string, p chunkstore.ChunkerParams, variants []DeltaVariant) ([]DeltaResult, error) {
	var out []DeltaResult
	for _, v := range variants {
		r, err := studyDeltas(ctx, versions, p, v)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func studyDeltas(ctx context.Context, versions []string, p chunkstore.ChunkerParams, v DeltaVariant) (DeltaResult, error) {
	r := DeltaResult{Variant: v}
	level, err := zstdLevel(v.Level)
	if err != nil {
		return r, err
	}
	whole, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return r, err
	}
	defer whole.Close()
	var delta *chunkstore.DeltaEncoder
	if v.Features > 0 {
		if delta, err = chunkstore.NewDeltaEncoder(v.Level, p.MaxSize, v.Bases); err != nil {
			return r, err
		}
		defer delta.Close()
	}
	seen := map[[16]byte]struct{}{}
	var bases [][]byte                  // chunks stored whole, in plain
	byFeature := map[uint64]int32{}     // feature → latest base with it
	votes := map[int32]int{}            // scratch
	var enc []byte                      // scratch
	buf := make([]byte, p.BufferSize()) // scratch
	var encErr error
	store := func(data []byte) int {
		enc = whole.EncodeAll(data, enc[:0])
		size := min(len(enc), len(data))
		if v.Features == 0 {
			return size
		}
		start := time.Now()
		defer func() { r.DeltaSeconds += time.Since(start).Seconds() }()
		feats := chunkstore.Features(data, v.Features)
		clear(votes)
		for _, ft := range feats {
			if b, ok := byFeature[ft]; ok {
				votes[b]++
			}
		}
		best := make([]int32, 0, len(votes))
		for b, n := range votes {
			if n >= v.MinVotes {
				best = append(best, b)
			}
		}
		slices.SortFunc(best, func(a, b int32) int { return cmp.Or(votes[b]-votes[a], int(b-a)) })
		// A chunk stored whole is a base for what resembles it; a delta
		// points what resembles it to its own first base, as bases are
		// always whole.
		base := int32(-1)
		if len(best) > 0 {
			var use [][]byte
			for _, b := range best[:min(v.Bases, len(best))] {
				use = append(use, bases[b])
			}
			d, err := delta.Encode(enc[len(enc):], data, use...)
			if err != nil {
				encErr = err
				return size
			}
			if len(d)*max(1, v.MinGain) <= size {
				size, base = len(d), best[0]
				r.Deltas++
			}
		}
		if base < 0 {
			bases = append(bases, append([]byte(nil), data...))
			base = int32(len(bases) - 1)
		}
		for _, ft := range feats {
			byFeature[ft] = base
		}
		return size
	}
	for _, path := range versions {
		var added int64
		err := chunkFile(ctx, path, p, buf, func(data []byte, _ time.Duration) {
			r.Logical += int64(len(data))
			sum := blake3.Sum256(data)
			key := [16]byte(sum[:16])
			if _, ok := seen[key]; ok || encErr != nil {
				return
			}
			seen[key] = struct{}{}
			r.NewChunks++
			added += int64(store(data))
		})
		if err = cmp.Or(err, encErr); err != nil {
			return r, err
		}
		r.Added = append(r.Added, added)
	}
	return r, nil
}

func zstdLevel(level string) (zstd.EncoderLevel, error) {
	switch level {
	case chunkstore.LevelFastest:
		return zstd.SpeedFastest, nil
	case chunkstore.LevelDefault:
		return zstd.SpeedDefault, nil
	case chunkstore.LevelBetter:
		return zstd.SpeedBetterCompression, nil
	}
	return 0, fmt.Errorf("bench: zstd level %q: want fastest, default or better", level)
}
