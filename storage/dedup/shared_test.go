package dedup_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/storage/storagetest"
)

// Shared repositories in one process: agents are Storages with their own
// index caches on one local backend directory, whose file times stand in
// for the server's clock. The multi-process test against a real S3
// server is in chunkstore/s3.

// agents returns n agents on one new shared repository, and its directory.
func agents(t *testing.T, n int, opts dedup.Options) ([]*dedup.Storage, string) {
	t.Helper()
	objects := filepath.Join(t.TempDir(), "objects")
	opts.Backend = local.New(objects)
	var out []*dedup.Storage
	for range n {
		s := dedup.New(t.TempDir(), opts)
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out, objects
}

func TestSharedConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, root string) storage.BackupStorage {
		opts := smallPacks
		opts.Backend = local.New(filepath.Join(root, "objects"))
		return dedup.New(filepath.Join(root, "cache"), opts)
	})
}

// countObjects counts the objects under prefix and their bytes.
func countObjects(t *testing.T, objects, prefix string) (n int, size int64) {
	t.Helper()
	err := local.New(objects).List(ctx, prefix, "", func(o chunkstore.ObjectInfo) error {
		n++
		size += o.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size
}

func wantContent(t *testing.T, s *dedup.Storage, dir, name string, want []byte) {
	t.Helper()
	wantContentFile(t, s, dir, name, "f", want)
}

func wantContentFile(t *testing.T, s *dedup.Storage, dir, name, file string, want []byte) {
	t.Helper()
	got, err := readBack(t, s, dir, name, file)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s/%s/%s read back: %d bytes, %v; want %d bytes exactly", dir, name, file, len(got), err, len(want))
	}
}

// Each agent sees the others' backups, stores nothing twice that it knew
// of, and forgets backups another agent removed.
func TestSharedAgentsSeeEachOther(t *testing.T) {
	as, objects := agents(t, 2, smallPacks)
	a, b := as[0], as[1]
	data := dataset.Pages(1, 8<<20/dataset.PageSize)
	backup(t, a, "d", "x", map[string][]byte{"f": data})
	_, before := countObjects(t, objects, chunkstore.PackPrefix)

	wantContent(t, b, "d", "x", data)
	backup(t, b, "d", "y", map[string][]byte{"f": data})
	if _, after := countObjects(t, objects, chunkstore.PackPrefix); after != before {
		t.Errorf("a second agent's backup of the same data stored %d bytes more", after-before)
	}
	if _, err := b.StartBackup(ctx, "d", "x"); !errors.Is(err, storage.ErrExists) {
		t.Errorf("StartBackup of another agent's backup name = %v, want ErrExists", err)
	}
	wantContent(t, a, "d", "y", data)

	if err := b.RemoveBackup(ctx, "d", "x"); err != nil {
		t.Fatal(err)
	}
	bhs, err := a.ListBackups(ctx, "d")
	if err != nil || len(bhs) != 1 || bhs[0].Name() != "y" {
		t.Fatalf("after another agent removed x, ListBackups = %v, %v; want only y", bhs, err)
	}
}

// TestSharedGCTwoPhase walks a collection through both phases with a
// writer that deduplicates against a chunk between them.
func TestSharedGCTwoPhase(t *testing.T) {
	as, objects := agents(t, 2, smallPacks)
	a, b := as[0], as[1]
	x, y := dataset.Random(1, 4<<20), dataset.Random(2, 4<<20)
	backup(t, a, "d", "x", map[string][]byte{"f": x})
	backup(t, b, "d", "y", map[string][]byte{"f": y})
	packsXY, _ := countObjects(t, objects, chunkstore.PackPrefix)

	// b starts a backup, then a collection condemns x's packs.
	bh, err := b.StartBackup(ctx, "d", "z")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveBackup(ctx, "d", "x"); err != nil {
		t.Fatal(err)
	}
	noGrace := gc.Options{GracePeriod: time.Nanosecond}
	p, res := collect(t, a, noGrace)
	if len(p.Delete) == 0 || res.Condemned != len(p.Delete) || res.Deleted != 0 {
		t.Fatalf("phase 1: plan deletes %d packs, result %+v; want them condemned, none deleted", len(p.Delete), res)
	}
	if n, _ := countObjects(t, objects, chunkstore.PackPrefix); n != packsXY {
		t.Fatalf("phase 1 deleted packs: %d left of %d", n, packsXY)
	}

	// b's lease predates the condemnation: phase 2 waits for it, and b,
	// which has not heard of the condemnation, deduplicates against x.
	if p, res := collect(t, a, noGrace); p.Waiting != 1 || res.Deleted != 0 {
		t.Fatalf("phase 2 with a lease alive: waiting %d, result %+v; want it to wait", p.Waiting, res)
	}
	finish(t, bh, map[string][]byte{"f": x})

	// Now phase 2 is due; the mark sees z and spares x's packs.
	p, res = collect(t, a, noGrace)
	if p.Waiting != 0 || p.Spared != len(p.Delete)+p.Spared || res.Deleted != 0 || p.Spared == 0 {
		t.Fatalf("phase 2: waiting %d, spared %d, result %+v; want every condemned pack spared", p.Waiting, p.Spared, res)
	}
	wantContent(t, a, "d", "z", x)

	// With z removed too and no backup running, one collection condemns
	// and deletes.
	if err := b.RemoveBackup(ctx, "d", "z"); err != nil {
		t.Fatal(err)
	}
	p, res = collect(t, b, noGrace)
	if !p.SweepNow || res.Deleted == 0 || p.Waiting != 0 {
		t.Fatalf("collection after removing z: sweep now %v, waiting %d, result %+v; want packs deleted", p.SweepNow, p.Waiting, res)
	}
	if n, _ := countObjects(t, objects, chunkstore.PackPrefix); n >= packsXY {
		t.Errorf("%d packs after the sweep, %d before x was removed", n, packsXY)
	}
	wantContent(t, a, "d", "y", y)
	wantContent(t, b, "d", "y", y)
	for _, s := range as {
		if r := runCheck(t, s, check.Options{ReadData: true}); !r.OK() {
			t.Fatalf("check: %+v", r.Problems)
		}
	}
}

// A writer that started after a condemnation stores the condemned chunks
// again instead of deduplicating against them.
func TestSharedCondemnedNotUsed(t *testing.T) {
	as, objects := agents(t, 2, smallPacks)
	a, b := as[0], as[1]
	x := dataset.Random(3, 4<<20)
	backup(t, a, "d", "x", map[string][]byte{"f": x})
	a.RemoveBackup(ctx, "d", "x")
	hold, err := a.StartBackup(ctx, "d", "hold") // a lease: the sweep waits
	if err != nil {
		t.Fatal(err)
	}
	if p, res := collect(t, a, gc.Options{GracePeriod: time.Nanosecond}); p.SweepNow || res.Condemned == 0 || res.Deleted != 0 {
		t.Fatalf("collection beside a lease: sweep now %v, result %+v; want packs condemned only", p.SweepNow, res)
	}
	_, before := countObjects(t, objects, chunkstore.PackPrefix)
	backup(t, b, "d", "again", map[string][]byte{"f": x})
	if _, after := countObjects(t, objects, chunkstore.PackPrefix); after-before < int64(len(x)) {
		t.Errorf("backup of condemned data stored %d bytes, want all %d again", after-before, len(x))
	}
	finish(t, hold, nil)
	p, res := collect(t, a, gc.Options{GracePeriod: time.Nanosecond})
	if res.Deleted == 0 || p.Spared != 0 {
		t.Errorf("sweep: spared %d, result %+v; want the condemned packs deleted", p.Spared, res)
	}
	wantContent(t, a, "d", "again", x)
	wantContent(t, b, "d", "again", x)
}

// An agent that dies holding a lease holds up phase 2 only until the lease
// expires; one collection at a time holds the lock.
func TestSharedLeaseExpiresAndLock(t *testing.T) {
	const ttl = time.Minute
	as, objects := agents(t, 2, dedup.Options{PackSize: 1 << 20, LeaseTTL: ttl})
	a, b := as[0], as[1]
	backup(t, a, "d", "x", map[string][]byte{"f": dataset.Random(4, 2<<20)})
	dead := filepath.Join(objects, "leases", "dead-agent")
	os.MkdirAll(filepath.Dir(dead), 0o755)
	os.WriteFile(dead, []byte("{}"), 0o644)
	a.RemoveBackup(ctx, "d", "x")
	noGrace := gc.Options{GracePeriod: time.Nanosecond}
	collect(t, a, noGrace)

	if p, res := collect(t, a, noGrace); p.Waiting != 1 || res.Deleted != 0 {
		t.Fatalf("with the dead agent's lease fresh: waiting %d, result %+v; want it to wait", p.Waiting, res)
	}
	old := time.Now().Add(-3 * ttl)
	os.Chtimes(dead, old, old)
	p, err := a.PlanGC(ctx, noGrace)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.PlanGC(ctx, noGrace); !errors.Is(err, storage.ErrInUse) {
		t.Errorf("a second collection while one holds the lock: %v, want ErrInUse", err)
	}
	if res, err := a.ExecuteGC(ctx, p); err != nil || res.Deleted == 0 {
		t.Fatalf("once the lease expired: %+v, %v; want packs deleted", res, err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the expired lease is still there: %v", err)
	}
	p, err = b.PlanGC(ctx, noGrace)
	if err != nil {
		t.Fatalf("collection after the lock was released: %v", err)
	}
	p.Close()
}

// Agents that store the same new data at once, before either sees the
// other's packs, leave two copies; stats count one as dead, and the two
// phases of a collection reclaim it without losing either backup.
func TestSharedConcurrentCopiesReclaimed(t *testing.T) {
	as, objects := agents(t, 2, smallPacks)
	data := dataset.Random(5, 4<<20)
	storeTwice(t, as, data)
	st := stats(t, as[0])
	if _, stored := countObjects(t, objects, chunkstore.PackPrefix); stored < 2*int64(len(data)) || st.DeadBytes < int64(len(data)) {
		t.Fatalf("stored %d bytes with %d dead, want two copies of %d, one dead", stored, st.DeadBytes, len(data))
	}
	noGrace := gc.Options{GracePeriod: time.Nanosecond}
	collect(t, as[0], noGrace)
	collect(t, as[1], noGrace)
	if _, stored := countObjects(t, objects, chunkstore.PackPrefix); stored > int64(len(data))*11/10 {
		t.Errorf("after both phases %d bytes stored, want one copy of %d", stored, len(data))
	}
	if st := stats(t, as[1]); st.DeadBytes != 0 {
		t.Errorf("dead bytes after collecting: %d", st.DeadBytes)
	}
	for _, s := range as {
		wantContent(t, s, "d", "agent0", data)
		wantContent(t, s, "d", "agent1", data)
	}
}

// storeTwice has two agents back up data as d/agent0 and d/agent1, both
// started while neither knew the other's chunks: the repository holds
// two copies of each.
func storeTwice(t *testing.T, as []*dedup.Storage, data []byte) {
	t.Helper()
	bhs := make([]storage.BackupHandle, 2)
	for i, s := range as[:2] {
		bh, err := s.StartBackup(ctx, "d", fmt.Sprint("agent", i))
		if err != nil {
			t.Fatal(err)
		}
		bhs[i] = bh
	}
	for _, bh := range bhs {
		finish(t, bh, map[string][]byte{"f": data})
	}
}

// A repository on a backend is created when the backend is empty, whatever
// the local cache root holds (such as caches of an earlier repository at
// the same location), and refused when the backend holds other objects.
func TestCreateChecksTheBackend(t *testing.T) {
	cache := t.TempDir()
	os.WriteFile(filepath.Join(cache, "left-over"), []byte("x"), 0o644)
	objects := t.TempDir()
	s := dedup.New(cache, dedup.Options{Backend: local.New(objects)})
	backup(t, s, "d", "a", map[string][]byte{"f": []byte("hello")})
	s.Close()

	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "photo.jpg"), []byte("x"), 0o644)
	s = dedup.New(t.TempDir(), dedup.Options{Backend: local.New(foreign)})
	defer s.Close()
	if _, err := s.ListBackups(ctx, "d"); err == nil || !strings.Contains(err.Error(), "not a dedupstore repository") {
		t.Errorf("opening a foreign bucket: %v", err)
	}
}

