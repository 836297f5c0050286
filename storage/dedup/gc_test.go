package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

func collect(t *testing.T, s *dedup.Storage, opts gc.Options) (*gc.Plan, gc.Result) {
	t.Helper()
	p, err := s.PlanGC(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.ExecuteGC(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	return p, res
}

// everything collects all garbage: any dead byte repacks, no grace.
var everything = gc.Options{RepackThreshold: 1e-9, GracePeriod: time.Nanosecond}

// checkClean asserts that the index and the repository agree and that the
// repository holds nothing dead: its bytes are exactly its live chunks and
// the pack trailers.
func checkClean(t *testing.T, s *dedup.Storage, root string) {
	t.Helper()
	idx := dedup.IndexOf(s)
	packs, err := idx.Packs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	var total int64
	for _, p := range packs {
		want[chunkstore.PackName(p.ID)] = p.Size
		total += p.Size
	}
	onDisk := map[string]int64{}
	filepath.WalkDir(filepath.Join(root, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			info, _ := d.Info()
			onDisk[filepath.ToSlash(rel)] = info.Size()
		}
		return nil
	})
	if fmt.Sprint(onDisk) != fmt.Sprint(want) {
		t.Errorf("packs on disk %v, index says %v", onDisk, want)
	}
	var liveBytes int64
	live := map[chunkstore.ID]bool{}
	idx.ForEachListRef(func(r index.Ref) error { live[r.ID] = true; return nil })
	idx.ForEachDelta(func(id chunkstore.ID, bases []chunkstore.ID) error {
		if live[id] {
			for _, b := range bases {
				live[b] = true // a live delta's bases are live
			}
		}
		return nil
	})
	idx.ForEachChunk(func(id chunkstore.ID, loc chunkstore.Location) error {
		if !live[id] {
			t.Errorf("chunk %s is dead but still indexed", id)
		}
		delete(live, id)
		liveBytes += int64(loc.Length)
		return nil
	})
	for id := range live {
		t.Errorf("chunk %s is referenced but not indexed", id)
	}
	var trailers int64
	for _, p := range packs {
		trailers += chunkstore.PackOverhead(p.Chunks, nil)
	}
	if slack := total - liveBytes - trailers; slack != 0 {
		t.Errorf("packs hold %d bytes beyond their live chunks and trailers", slack)
	}
}

func TestGCReclaimsRemovedBackups(t *testing.T) {
	s, root := newStorage(t, dedup.Options{PackSize: 256 << 10})
	shared := dataset.Pages(1, 64)
	a := map[string][]byte{"shared": shared, "own": dataset.Random(2, 3<<20)}
	b := map[string][]byte{"shared": shared, "own": dataset.Random(3, 2<<20)}
	backup(t, s, "d", "a", a)
	backup(t, s, "d", "b", b)
	before := stats(t, s)

	if err := s.RemoveBackup(ctx, "d", "a"); err != nil {
		t.Fatal(err)
	}
	p, res := collect(t, s, gc.Options{})
	after := stats(t, s)
	t.Logf("plan: delete %d, repack %d packs, free %d bytes; result %+v", len(p.Delete), len(p.Repack), p.FreedBytes, res)
	if res.FreedBytes != before.StoredBytes-after.StoredBytes || res.FreedBytes < 3<<20 {
		t.Errorf("GC freed %d bytes, stored went from %d to %d; want at least a's 3 MiB", res.FreedBytes, before.StoredBytes, after.StoredBytes)
	}
	if p.FreedBytes != res.FreedBytes {
		t.Errorf("plan promised %d bytes, execution freed %d", p.FreedBytes, res.FreedBytes)
	}
	for name, want := range b {
		if got, err := readBack(t, s, "d", "b", name); err != nil || !bytes.Equal(got, want) {
			t.Errorf("b/%s after GC: %v", name, err)
		}
	}
	s.RemoveBackup(ctx, "d", "b")
	collect(t, s, gc.Options{})
	if st := stats(t, s); st.StoredBytes != 0 || st.Chunks != 0 || st.Packs != 0 {
		t.Errorf("with no backups left the repository still holds %+v", st)
	}
	checkClean(t, s, root)
}

func TestGCRepacksPartlyDeadPacks(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	keep, drop := dataset.Random(4, 2<<20), dataset.Random(5, 2<<20)
	backup(t, s, "d", "both", map[string][]byte{"f": append(append([]byte(nil), keep...), drop...)}) // one pack
	backup(t, s, "d", "keep", map[string][]byte{"f": keep})
	s.RemoveBackup(ctx, "d", "both")
	p, res := collect(t, s, gc.Options{})
	if len(p.Repack) == 0 || res.Repacked == 0 {
		t.Fatalf("a pack about half dead was not repacked: plan %+v, result %+v", p.Repack, res)
	}
	if got, err := readBack(t, s, "d", "keep", "f"); err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("after repack: %v", err)
	}
	checkClean(t, s, root)
}

