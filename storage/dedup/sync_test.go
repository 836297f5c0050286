package dedup_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// ageRepository renames every pack under objects as if its writer had
// named it d earlier, as in a repository written over months.
func ageRepository(t *testing.T, objects string, d time.Duration) {
	t.Helper()
	var names []string
	countObjectsFn(t, objects, chunkstore.PackPrefix, func(o chunkstore.ObjectInfo) { names = append(names, o.Name) })
	for _, name := range names {
		id, err := chunkstore.ParsePackName(name)
		if err != nil {
			t.Fatal(err)
		}
		old := id
		newID, _ := chunkstore.NewPackID(chunkstore.PackTime(id).Add(-d))
		copy(old[:8], newID[:8])
		to := filepath.Join(objects, chunkstore.PackName(old))
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(objects, name), to); err != nil {
			t.Fatal(err)
		}
	}
}

func countObjectsFn(t *testing.T, objects, prefix string, fn func(chunkstore.ObjectInfo)) {
	t.Helper()
	err := local.New(objects).List(ctx, prefix, "", func(o chunkstore.ObjectInfo) error { fn(o); return nil })
	if err != nil {
		t.Fatal(err)
	}
}

// A sync lists only the packs written since the last one (less a window
// for clocks and uploads), however many the repository holds; one long
// after the last lists them all.
func TestSyncListsOnlyWhatIsNew(t *testing.T) {
	objects := filepath.Join(t.TempDir(), "objects")
	opts := dedup.Options{Backend: local.New(objects), PackSize: 1 << 20}
	a := dedup.New(t.TempDir(), opts)
	x := dataset.Random(1, 4<<20)
	backup(t, a, "d", "x", map[string][]byte{"f": x})
	a.Close()
	ageRepository(t, objects, 2*time.Hour)
	total, _ := countObjects(t, objects, chunkstore.PackPrefix)

	const ttl = time.Second // syncs more than 4 s apart are full
	cb := &counting{Backend: local.New(objects)}
	b := dedup.New(t.TempDir(), dedup.Options{Backend: cb, LeaseTTL: ttl})
	defer b.Close()
	wantContent(t, b, "d", "x", x) // opens: the first sync lists every pack
	cb.reset()
	if _, err := b.ListBackups(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if n := cb.packsListed.Load(); n != 0 {
		t.Errorf("a sync with nothing new listed %d of %d old packs, want none", n, total)
	}

	// Another agent (with a new cache: a's knows the old names) adds y.
	a = dedup.New(t.TempDir(), opts)
	defer a.Close()
	y := dataset.Random(2, 2<<20)
	backup(t, a, "d", "y", map[string][]byte{"f": y})
	added, _ := countObjects(t, objects, chunkstore.PackPrefix)
	added -= total
	cb.reset()
	if bhs, err := b.ListBackups(ctx, "d"); err != nil || len(bhs) != 2 {
		t.Fatalf("ListBackups after another agent added y = %d backups, %v; want 2", len(bhs), err)
	}
	if n := cb.packsListed.Load(); n != int64(added) {
		t.Errorf("the sync after another agent added %d packs listed %d", added, n)
	}
	wantContent(t, b, "d", "y", y)

	time.Sleep(gc.MaxSyncGap(ttl))
	cb.reset()
	if _, err := b.ListBackups(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if n := cb.packsListed.Load(); n != int64(total+added) {
		t.Errorf("a sync %v after the last listed %d packs, want all %d", gc.MaxSyncGap(ttl), n, total+added)
	}
}

// An agent whose syncs list only new packs still learns which packs
// another agent's collection deleted, from the swept condemnation, and
// never deduplicates against them.
func TestSyncLearnsDeletedPacks(t *testing.T) {
	as, objects := agents(t, 2, smallPacks)
	a, b := as[0], as[1]
	x := dataset.Random(3, 4<<20)
	backup(t, a, "d", "x", map[string][]byte{"f": x})
	if _, err := b.ListBackups(ctx, "d"); err != nil { // b knows x's packs
		t.Fatal(err)
	}
	if err := a.RemoveBackup(ctx, "d", "x"); err != nil {
		t.Fatal(err)
	}
	// No backup runs: one collection condemns and sweeps.
	if _, res := collect(t, a, gc.Options{GracePeriod: time.Nanosecond}); res.Deleted == 0 {
		t.Fatalf("sweep deleted nothing: %+v", res)
	}
	_, before := countObjects(t, objects, chunkstore.PackPrefix)
	backup(t, b, "d", "again", map[string][]byte{"f": x})
	if _, after := countObjects(t, objects, chunkstore.PackPrefix); after-before < int64(len(x)) {
		t.Errorf("a backup of deleted data stored %d bytes, want all %d again", after-before, len(x))
	}
	wantContent(t, b, "d", "again", x)
	wantContent(t, a, "d", "again", x)
}

// A manifest removed by another process is forgotten; one that vanished
// without a recorded removal is damage: collections stop, and a repair
// writes it again from the index that still holds the backup.
func TestMissingManifestIsDamage(t *testing.T) {
	as, objects := agents(t, 2, smallPacks)
	a, b := as[0], as[1]
	x, y := dataset.Random(5, 1<<20), dataset.Random(6, 1<<20)
	backup(t, a, "d", "x", map[string][]byte{"f": x})
	backup(t, a, "d", "y", map[string][]byte{"f": y})
	if _, err := b.ListBackups(ctx, "d"); err != nil { // b knows both
		t.Fatal(err)
	}
	if err := a.RemoveBackup(ctx, "d", "x"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(objects, filepath.FromSlash(index.ManifestName("d", "y")))); err != nil {
		t.Fatal(err)
	}
	bhs, err := b.ListBackups(ctx, "d")
	if err != nil || len(bhs) != 1 || bhs[0].Name() != "y" {
		t.Fatalf("b lists %v, %v; want y only: x was removed, y's manifest lost", bhs, err)
	}
	if _, err := b.PlanGC(ctx, gc.Options{}); !errors.Is(err, gc.ErrDamaged) {
		t.Fatalf("collection with a lost manifest: %v, want gc.ErrDamaged", err)
	}
	rep, err := b.Repair(ctx, false)
	if err != nil || len(rep.Manifests) != 1 {
		t.Fatalf("repair: %+v, %v; want the manifest written again", rep, err)
	}
	fresh := dedup.New(t.TempDir(), dedup.Options{Backend: local.New(objects)})
	defer fresh.Close()
	wantContent(t, fresh, "d", "y", y)
	collect(t, b, gc.Options{})
}

// A repair that moves a damaged pack aside tells every process: one whose
// syncs list only new packs forgets it, and stores the chunk it lost again
// instead of deduplicating against it.
func TestSyncLearnsRepairedPacks(t *testing.T) {
	as, objects := agents(t, 2, smallPacks)
	a, b := as[0], as[1]
	x := dataset.Pages(7, 64) // 1 MiB: one pack
	backup(t, a, "d", "x", map[string][]byte{"f": x})
	if _, err := b.ListBackups(ctx, "d"); err != nil { // b knows the pack
		t.Fatal(err)
	}
	var pack string
	countObjectsFn(t, objects, chunkstore.PackPrefix, func(o chunkstore.ObjectInfo) { pack = o.Name })
	damageFile(t, filepath.Join(objects, filepath.FromSlash(pack)), func(d []byte) []byte { d[100] ^= 1; return d })
	if r := runCheck(t, a, check.Options{ReadData: true}); r.OK() {
		t.Fatal("check --read-data found no damage")
	}
	if _, err := a.Repair(ctx, false); err != nil {
		t.Fatal(err)
	}
	backup(t, b, "d", "again", map[string][]byte{"f": x})
	wantContent(t, b, "d", "again", x)
	fresh := dedup.New(t.TempDir(), dedup.Options{Backend: local.New(objects)})
	defer fresh.Close()
	wantContent(t, fresh, "d", "again", x)
}

// Collections delete the records of removed backups once RemovedKeep old,
// and keep younger ones.
func TestRemovalRecordsExpire(t *testing.T) {
	s, root := newStorage(t, smallPacks)
	for _, name := range []string{"old", "young"} {
		backup(t, s, "d", name, map[string][]byte{"f": []byte(name)})
		if err := s.RemoveBackup(ctx, "d", name); err != nil {
			t.Fatal(err)
		}
	}
	records := func() map[string]bool {
		out := map[string]bool{}
		countObjectsFn(t, root, index.RemovedPrefix, func(o chunkstore.ObjectInfo) { out[o.Name] = true })
		return out
	}
	before := records()
	if len(before) != 2 {
		t.Fatalf("records of 2 removals: %v", before)
	}
	var old string
	for name := range before {
		if strings.Contains(name, "/old@") {
			old = name
		}
	}
	then := time.Now().Add(-gc.RemovedKeep - time.Hour)
	os.Chtimes(filepath.Join(root, filepath.FromSlash(old)), then, then)
	collect(t, s, gc.Options{})
	if after := records(); len(after) != 1 || after[old] {
		t.Errorf("records after a collection: %v; want only the young one", after)
	}
}

// failManifests stores manifests, then reports failure, as a crash between
// writing a backup's manifest and marking it ended leaves it.
type failManifests struct{ chunkstore.Backend }

func (b failManifests) Put(ctx context.Context, name string, r io.Reader) error {
	if err := b.Backend.Put(ctx, name, r); err != nil || !strings.HasPrefix(name, index.ManifestPrefix) {
		return err
	}
	return errors.New("injected: manifest stored, then the process died")
}

// A backup whose manifest was written is whole, and other processes may
// be reading it: the process that left it in progress marks it ended when
// it next opens its index cache, instead of removing it under them.
func TestRecoverKeepsWrittenManifest(t *testing.T) {
	objects := filepath.Join(t.TempDir(), "objects")
	cache := t.TempDir()
	a := dedup.New(cache, dedup.Options{Backend: failManifests{local.New(objects)}})
	x := dataset.Random(9, 1<<20)
	bh, err := a.StartBackup(ctx, "d", "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeParallel(a, bh, map[string][]byte{"f": x}); err == nil {
		t.Fatal("EndBackup succeeded; want the injected failure")
	}
	a.Close() // as if the process died

	b := dedup.New(t.TempDir(), dedup.Options{Backend: local.New(objects)})
	defer b.Close()
	wantContent(t, b, "d", "x", x)
	a = dedup.New(cache, dedup.Options{Backend: local.New(objects)}) // recovers
	defer a.Close()
	wantContent(t, a, "d", "x", x)
	wantContent(t, b, "d", "x", x)
}

// A writer whose clock runs two hours behind names its packs before the
// window another process's incremental sync lists: that process misses
// them, which costs duplicate chunks and never a wrong read or a deletion.
// It reads the writer's backup (a read that misses syncs fully), and its
// collection, which syncs fully, keeps every pack the backup uses.
func TestSkewedWriterClock(t *testing.T) {
	objects := filepath.Join(t.TempDir(), "objects")
	opts := dedup.Options{Backend: local.New(objects), PackSize: 1 << 20}
	cb := &counting{Backend: local.New(objects)}
	b := dedup.New(t.TempDir(), dedup.Options{Backend: cb})
	defer b.Close()
	if _, err := b.ListBackups(ctx, "d"); err != nil { // b has synced
		t.Fatal(err)
	}

	// The skewed writer, whose packs end up named two hours in the past,
	// as its clock would have named them.
	a := dedup.New(t.TempDir(), opts)
	x := dataset.Random(11, 3<<20)
	backup(t, a, "d", "x", map[string][]byte{"f": x})
	a.Close()
	var before []string
	countObjectsFn(t, objects, chunkstore.PackPrefix, func(o chunkstore.ObjectInfo) { before = append(before, o.Name) })
	ageRepository(t, objects, 2*time.Hour)

	cb.reset()
	bhs, err := b.ListBackups(ctx, "d") // an incremental sync: misses x's packs
	if err != nil || len(bhs) != 1 || cb.packsListed.Load() != 0 {
		t.Fatalf("ListBackups = %d backups, %v, listing %d packs; want x, and no pack", len(bhs), err, cb.packsListed.Load())
	}
	wantContent(t, b, "d", "x", x)
	if _, res := collect(t, b, gc.Options{GracePeriod: time.Nanosecond}); res.Deleted != 0 {
		t.Errorf("a collection deleted %d packs of a repository where every pack is live", res.Deleted)
	}
	var after []string
	countObjectsFn(t, objects, chunkstore.PackPrefix, func(o chunkstore.ObjectInfo) { after = append(after, o.Name) })
	if len(after) != len(before) {
		t.Errorf("%d packs after the collection, %d before", len(after), len(before))
	}
	fresh := dedup.New(t.TempDir(), opts)
	defer fresh.Close()
	wantContent(t, fresh, "d", "x", x)
	if r := runCheck(t, fresh, check.Options{ReadData: true}); !r.OK() {
		t.Fatalf("check: %+v", r.Problems)
	}
}
