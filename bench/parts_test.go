package bench_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dedupstore/dedupstore/bench"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

// Two copies of 4 MiB of pages and 1 MiB of random data: every byte is
// chunked and hashed, only the first copy's chunks are compressed and
// loaded back (verified against their IDs), and the limits follow from
// the steps' times.
func TestMeasureParts(t *testing.T) {
	dir := t.TempDir()
	data := append(dataset.Pages(1, 256), dataset.Random(2, 1<<20)...)
	var files []string
	for _, name := range []string{"a", "b"} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	repo := t.TempDir()
	p, err := bench.MeasureParts(context.Background(), files, repo)
	if err != nil {
		t.Fatal(err)
	}
	if p.Bytes != 2*int64(len(data)) || p.NewBytes != int64(len(data)) {
		t.Errorf("measured %d bytes, %d new; want %d, %d", p.Bytes, p.NewBytes, 2*len(data), len(data))
	}
	if p.Chunks < 2*len(data)/(256<<10) {
		t.Errorf("%d chunks for %d bytes", p.Chunks, p.Bytes)
	}
	for name, s := range map[string]float64{"chunk": p.Chunk, "hash": p.Hash, "features": p.Features, "compress": p.Compress, "load": p.Load} {
		if s <= 0 {
			t.Errorf("%s took %v s", name, s)
		}
	}
	// A first backup does all a repeat does and more; cores share work.
	if f, r := p.FirstBackup(2), p.Repeat(2); f <= 0 || f > r || p.FirstBackup(1) > f {
		t.Errorf("limits: first backup %.0f on 2 cores, %.0f on 1; repeat %.0f", f, p.FirstBackup(1), r)
	}
	if r := p.Restore(2); r != 2*p.Restore(1) || r <= 0 {
		t.Errorf("restore limit %.0f on 2 cores, %.0f on 1", r, p.Restore(1))
	}

	if _, err := bench.MeasureParts(context.Background(), []string{filepath.Join(dir, "missing")}, t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v, want ErrNotExist", err)
	}
}
