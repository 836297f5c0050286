package dedup

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

// A worker loads a delta's base whole, compresses against it without the
// lock, and only then claims the base. Meanwhile a collection may remove
// the base, and a writer store it again as a delta: the claim must then
// fail, or the new delta names a base that cannot be read whole (CI met
// this once in TestGCBesideLiveBackupsNoGrace: "a delta's base is itself a
// delta"). Here the base is a chunk indexed as a delta, and then one
// pending in a pack: neither is claimed; a chunk indexed whole is.
func TestClaimRefusesABaseStoredAgain(t *testing.T) {
	ctx := context.Background()
	s := New(filepath.Join(t.TempDir(), "repo"), Options{})
	defer s.Close()
	v1 := dataset.Pages(1, 64) // 1 MiB
	for i, data := range [][]byte{v1, dataset.Update(v1, 2, 0.05)} {
		bh, err := s.StartBackup(ctx, "ks/0", string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		w, err := bh.AddFile(ctx, "f")
		if err == nil {
			_, err = w.Write(data)
		}
		if err == nil {
			err = w.Close()
		}
		if err == nil {
			err = bh.EndBackup(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r := s.repo
	var delta, whole chunkstore.ID
	err := r.idx.ForEachDelta(func(id chunkstore.ID, bases []chunkstore.ID) error {
		delta, whole = id, bases[0]
		return nil
	})
	if err != nil || delta == (chunkstore.ID{}) {
		t.Fatalf("the second backup made no delta (%v)", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok, err := r.claimBasesLocked([]chunkstore.ID{delta}); ok || err != nil {
		t.Errorf("a chunk indexed as a delta was claimed as a base (%v)", err)
	}
	if ok, err := r.claimBasesLocked([]chunkstore.ID{whole}); !ok || err != nil {
		t.Fatalf("a chunk indexed whole was refused as a base (%v)", err)
	}
	if r.claims[whole] != 1 {
		t.Errorf("the base claimed has %d claims", r.claims[whole])
	}
	r.releaseOneLocked(whole)
	r.pending[whole] = &pack{}
	defer delete(r.pending, whole)
	if ok, err := r.claimBasesLocked([]chunkstore.ID{whole}); ok || err != nil {
		t.Errorf("a base pending in a pack, stored again, was claimed (%v)", err)
	}
}
