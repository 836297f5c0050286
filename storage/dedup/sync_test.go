package dedup_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/storage/storagetest"
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

	time.Sleep(protocol.MaxSyncGap(ttl))
	cb.reset()
	if _, err := b.ListBackups(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if n := cb.packsListed.Load(); n != int64(total+added) {
		t.Errorf("a sync %v after the last listed %d packs, want all %d", protocol.MaxSyncGap(ttl), n, total+added)
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
	then := time.Now().Add(-protocol.RemovedKeep - time.Hour)
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

// A backup in progress is listed by other processes while its process's
// lease lives. One left by a process that died is passed over once its
// lease is gone, its name taken over once the lease has expired, and its
// marker deleted by a collection.
func TestRunningMarkers(t *testing.T) {
	const ttl = time.Minute
	as, objects := agents(t, 2, dedup.Options{PackSize: 1 << 20, LeaseTTL: ttl})
	a, b := as[0], as[1]
	if _, err := a.StartBackup(ctx, "d", "x"); err != nil {
		t.Fatal(err)
	}
	if bhs, err := b.ListBackups(ctx, "d"); err != nil || len(bhs) != 1 || bhs[0].Name() != "x" {
		t.Fatalf("b lists %v, %v; want x in progress", names(bhs), err)
	}
	if _, err := b.StartBackup(ctx, "d", "x"); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("b starts x while a runs it: %v, want ErrExists", err)
	}
	// A sync reads a marker once: b's next one reads nothing.
	cb := &counting{Backend: local.New(objects)}
	c := dedup.New(t.TempDir(), dedup.Options{Backend: cb, LeaseTTL: ttl})
	defer c.Close()
	for i := range 2 {
		cb.reset()
		if bhs, err := c.ListBackups(ctx, "d"); err != nil || len(bhs) != 1 {
			t.Fatalf("c lists %v, %v; want x in progress", names(bhs), err)
		}
		if gets := cb.gets.Load(); i == 1 && gets != 0 {
			t.Errorf("a sync with nothing new made %d reads, want none", gets)
		}
	}
	a.Close() // its lease is deleted, its marker stays, as after a crash
	if bhs, err := b.ListBackups(ctx, "d"); err != nil || len(bhs) != 0 {
		t.Fatalf("b lists %v, %v; want nothing once a's lease is gone", names(bhs), err)
	}
	x := dataset.Random(12, 1<<20)
	backup(t, b, "d", "x", map[string][]byte{"f": x})
	wantContent(t, b, "d", "x", x)

	// A process killed with its lease in place: the name is taken over
	// once the lease has expired (by the server's clock).
	write := func(name, content string, age time.Duration) {
		p := filepath.Join(objects, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o644)
		then := time.Now().Add(-age)
		os.Chtimes(p, then, then)
	}
	write(protocol.LeasePrefix+"killed", "{}", 2*ttl)
	write(index.RunningName("d", "y"), `{"lease":"`+protocol.LeasePrefix+`killed"}`, 3*ttl)
	write(index.RunningName("d", "z"), `{"lease":"`+protocol.LeasePrefix+`gone"}`, 3*ttl)
	if bhs, err := b.ListBackups(ctx, "d"); err != nil || len(bhs) != 2 {
		t.Fatalf("b lists %v, %v; want x and y (its lease object is there)", names(bhs), err)
	}
	backup(t, b, "d", "y", map[string][]byte{"f": x})
	collect(t, b, gc.Options{})
	if _, err := os.Stat(filepath.Join(objects, filepath.FromSlash(index.RunningName("d", "z")))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the marker of a dead process: %v, want it deleted by the collection", err)
	}
	if n, _ := countObjects(t, objects, index.RunningPrefix); n != 0 {
		t.Errorf("%d markers left after every backup ended", n)
	}
}

// alternating is one storage.BackupStorage over two Storages on one
// repository, as two processes are: each call that opens handles or
// removes a backup goes to the next of them in turn.
type alternating struct {
	s [2]*dedup.Storage
	n atomic.Int32
}

func (a *alternating) next() *dedup.Storage { return a.s[a.n.Add(1)%2] }

func (a *alternating) ListBackups(ctx context.Context, dir string) ([]storage.BackupHandle, error) {
	return a.next().ListBackups(ctx, dir)
}

func (a *alternating) StartBackup(ctx context.Context, dir, name string) (storage.BackupHandle, error) {
	return a.next().StartBackup(ctx, dir, name)
}

func (a *alternating) RemoveBackup(ctx context.Context, dir, name string) error {
	return a.next().RemoveBackup(ctx, dir, name)
}

func (a *alternating) Close() error { return errors.Join(a.s[0].Close(), a.s[1].Close()) }

// The conformance suite on two storages of one local directory, calls
// interleaved between them.
func TestConformanceTwoStorages(t *testing.T) {
	storagetest.RunApart(t, func(t *testing.T, root string) storage.BackupStorage {
		return &alternating{s: [2]*dedup.Storage{dedup.New(root, smallPacks), dedup.New(root, smallPacks)}}
	})
}

// A process that died with a backup in progress leaves its name, once its
// lease is gone, to another process, which may end a backup of that name.
// When the dead process's index cache opens again, its recovery forgets
// its own half backup and leaves the other's whole.
func TestRecoverLeavesTakenOverName(t *testing.T) {
	objects := filepath.Join(t.TempDir(), "objects")
	cache := t.TempDir()
	opts := dedup.Options{Backend: local.New(objects), PackSize: 1 << 20}
	a := dedup.New(cache, opts)
	bh, err := a.StartBackup(ctx, "d", "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := addFiles(bh, map[string][]byte{"half": dataset.Random(13, 300<<10)}); err != nil {
		t.Fatal(err)
	}
	a.Close() // dies: its lease goes, the backup stays in progress in its cache

	b := dedup.New(t.TempDir(), opts)
	defer b.Close()
	x := dataset.Random(14, 1<<20)
	backup(t, b, "d", "x", map[string][]byte{"f": x})

	a = dedup.New(cache, opts) // recovers
	defer a.Close()
	wantContent(t, a, "d", "x", x)
	fresh := dedup.New(t.TempDir(), opts)
	defer fresh.Close()
	wantContent(t, fresh, "d", "x", x)
}