func TestGCDryRunChangesNothing(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "a", map[string][]byte{"f": dataset.Random(6, 1<<20)})
	s.RemoveBackup(ctx, "d", "a")
	before := listFiles(root)
	p, err := s.PlanGC(ctx, gc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Delete) != 1 || p.FreedBytes == 0 {
		t.Errorf("plan = delete %d packs, free %d bytes; want the one pack", len(p.Delete), p.FreedBytes)
	}
	p.Close()
	if after := listFiles(root); after != before {
		t.Errorf("a plan that was closed changed the repository:\n%s\n%s", before, after)
	}
	if _, err := s.ExecuteGC(ctx, p); err != gc.ErrClosed {
		t.Errorf("executing a closed plan: %v, want gc.ErrClosed", err)
	}
}

func listFiles(root string) string {
	var b bytes.Buffer
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if p == filepath.Join(root, "index") {
			return filepath.SkipDir // the index caches
		}
		if err == nil && !d.IsDir() {
			info, _ := d.Info()
			fmt.Fprintf(&b, "%s %d\n", p, info.Size())
		}
		return nil
	})
	return b.String()
}

// Packs a crash left unindexed: a collection's sync indexes them, and
// their dead chunks go. While a backup runs (its lease is alive), a young
// one may be that backup's: it is kept, and what is condemned waits.
func TestGCUnindexedPacks(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "a", map[string][]byte{"f": dataset.Random(7, 1<<20)})
	var oldID, youngID chunkstore.ID
	oldID[0], youngID[0] = 1, 2
	var orphan chunkstore.PackBuilder // a whole pack, as a crash before indexing leaves
	orphan.Add(chunkstore.EncodedChunk{ID: chunkstore.ID{9}, Data: []byte("left by a crash"), PlainLength: 15})
	data, _ := orphan.Finish(nil)
	path := func(id chunkstore.ID) string { return filepath.Join(root, filepath.FromSlash(chunkstore.PackName(id))) }
	for _, id := range []chunkstore.ID{oldID, youngID} {
		os.MkdirAll(filepath.Dir(path(id)), 0o755)
		os.WriteFile(path(id), data, 0o644)
	}
	pastGrace := time.Now().Add(-25 * time.Hour) // the default grace period is 24 h
	os.Chtimes(path(oldID), pastGrace, pastGrace)

	running, err := s.StartBackup(ctx, "d", "running")
	if err != nil {
		t.Fatal(err)
	}
	p, res := collect(t, s, gc.Options{})
	if p.SweepNow || len(p.Delete) != 1 || p.Delete[0].Pack != oldID || res.Condemned != 1 || res.Deleted != 0 {
		t.Fatalf("beside a running backup: plan deletes %+v (sweep now %v), result %+v; want only the old pack condemned", p.Delete, p.SweepNow, res)
	}
	finish(t, running, map[string][]byte{"f": []byte("x")})

	// No backup runs: the young pack goes at once; the old one's
	// condemnation recorded the lease and waits out the grace period.
	p, res = collect(t, s, gc.Options{})
	if !p.SweepNow || p.Waiting != 1 || res.Deleted == 0 {
		t.Fatalf("after the backup: sweep now %v, waiting %d, result %+v; want the young pack deleted, the old one waiting", p.SweepNow, p.Waiting, res)
	}
	if _, err := os.Stat(path(youngID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the young pack: %v, want it deleted", err)
	}
	if _, err := os.Stat(path(oldID)); err != nil {
		t.Errorf("the old pack, condemned beside a lease, is gone before the grace period: %v", err)
	}
	if got, err := readBack(t, s, "d", "a", "f"); err != nil || !bytes.Equal(got, dataset.Random(7, 1<<20)) {
		t.Errorf("backup after the collections: %v", err)
	}
}

