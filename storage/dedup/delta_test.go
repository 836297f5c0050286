package dedup_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// A second backup of pages updated in place stores its changed chunks as
// deltas: far less than without deltas, and every backup reads back
// exactly, also after the first is removed and collected (its chunks are
// the deltas' bases), and check --read-data finds nothing wrong.
func TestDeltasStoreLess(t *testing.T) {
	v1 := dataset.Pages(1, 1024) // 16 MiB
	v2 := dataset.Update(v1, 2, 0.01)
	v3 := dataset.Update(v2, 3, 0.01)
	added := map[bool]int64{}
	for _, deltas := range []bool{false, true} {
		s, root := newStorage(t, dedup.Options{NoDeltas: !deltas})
		backup(t, s, "ks/0", "b1", map[string][]byte{"f": v1})
		st1, err := s.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		backup(t, s, "ks/0", "b2", map[string][]byte{"f": v2})
		backup(t, s, "ks/0", "b3", map[string][]byte{"f": v3})
		st3, err := s.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		added[deltas] = st3.StoredBytes - st1.StoredBytes
		if deltas != (st3.DeltaChunks > 0) || deltas != (st3.DeltaSavedBytes > 10*st3.DeltaStoredBytes) {
			t.Errorf("deltas %v: stats report %d delta chunks stored in %d bytes for %d, saving %d", deltas, st3.DeltaChunks, st3.DeltaStoredBytes, st3.DeltaPlainBytes, st3.DeltaSavedBytes)
		}
		if err := s.RemoveBackup(ctx, "ks/0", "b1"); err != nil {
			t.Fatal(err)
		}
		collect(t, s, everything)
		// Read in a new process, as an operator restores.
		s.Close()
		s = dedup.New(root, dedup.Options{})
		defer s.Close()
		for name, want := range map[string][]byte{"b2": v2, "b3": v3} {
			if got, err := readBack(t, s, "ks/0", name, "f"); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("deltas %v: %s reads back %d bytes, %v", deltas, name, len(got), err)
			}
		}
		rep, err := s.Check(ctx, check.Options{ReadData: true})
		if err != nil || !rep.OK() {
			t.Fatalf("deltas %v: check: %+v, %v", deltas, rep.Problems, err)
		}
	}
	t.Logf("backups 2 and 3 added %d bytes without deltas, %d with", added[false], added[true])
	if added[true]*5 > added[false] {
		t.Errorf("with deltas, backups 2 and 3 added %d bytes; without, %d: want 5x less", added[true], added[false])
	}
}

// check names a delta whose base the index lost, and --read-data the files
// it breaks.
func TestCheckDeltaWithoutBase(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	v1 := dataset.Pages(1, 256)
	backup(t, s, "ks/0", "b1", map[string][]byte{"f": v1})
	backup(t, s, "ks/0", "b2", map[string][]byte{"g": dataset.Update(v1, 2, 0.05)})
	idx := dedup.IndexOf(s)
	var base chunkstore.ID
	idx.ForEachDelta(func(_ chunkstore.ID, bases []chunkstore.ID) error { base = bases[0]; return nil })
	if base == (chunkstore.ID{}) {
		t.Fatal("no deltas were made")
	}
	loc, _, err := idx.Lookup(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, chunkstore.PackName(loc.Pack))); err != nil {
		t.Fatal(err)
	}
	if err := idx.DropPacks([]chunkstore.ID{loc.Pack}); err != nil {
		t.Fatal(err)
	}
	r := runCheck(t, s, check.Options{ReadData: true})
	found := false
	for _, p := range r.Problems {
		found = found || strings.Contains(p.Detail, "delta's base "+base.String()+" is not in the index")
	}
	if !found {
		t.Errorf("check did not name the lost base: %+v", r.Problems)
	}
	files := map[string]bool{}
	for _, a := range r.Affected {
		files[a.Name+"/"+a.File] = true
	}
	if !files["b2/g"] {
		t.Errorf("affected files %v do not include b2/g", r.Affected)
	}
}

// A delta whose base is damaged is lost with it: repair names the files
// that use the delta, and a new backup of the same data does not
// deduplicate against the delta it can no longer decode.
func TestRepairLosesDeltasOfALostBase(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	v1 := dataset.Pages(1, 256)
	v2 := dataset.Update(v1, 2, 0.05)
	backup(t, s, "ks/0", "b1", map[string][]byte{"f": v1})
	backup(t, s, "ks/0", "b2", map[string][]byte{"g": v2})
	idx := dedup.IndexOf(s)
	var base chunkstore.ID
	idx.ForEachDelta(func(_ chunkstore.ID, bases []chunkstore.ID) error { base = bases[0]; return nil })
	loc, found, err := idx.Lookup(base)
	if err != nil || !found {
		t.Fatalf("no deltas were made: %v", err)
	}
	// Flip a byte of the base's stored bytes.
	name := filepath.Join(root, chunkstore.PackName(loc.Pack))
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	data[loc.Offset+loc.Length/2] ^= 0xff
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCheck(t, s, check.Options{ReadData: true}); r.OK() {
		t.Fatal("check found no damage")
	}
	rep, err := s.Repair(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	lost := map[string]bool{}
	for _, f := range rep.Lost {
		lost[f.Name+"/"+f.File] = true
	}
	if !lost["b1/f"] || !lost["b2/g"] {
		t.Errorf("repair reports %+v lost; want b1/f (the base's) and b2/g (its delta's)", rep.Lost)
	}
	backup(t, s, "ks/0", "b3", map[string][]byte{"g": v2})
	s.Close() // read in a new process
	s = dedup.New(root, dedup.Options{})
	defer s.Close()
	if got, err := readBack(t, s, "ks/0", "b3", "g"); err != nil || !bytes.Equal(got, v2) {
		t.Fatalf("a new backup of the delta's data reads back %d bytes, %v", len(got), err)
	}
}
