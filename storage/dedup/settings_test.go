package dedup

import (
	"testing"

	"github.com/dedupstore/dedupstore/bench"
	"github.com/dedupstore/dedupstore/chunkstore"
)

// dedupctl bench chunker --deltas measures the deltas this package makes.
func TestBenchStudiesTheDeltasMade(t *testing.T) {
	cfg, err := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0) // dedupctl init's defaults
	if err != nil {
		t.Fatal(err)
	}
	want := bench.DeltaVariant{Features: chunkstore.DeltaFeatures, Bases: deltaBases, MinVotes: deltaMinVotes, MinGain: deltaGain, Level: cfg.Compression.DeltaLevel()}
	if bench.RepositoryDeltas != want {
		t.Errorf("bench.RepositoryDeltas = %+v; the repository makes %+v", bench.RepositoryDeltas, want)
	}
}
