package dedup_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// damagedRepo holds backups "a" (its own pack) and "b", and returns the path
// of a's only pack.
func damagedRepo(t *testing.T) (*dedup.Storage, string) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "a", map[string][]byte{"f": dataset.Random(50, 100<<10)})
	backup(t, s, "d", "b", map[string][]byte{"g": dataset.Random(51, 100<<10)})
	var packA string
	filepath.WalkDir(filepath.Join(root, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && packA == "" {
			packA = p
		}
		return nil
	})
	return s, packA
}

func runCheck(t *testing.T, s *dedup.Storage, opts check.Options) check.Report {
	t.Helper()
	r, err := s.Check(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCheck(t *testing.T) {
	s, pack := damagedRepo(t)
	if r := runCheck(t, s, check.Options{ReadData: true}); !r.OK() || r.ChunksRead != r.Chunks || r.Packs != 2 || r.Backups != 2 {
		t.Fatalf("healthy repository: %+v", r)
	}
	// Flip a byte of chunk data: only reading the data finds it.
	data, _ := os.ReadFile(pack)
	data[100] ^= 1 // past the first chunk's header
	os.WriteFile(pack, data, 0o644)
	if r := runCheck(t, s, check.Options{}); !r.OK() {
		t.Errorf("structural check flagged data damage it cannot see: %+v", r.Problems)
	}
	r := runCheck(t, s, check.Options{ReadData: true})
	if r.OK() || len(r.Affected) != 1 || r.Affected[0].File == "" || r.Problems[0].Chunk == "" {
		t.Fatalf("flipped byte: %+v", r)
	}
	affected := r.Affected[0]
	// Delete the pack: the structural check finds it, naming the same file.
	os.Remove(pack)
	r = runCheck(t, s, check.Options{})
	if r.OK() || len(r.Affected) != 1 || r.Affected[0] != affected {
		t.Fatalf("deleted pack: %+v", r)
	}
	t.Logf("problems: %+v", r.Problems)
}

func TestCheckManifests(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "a", map[string][]byte{"f": dataset.Random(52, 10<<10)})
	backup(t, s, "d", "b", map[string][]byte{"f": dataset.Random(53, 10<<10)})
	if r := runCheck(t, s, check.Options{}); !r.OK() {
		t.Fatalf("healthy: %+v", r.Problems)
	}
	a := filepath.Join(root, "manifests", "d", "a")
	data, _ := os.ReadFile(a)
	data[len(data)-40] ^= 1
	os.WriteFile(a, data, 0o644)
	os.Remove(filepath.Join(root, "manifests", "d", "b"))
	os.WriteFile(filepath.Join(root, "manifests", "d", "ghost"), data, 0o644)
	r := runCheck(t, s, check.Options{})
	got := map[string]bool{}
	for _, p := range r.Problems {
		got[p.Manifest] = true
	}
	if len(r.Problems) != 3 || !got["manifests/d/a"] || !got["manifests/d/b"] || !got["manifests/d/ghost"] {
		t.Errorf("problems = %+v; want the damaged, the missing and the stray manifest", r.Problems)
	}
}