// TestGCBesideLiveBackups runs collections in a loop while goroutines start,
// write (shared and unique content), end, abort and remove backups. Every
// backup that remains must read back exactly, and a final collection must
// leave nothing dead.
func TestGCBesideLiveBackups(t *testing.T) {
	gcBesideLiveBackups(t, false, gc.Options{RepackThreshold: 0.1})
}

// With no grace period, a collection used to delete packs between their
// write and their indexing as orphans (a backend that is slow to return
// from a Put widens that window): ended backups were lost. The claims on
// their chunks protect them now.
func TestGCBesideLiveBackupsNoGrace(t *testing.T) {
	gcBesideLiveBackups(t, true, gc.Options{RepackThreshold: 0.1, GracePeriod: time.Nanosecond})
}

// slowReturn returns from a Put a little after storing the object.
type slowReturn struct{ chunkstore.Backend }

func (b slowReturn) Put(ctx context.Context, name string, r io.Reader) error {
	err := b.Backend.Put(ctx, name, r)
	time.Sleep(2 * time.Millisecond)
	return err
}

func gcBesideLiveBackups(t *testing.T, slow bool, gcOpts gc.Options) {
	root := filepath.Join(t.TempDir(), "repo")
	opts := dedup.Options{PackSize: 256 << 10}
	if slow {
		opts.Backend = slowReturn{local.New(root)}
	}
	s := dedup.New(root, opts)
	t.Cleanup(func() { s.Close() })
	blocks := make([][]byte, 6)
	for i := range blocks {
		blocks[i] = dataset.Random(uint64(100+i), 96<<10)
	}
	var (
		mu   sync.Mutex
		kept = map[string]map[string][]byte{} // backup name → files
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	var gcRuns, gcFreed int64
	wg.Add(1)
	go func() { // the collector
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			p, err := s.PlanGC(ctx, gcOpts)
			if err != nil {
				t.Error(err)
				return
			}
			res, err := s.ExecuteGC(ctx, p)
			if err != nil {
				t.Error(err)
				return
			}
			gcRuns++
			gcFreed += res.FreedBytes
		}
	}()
	var writers sync.WaitGroup
	for g := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for op := range 15 {
				name := fmt.Sprintf("g%d-%d", g, op)
				files := map[string][]byte{}
				for f := range 1 + rng.IntN(3) {
					var data []byte
					for range 1 + rng.IntN(4) {
						data = append(data, blocks[rng.IntN(len(blocks))]...)
					}
					data = append(data, dataset.Random(rng.Uint64(), rng.IntN(200<<10))...)
					files[fmt.Sprintf("f%d", f)] = data
				}
				bh, err := s.StartBackup(ctx, "ks/0", name)
				if err != nil {
					t.Error(err)
					return
				}
				for file, data := range files {
					w, err := bh.AddFile(ctx, file)
					if err == nil {
						_, err = w.Write(data)
					}
					if err == nil {
						err = w.Close()
					}
					if err != nil {
						t.Errorf("%s/%s: %v", name, file, err)
						return
					}
				}
				switch r := rng.IntN(10); {
				case r < 2:
					if err := bh.AbortBackup(ctx); err != nil {
						t.Error(err)
					}
				default:
					if err := bh.EndBackup(ctx); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					kept[name] = files
					if r < 5 { // remove some earlier backup
						for victim := range kept {
							if err := s.RemoveBackup(ctx, "ks/0", victim); err != nil {
								t.Error(err)
							}
							delete(kept, victim)
							break
						}
					}
					mu.Unlock()
				}
			}
		}()
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	deltas := 0
	dedup.IndexOf(s).ForEachDelta(func(chunkstore.ID, []chunkstore.ID) error { deltas++; return nil })
	t.Logf("%d collections ran beside the writers, freeing %d bytes; %d backups remain, %d deltas indexed", gcRuns, gcFreed, len(kept), deltas)
	if deltas == 0 {
		t.Error("the writers made no deltas: the collections never met one")
	}
	if gcRuns < 2 {
		t.Errorf("only %d collections overlapped the writers", gcRuns)
	}
	for name, files := range kept {
		for file, want := range files {
			got, err := readBack(t, s, "ks/0", name, file)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s/%s after concurrent GC: %d bytes, %v", name, file, len(got), err)
			}
		}
	}
	// A base stays while any copy of a live delta names it, also a second
	// copy the same collection deletes: a second collection frees it.
	var p *gc.Plan
	for range 2 {
		collect(t, s, everything)
		var err error
		if p, err = s.PlanGC(ctx, everything); err != nil {
			t.Fatal(err)
		}
		p.Close()
		if p.Dead == 0 && len(p.Delete)+len(p.Repack)+len(p.Orphans) == 0 {
			break
		}
	}
	if p.Dead != 0 || len(p.Delete)+len(p.Repack)+len(p.Orphans) != 0 {
		t.Errorf("after two final collections: %d dead chunks, plan %d/%d/%d", p.Dead, len(p.Delete), len(p.Repack), len(p.Orphans))
	}
	checkClean(t, s, root)
}

