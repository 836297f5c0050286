package dedup_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// TestIndexRebuild deletes the index of a repository with many backups and
// garbage. Reopening rebuilds it from packs and manifests: every backup
// lists and reads back, and GC would free exactly what it would have.
func TestIndexRebuild(t *testing.T) {
	s, root := newStorage(t, dedup.Options{PackSize: 512 << 10})
	shared := dataset.Pages(60, 200)
	kept := backups{}
	for i := range 8 {
		files := map[string][]byte{"shared": shared, "own": dataset.Random(uint64(61+i), 300<<10), "empty": nil}
		name := fmt.Sprintf("b%d", i)
		backup(t, s, "d", name, files)
		kept[name] = files
	}
	for _, name := range []string{"b2", "b5"} {
		s.RemoveBackup(ctx, "d", name)
		delete(kept, name)
	}
	before := stats(t, s)
	plan, err := s.PlanGC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	plan.Close()
	s.Close()

	if err := os.Remove(filepath.Join(dedup.LocalCacheDir(root), "index.db")); err != nil {
		t.Fatal(err)
	}
	s = dedup.New(root, dedup.Options{})
	defer s.Close()
	kept.verify(t, s, "after the index was rebuilt")
	after := stats(t, s)
	if after.Backups != before.Backups || after.LogicalBytes != before.LogicalBytes || after.StoredBytes != before.StoredBytes || after.Chunks != before.Chunks || after.DeadBytes != before.DeadBytes {
		t.Errorf("stats before %+v\nafter rebuild %+v", before, after)
	}
	p, err := s.PlanGC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if p.FreedBytes != plan.FreedBytes || p.Live != plan.Live || p.Dead != plan.Dead {
		t.Errorf("GC would free %d bytes (%d live, %d dead chunks) after the rebuild, %d (%d, %d) before", p.FreedBytes, p.Live, p.Dead, plan.FreedBytes, plan.Live, plan.Dead)
	}
}

func TestIndexRebuildReportsDamage(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "a", map[string][]byte{"f": dataset.Random(70, 100<<10)})
	backup(t, s, "d", "b", map[string][]byte{"f": dataset.Random(71, 100<<10)})
	manifest := filepath.Join(root, "manifests", "d", "a")
	data, _ := os.ReadFile(manifest)
	data[len(data)/2] ^= 1
	os.WriteFile(manifest, data, 0o644)
	res, err := s.RebuildIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Backups != 1 || len(res.DamagedManifests) != 1 || res.DamagedManifests[0].Object != "manifests/d/a" || res.Packs != 2 {
		t.Errorf("rebuild = %+v; want b imported, a's manifest reported", res)
	}
	if got, err := readBack(t, s, "d", "b", "f"); err != nil || len(got) != 100<<10 {
		t.Errorf("b after rebuild: %v", err)
	}
}