// A backup that runs beside another agent's deduplicates against what that
// agent stored after it started: the index is synced while a lease is held.
func TestSharedSyncWhileBackingUp(t *testing.T) {
	const ttl = 4 * time.Second // syncs every second; leaves room for a slow, loaded machine
	as, objects := agents(t, 2, dedup.Options{PackSize: 1 << 20, LeaseTTL: ttl})
	a, b := as[0], as[1]
	bh, err := a.StartBackup(ctx, "d", "long") // a synced now, before b stores x
	if err != nil {
		t.Fatal(err)
	}
	x := dataset.Random(6, 4<<20)
	backup(t, b, "d", "x", map[string][]byte{"f": x})
	_, before := countObjects(t, objects, chunkstore.PackPrefix)
	time.Sleep(ttl / 2)
	finish(t, bh, map[string][]byte{"f": x})
	if _, after := countObjects(t, objects, chunkstore.PackPrefix); after != before {
		t.Errorf("a backup running beside the one that stored its data stored %d bytes more", after-before)
	}
	wantContent(t, b, "d", "long", x)
}

// Two agents storing the same new data at the same moment store it twice;
// stats reports the second copy, and a collection reclaims it.
func TestSharedDuplicatesReported(t *testing.T) {
	as, _ := agents(t, 2, smallPacks)
	data := dataset.Random(77, 2<<20)
	var handles []storage.BackupHandle
	for i, s := range as { // both start, and sync, before either stores
		bh, err := s.StartBackup(ctx, "d", fmt.Sprint("b", i))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, bh)
	}
	for _, bh := range handles {
		finish(t, bh, map[string][]byte{"f": data})
	}
	st := stats(t, as[0])
	if st.DuplicateChunks == 0 || st.DuplicateBytes < int64(len(data)) || st.DeadBytes < st.DuplicateBytes {
		t.Errorf("stats after two agents stored the same data: %d duplicate chunks, %d bytes, %d dead", st.DuplicateChunks, st.DuplicateBytes, st.DeadBytes)
	}
}
