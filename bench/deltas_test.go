package bench_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/dedupstore/dedupstore/bench"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

// Three versions of 8 MiB of pages, 2 % of the pages updated in place
// between them (a row, the header's LSN, the checksum), as a database
// updates them: deltas store the changed chunks for a fraction of their
// compressed size.
func TestStudyDeltas(t *testing.T) {
	dir := t.TempDir()
	pages := dataset.Pages(1, 512)
	var files []string
	for i := range 3 {
		f := filepath.Join(dir, string(rune('a'+i)))
		if err := os.WriteFile(f, pages, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		pages = dataset.Update(pages, uint64(i), 0.02)
	}
	res, err := bench.StudyDeltas(context.Background(), files, chunkstore.DefaultChunkerParams(), []bench.DeltaVariant{
		{Level: chunkstore.LevelFastest},
		{Features: 16, Bases: 1, MinVotes: 1, MinGain: 4, Level: chunkstore.LevelFastest},
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, delta := res[0], res[1]
	t.Logf("without deltas %v, with %v (%d of %d new chunks)", plain.Added, delta.Added, delta.Deltas, delta.NewChunks)
	if plain.Deltas != 0 || delta.Added[0] > plain.Added[0] {
		t.Errorf("first version: %d bytes without deltas, %d with", plain.Added[0], delta.Added[0])
	}
	for v := 1; v < 3; v++ {
		if delta.Added[v]*20 > plain.Added[v] {
			t.Errorf("version %d adds %d bytes with deltas, %d without: want at least 20x less", v, delta.Added[v], plain.Added[v])
		}
	}
}