func TestStats(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	shared := dataset.Random(30, 2<<20)
	own := map[string][]byte{"a": dataset.Random(31, 1<<20), "b": dataset.Random(32, 1<<20)}
	for _, name := range []string{"a", "b"} {
		backup(t, s, "d", name, map[string][]byte{"shared": shared, "own": own[name]})
	}
	st := stats(t, s)
	// Random data is stored raw, so stored chunk bytes equal plain bytes.
	if st.Backups != 2 || st.LogicalBytes != 6<<20 || st.UniqueBytes != 4<<20 || st.DeadBytes != 0 {
		t.Errorf("stats = %+v", st)
	}
	if st.DedupRatio != 1.5 || st.CompressionRatio != 1 {
		t.Errorf("dedup ratio %v, compression ratio %v; want 1.5 and 1", st.DedupRatio, st.CompressionRatio)
	}
	for _, b := range st.PerBackup {
		if b.ExclusiveBytes != 1<<20 || b.LogicalBytes != 3<<20 || b.Files != 2 || b.State != index.Ended {
			t.Errorf("backup %s: %+v; want 1 MiB exclusive of 3 MiB in 2 files", b.Name, b)
		}
	}
	s.RemoveBackup(ctx, "d", "a")
	if st := stats(t, s); st.DeadBytes != 1<<20 || st.PerBackup[0].ExclusiveBytes != 3<<20 {
		t.Errorf("after removing a: dead %d, b exclusive %d; want 1 MiB and 3 MiB", st.DeadBytes, st.PerBackup[0].ExclusiveBytes)
	}
	collect(t, s, gc.Options{})
	if st := stats(t, s); st.DeadBytes != 0 || st.UniqueBytes != 3<<20 {
		t.Errorf("after GC: %+v", st)
	}
}

func TestFiles(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	shared := dataset.Random(40, 1<<20)
	backup(t, s, "d", "a", map[string][]byte{"shared": shared})
	backup(t, s, "d", "b", map[string][]byte{"shared": shared, "own": dataset.Random(41, 1<<20), "twice": append(dataset.Random(42, 2<<20), dataset.Random(42, 2<<20)...)})
	files, err := s.Files(ctx, "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]gc.FileStats{}
	for _, f := range files {
		got[f.Name] = f
	}
	if f := got["shared"]; f.Size != 1<<20 || f.StoredBytes != 1<<20 || f.ExclusiveBytes != 0 {
		t.Errorf("shared: %+v; want 1 MiB stored, none exclusive", f)
	}
	if f := got["own"]; f.StoredBytes != 1<<20 || f.ExclusiveBytes != 1<<20 {
		t.Errorf("own: %+v; want 1 MiB stored and exclusive", f)
	}
	if f := got["twice"]; f.Size != 4<<20 || f.StoredBytes >= f.Size*3/4 {
		t.Errorf("twice: %+v; want its repeated half stored once", f)
	}
	if _, err := s.Files(ctx, "d", "nope"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Files of a missing backup: %v", err)
	}
}

// TestGCMergesSmallPacks: small backups seal a pack each; a collection
// copies their chunks into one pack, and the plan says exactly what it frees.
func TestGCMergesSmallPacks(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	all := backups{}
	for i := range 30 {
		name := fmt.Sprintf("small%d", i)
		all[name] = map[string][]byte{"f": dataset.Random(uint64(200+i), 10<<10)}
		backup(t, s, "d", name, all[name])
	}
	before := stats(t, s)
	if before.Packs != 30 {
		t.Fatalf("30 small backups made %d packs; the test needs one each", before.Packs)
	}
	p, res := collect(t, s, gc.Options{})
	after := stats(t, s)
	if after.Packs != 1 || res.Repacked != before.Packs || p.FreedBytes != res.FreedBytes || res.FreedBytes != before.StoredBytes-after.StoredBytes {
		t.Errorf("%d packs became %d; plan frees %d, result %+v, stored %d -> %d", before.Packs, after.Packs, p.FreedBytes, res, before.StoredBytes, after.StoredBytes)
	}
	all.verify(t, s, "after merging")
	checkClean(t, s, root)
}

// A lone small pack and a repack whose new pack is small: one collection
// used to leave both, and the next merged them. One collection converges.
func TestGCConvergesInOnePass(t *testing.T) {
	s, root := newStorage(t, dedup.Options{PackSize: 1 << 20})
	big := dataset.Random(210, 2<<20)
	backup(t, s, "d", "x", map[string][]byte{"f": big})
	files, _, err := dedup.IndexOf(s).Files("d", "x")
	if err != nil {
		t.Fatal(err)
	}
	var prefix int
	dedup.IndexOf(s).ListRefs(files[0].List, func(refs []index.Ref) error {
		prefix = int(refs[0].Length + refs[1].Length) // y's chunks are x's first two
		return nil
	})
	backup(t, s, "d", "y", map[string][]byte{"f": big[:prefix]})
	backup(t, s, "d", "t", map[string][]byte{"f": dataset.Random(211, 10<<10)}) // a lone small pack
	if err := s.RemoveBackup(ctx, "d", "x"); err != nil {
		t.Fatal(err)
	}
	collect(t, s, gc.Options{GracePeriod: time.Nanosecond})
	p, err := s.PlanGC(ctx, gc.Options{GracePeriod: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if len(p.Delete)+len(p.Repack)+len(p.Orphans) != 0 {
		t.Errorf("a second collection plans %d deletes and %d repacks", len(p.Delete), len(p.Repack))
	}
	backups{"y": {"f": big[:prefix]}}.verify(t, s, "after collecting")
	checkClean(t, s, root)
}
