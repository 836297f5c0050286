package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/internal/faulty"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// Regression tests of issue 11: what reported success stays restorable,
// and damage is contained, never spread.

// Two agents using a new repository for the first time at once: one
// creates it, the other uses its config, and both backups read back (the
// loser once replaced the config, and its chunks no longer matched their
// IDs under the winner's key).
func TestConcurrentCreation(t *testing.T) {
	for _, dir := range []bool{true, false} {
		t.Run(fmt.Sprint("local-directory=", dir), func(t *testing.T) { concurrentCreation(t, dir) })
	}
}

// concurrentCreation: both agents end their backups, whether their index
// caches are in the repository's directory or each in one of its own
// beside a Backend.
func concurrentCreation(t *testing.T, dir bool) {
	for trial := range 20 {
		objects := filepath.Join(t.TempDir(), "objects")
		opts := smallPacks
		opts.Backend = local.New(objects)
		root := func() string { return t.TempDir() }
		if dir {
			opts.Backend = nil
			root = func() string { return objects }
		}
		data := [][]byte{dataset.Random(uint64(2*trial), 300<<10), dataset.Random(uint64(2*trial+1), 300<<10)}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := dedup.New(root(), opts)
				defer s.Close()
				bh, err := s.StartBackup(ctx, "d", fmt.Sprint(i))
				if err == nil {
					err = writeParallel(s, bh, map[string][]byte{"f": data[i]})
				}
				if err == nil {
					err = bh.EndBackup(ctx)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		s := dedup.New(root(), opts)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("trial %d: agent %d: %v", trial, i, err)
			}
			wantContent(t, s, "d", fmt.Sprint(i), data[i])
		}
		if r := runCheck(t, s, check.Options{ReadData: true}); !r.OK() {
			t.Fatalf("trial %d: check: %+v", trial, r.Problems)
		}
		s.Close()
	}
}

// Of two Inits at once, one creates the repository and the other is told
// it exists.
func TestConcurrentInit(t *testing.T) {
	for trial := range 20 {
		root := filepath.Join(t.TempDir(), "repo")
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = dedup.Init(ctx, root, dedup.Options{}) }()
		}
		wg.Wait()
		created := 0
		for _, err := range errs {
			switch {
			case err == nil:
				created++
			case !errors.Is(err, chunkstore.ErrExist):
				t.Fatalf("trial %d: Init: %v, want nil or ErrExist", trial, err)
			}
		}
		if created != 1 {
			t.Fatalf("trial %d: %d Inits reported creating the repository, want 1", trial, created)
		}
		s := dedup.New(root, dedup.Options{})
		backup(t, s, "d", "n", map[string][]byte{"f": []byte("x")})
		if _, err := readBack(t, s, "d", "n", "f"); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// packFiles returns the paths of a local repository's packs, sorted.
func packFiles(t *testing.T, root string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "data", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range paths {
		if !strings.HasPrefix(filepath.Base(p), local.TempPrefix) {
			out = append(out, p)
		}
	}
	return out
}

// damageFile rewrites the file at path as damage makes it.
func damageFile(t *testing.T, path string, damage func([]byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, damage(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantGCRefused asserts that a collection refuses to run, naming damage,
// and deletes nothing.
func wantGCRefused(t *testing.T, s *dedup.Storage, root string) {
	t.Helper()
	before := listFiles(root)
	p, err := s.PlanGC(ctx, gc.Options{GracePeriod: time.Nanosecond})
	if err == nil {
		res, eerr := s.ExecuteGC(ctx, p)
		t.Fatalf("gc ran on a damaged repository: %+v, %v", res, eerr)
	}
	if !errors.Is(err, gc.ErrDamaged) || !errors.Is(err, storage.ErrCorrupt) {
		t.Errorf("gc on a damaged repository: %v, want gc.ErrDamaged and storage.ErrCorrupt", err)
	}
	if after := listFiles(root); after != before {
		t.Errorf("a refused gc changed the repository:\nbefore %s\nafter %s", before, after)
	}
}

// A pack whose trailer or tail is damaged reads back through the index;
// an index rebuild used to drop it, and the next gc deleted it as an
// orphan. Now the rebuild salvages every intact chunk, and gc deletes
// nothing while the damage stands.
func TestRebuildSalvagesDamagedPacks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"trailer flip", func(d []byte) []byte { d[len(d)-100] ^= 1; return d }},
		{"truncated", func(d []byte) []byte { return d[:len(d)-1] }},
		{"garbage appended", func(d []byte) []byte { return append(d, make([]byte, 1000)...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, root := newStorage(t, dedup.Options{})
			data := dataset.Pages(80, 300)
			backup(t, s, "d", "a", map[string][]byte{"f": data})
			s.Close()
			packs := packFiles(t, root)
			if len(packs) != 1 {
				t.Fatalf("%d packs, want 1", len(packs))
			}
			damageFile(t, packs[0], tc.damage)
			if err := os.Remove(filepath.Join(dedup.LocalCacheDir(root), "index.db")); err != nil {
				t.Fatal(err)
			}
			s = dedup.New(root, dedup.Options{})
			defer s.Close()
			wantContent(t, s, "d", "a", data)
			res, err := s.RebuildIndex(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.DamagedPacks) != 1 || res.DamagedPacks[0].Salvaged == 0 || res.DamagedPacks[0].Lost != 0 {
				t.Errorf("rebuild reported %+v, want one damaged pack, salvaged whole", res.DamagedPacks)
			}
			wantContent(t, s, "d", "a", data)
			wantGCRefused(t, s, root)
			wantContent(t, s, "d", "a", data)
		})
	}
}

// A manifest with one flipped byte: the rebuild cannot import its backup,
// and the next gc used to delete all its chunks. Now gc deletes nothing
// while the manifest is damaged.
func TestDamagedManifestStopsGC(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	a, b := dataset.Random(81, 200<<10), dataset.Random(82, 200<<10)
	backup(t, s, "d", "a", map[string][]byte{"f": a})
	backup(t, s, "d", "b", map[string][]byte{"f": b})
	damageFile(t, filepath.Join(root, "manifests", "d", "a"), func(d []byte) []byte { d[len(d)/2] ^= 1; return d })
	res, err := s.RebuildIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.DamagedManifests) != 1 {
		t.Fatalf("rebuild reported damaged manifests %+v, want manifests/d/a", res.DamagedManifests)
	}
	wantGCRefused(t, s, root)
	wantContent(t, s, "d", "b", b)
}

// A pack gc wants to delete or repack turns out to be damaged: gc used to
// fail on it every time. Now it skips and records it, reports the damage,
// and collects the rest.
func TestGCSkipsDamagedPack(t *testing.T) {
	s, root := newStorage(t, dedup.Options{PackSize: 64 << 10})
	keep := dataset.Random(83, 300<<10)
	backup(t, s, "d", "gone1", map[string][]byte{"f": dataset.Random(84, 300<<10)})
	backup(t, s, "d", "keep", map[string][]byte{"f": keep})
	backup(t, s, "d", "gone2", map[string][]byte{"f": dataset.Random(85, 300<<10)})
	idx := dedup.IndexOf(s)
	for _, name := range []string{"gone1", "gone2"} {
		if err := s.RemoveBackup(ctx, "d", name); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.PlanGC(ctx, everything)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Delete) < 2 {
		t.Fatalf("plan deletes %d packs, want several", len(p.Delete))
	}
	victim := filepath.Join(root, filepath.FromSlash(chunkstore.PackName(p.Delete[0].Pack)))
	damageFile(t, victim, func(d []byte) []byte { d[len(d)-3] ^= 1; return d })
	res, err := s.ExecuteGC(ctx, p)
	if !errors.Is(err, gc.ErrDamaged) || !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("gc over a damaged pack: %v, want gc.ErrDamaged and storage.ErrCorrupt", err)
	}
	// The others are condemned, and deleted by no sweep while damage is
	// recorded: nothing is provably unreferenced then.
	if len(res.Damaged) != 1 || res.Condemned != len(p.Delete)-1 || res.Deleted != 0 {
		t.Errorf("gc result %+v: want the damaged pack skipped, the other %d condemned, none deleted", res, len(p.Delete)-1)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("the damaged pack is gone: %v", err)
	}
	if damaged, err := idx.Damaged(); err != nil || len(damaged) != 1 {
		t.Errorf("index records damaged %v, %v; want the skipped pack", damaged, err)
	}
	wantContent(t, s, "d", "keep", keep)
}

// A damaged index.db is derived data: truncated (a SIGBUS on every command
// before), overwritten with garbage ("invalid database") or with bytes
// flipped past its meta pages (panics before), it never crashes the
// process; the storage moves it aside or rebuilds it, says so, and reads
// every backup back exactly. A flip it cannot see at open gives an error
// wrapping storage.ErrCorrupt (or ErrNotFound) at worst, never wrong
// bytes, and a rebuild repairs it.
func TestDamagedIndexIsRebuilt(t *testing.T) {
	type damage struct {
		name string
		fn   func([]byte) []byte
	}
	damages := []damage{
		{"truncated", func(d []byte) []byte { return d[:8192] }},
		{"garbage", func(d []byte) []byte { return bytes.Repeat([]byte("garbage!"), len(d)/8) }},
		{"empty", func(d []byte) []byte { return nil }},
	}
	for seed := range 40 {
		damages = append(damages, damage{fmt.Sprintf("flips-%d", seed), func(d []byte) []byte {
			rnd := rand.New(rand.NewPCG(uint64(seed), 1))
			for range 1 + seed%8 {
				d[8192+rnd.IntN(len(d)-8192)] ^= byte(1 + rnd.IntN(255))
			}
			return d
		}})
	}
	root := filepath.Join(t.TempDir(), "repo")
	s := dedup.New(root, smallPacks)
	kept := backups{}
	for i := range 6 {
		files := map[string][]byte{"f": dataset.Pages(uint64(90+i), 40), "g": dataset.Random(uint64(100+i), 50<<10)}
		backup(t, s, "d", fmt.Sprint(i), files)
		kept[fmt.Sprint(i)] = files
	}
	s.Close()
	healthy, err := os.ReadFile(filepath.Join(dedup.LocalCacheDir(root), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, dmg := range damages {
		t.Run(dmg.name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dedup.LocalCacheDir(root), "index.db"), dmg.fn(bytes.Clone(healthy)), 0o600); err != nil {
				t.Fatal(err)
			}
			var logged []string
			opts := smallPacks
			opts.Logf = func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
			s := dedup.New(root, opts)
			defer s.Close()
			err := tryAll(s, kept)
			if err != nil && strings.HasPrefix(dmg.name, "flips") && (errors.Is(err, storage.ErrCorrupt) || errors.Is(err, storage.ErrNotFound)) {
				// Records that still decode, with wrong values: reads
				// fail verification, and a rebuild replaces them.
				if _, err := s.RebuildIndex(ctx); err != nil {
					t.Fatal(err)
				}
				err = tryAll(s, kept)
			}
			if err != nil {
				t.Fatal(err)
			}
			if dmg.name == "truncated" || dmg.name == "garbage" {
				if len(logged) != 1 || !strings.Contains(logged[0], "damaged") {
					t.Errorf("logged %q, want one line saying the index was damaged", logged)
				}
			}
		})
	}
}

// tryAll lists, reads back, counts and plans a collection, returning the
// first error; content that reads back wrong fails the test.
func tryAll(s *dedup.Storage, kept backups) error {
	bhs, err := s.ListBackups(ctx, "d")
	if err != nil {
		return err
	}
	if len(bhs) != len(kept) {
		return fmt.Errorf("listed %d backups, want %d: %w", len(bhs), len(kept), storage.ErrCorrupt)
	}
	for _, bh := range bhs {
		for file, want := range kept[bh.Name()] {
			rc, err := bh.ReadFile(ctx, file)
			if err != nil {
				return err
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return err
			}
			if !bytes.Equal(got, want) {
				panic(fmt.Sprintf("%s/%s read back wrong bytes", bh.Name(), file))
			}
		}
	}
	if _, err := s.Stats(ctx); err != nil {
		return err
	}
	p, err := s.PlanGC(ctx, gc.Options{})
	if err != nil {
		return err
	}
	return p.Close()
}

// A read that finds the copy the index points at damaged loads another
// copy of the chunk (it failed before, although the index kept both).
func TestReadFallsBackToCopies(t *testing.T) {
	as, objects := agents(t, 2, smallPacks)
	data := dataset.Random(86, 1<<20)
	storeTwice(t, as, data)
	wantContent(t, as[0], "d", "agent1", data) // syncs agent 0's index
	idx := dedup.IndexOf(as[0])
	files, _, err := idx.Files("d", "agent0")
	if err != nil || len(files) != 1 {
		t.Fatal(files, err)
	}
	var first chunkstore.ID
	idx.ListRefs(files[0].List, func(refs []index.Ref) error { first = refs[0].ID; return errors.New("stop") })
	locs, err := idx.Locations(first)
	if err != nil || len(locs) != 2 {
		t.Fatalf("chunk %s has locations %v, %v; want two copies", first, locs, err)
	}
	// Damage every chunk of the pack the index reads first.
	name := chunkstore.PackName(locs[0].Pack)
	damageFile(t, filepath.Join(objects, filepath.FromSlash(name)), func(d []byte) []byte {
		entries := chunkstore.ScanPack(d)
		for _, e := range entries {
			d[e.Offset+e.Length/2] ^= 0xff
		}
		return d
	})
	for _, backup := range []string{"agent0", "agent1"} {
		got, err := readBack(t, as[0], "d", backup, "f")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s read back %d bytes, %v; want the other copy", backup, len(got), err)
		}
	}
}

// A directory whose manifest name no file system could hold passed the
// name rules, failed at EndBackup, and then every open failed with "file
// name too long". It is refused at StartBackup now.
func TestNameTooLongForTheBackend(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	dir := strings.Repeat("a", 130) + "/" + strings.Repeat("b", 130)
	if _, err := s.StartBackup(ctx, dir, "n"); !errors.Is(err, storage.ErrInvalidName) {
		t.Fatalf("StartBackup(%d-byte directory): %v, want ErrInvalidName", len(dir), err)
	}
	long := strings.Repeat("c", 120) + "/" + strings.Repeat("d", 120)
	backup(t, s, long, strings.Repeat("n", 255), map[string][]byte{"f": []byte("x")})
	if got, err := readBack(t, s, long, strings.Repeat("n", 255), "f"); err != nil || string(got) != "x" {
		t.Fatalf("longest directory and name: %q, %v", got, err)
	}
}

// Cleanup at open that cannot run (here a read the backend refuses, as a
// flaky network or a full disk would) is logged and left for the next
// open; it used to fail every open, and so every read.
func TestRecoveryDeferredWhenItCannotRun(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	fb := faulty.New(local.New(root))
	var logged []string
	opts := dedup.Options{Backend: fb, Logf: func(f string, args ...any) { logged = append(logged, fmt.Sprintf(f, args...)) }}
	s := dedup.New(root, opts)
	backup(t, s, "d", "ok", map[string][]byte{"f": []byte("healthy")})
	if len(logged) != 1 || !strings.Contains(logged[0], "unencrypted") { // created without a secret
		t.Errorf("logged %q at creation, want one line saying it is unencrypted", logged)
	}
	logged = nil
	if _, err := s.StartBackup(ctx, "d", "crashed"); err != nil {
		t.Fatal(err)
	}
	s.Close()                            // as a crash leaves it: in progress
	fb.Arm(2, faulty.Refuse, faulty.Get) // the config, then the crashed backup's manifest
	s = dedup.New(root, opts)
	if got, err := readBack(t, s, "d", "ok", "f"); err != nil || string(got) != "healthy" {
		t.Fatalf("read with recovery failing: %q, %v", got, err)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "d/crashed") {
		t.Errorf("logged %q, want one line naming the backup left for later", logged)
	}
	s.Close()
	fb.Disarm()
	s = dedup.New(root, opts)
	defer s.Close()
	if bhs, err := s.ListBackups(ctx, "d"); err != nil || len(bhs) != 1 || bhs[0].Name() != "ok" {
		t.Errorf("after a recovery that could run: %v, %v; want only d/ok", bhs, err)
	}
}

// Temporary files of killed writers (kill -9 left 4.9 MB in 40 kills) were
// invisible to everything. stats counts them, and gc removes those older
// than the grace period and an hour, never a younger one, which may be a
// write in progress.
func TestGCRemovesPartialWrites(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "a", map[string][]byte{"f": dataset.Random(140, 100<<10)})
	old := []string{filepath.Join(root, "data", "ab", local.TempPrefix+"1"), filepath.Join(root, "manifests", "d", local.TempPrefix+"2")}
	young := filepath.Join(root, "data", "cd", local.TempPrefix+"3")
	for _, p := range append(old, young) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, make([]byte, 1000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range old {
		then := time.Now().Add(-gc.PartialMinAge - time.Minute)
		if err := os.Chtimes(p, then, then); err != nil {
			t.Fatal(err)
		}
	}
	if st := stats(t, s); st.Partials != 3 || st.PartialBytes != 3000 {
		t.Errorf("stats count %d partial writes of %d bytes, want 3 of 3000", st.Partials, st.PartialBytes)
	}
	p, res := collect(t, s, everything)
	if len(p.Partials) != 2 || res.Partials != 2 {
		t.Errorf("gc planned %d and deleted %d partial writes, want the 2 old ones", len(p.Partials), res.Partials)
	}
	for _, p := range old {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there: %v", p, err)
		}
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("gc removed a partial write younger than an hour: %v", err)
	}
}

// A read-only mount or snapshot of a repository could not be listed,
// restored or checked: index.db was opened for writing. Reads go through
// an index cache now; writes fail with ErrReadOnly.
func TestReadOnlyRepository(t *testing.T) {
	src := filepath.Join(t.TempDir(), "repo")
	s := dedup.New(src, dedup.Options{})
	files := map[string][]byte{"f": dataset.Pages(141, 30)}
	backup(t, s, "d", "a", files)
	s.Close()
	ro := t.TempDir()
	if out, err := exec.Command("mount", "--bind", src, ro).CombinedOutput(); err != nil {
		t.Skipf("no bind mount here (the test needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", ro).Run() })
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", ro).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v: %s", err, out)
	}
	var logged []string
	s = dedup.New(ro, dedup.Options{Logf: func(f string, args ...any) { logged = append(logged, fmt.Sprintf(f, args...)) }})
	defer s.Close()
	wantContent(t, s, "d", "a", files["f"])
	if r := runCheck(t, s, check.Options{ReadData: true}); !r.OK() || r.Backups != 1 {
		t.Errorf("check of a read-only repository: %+v", r)
	}
	if len(logged) == 0 || !strings.Contains(logged[0], "cannot be written") {
		t.Errorf("logged %q, want a line saying the index is a cache", logged)
	}
	if _, err := s.StartBackup(ctx, "d", "b"); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("StartBackup in a read-only repository: %v, want ErrReadOnly", err)
	}
}

// A pack that cannot be read (a refused permission, an I/O error) is not
// damage: the error says what failed and does not wrap ErrCorrupt, which
// every backend error used to.
func TestReadErrorIsNotCorruption(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	b := &refusePacks{Backend: local.New(root)}
	s := dedup.New(root, dedup.Options{Backend: b})
	defer s.Close()
	data := dataset.Random(142, 100<<10)
	backup(t, s, "d", "a", map[string][]byte{"f": data})
	b.refuse.Store(true)
	_, err := readBack(t, s, "d", "a", "f")
	if err == nil || errors.Is(err, storage.ErrCorrupt) || !errors.Is(err, syscall.EACCES) {
		t.Errorf("read with the pack unreadable: %v; want EACCES, not ErrCorrupt", err)
	}
	b.refuse.Store(false)
	wantContent(t, s, "d", "a", data)
}

// refusePacks refuses to read packs while refuse is set, as a pack whose
// permissions were changed.
type refusePacks struct {
	chunkstore.Backend
	refuse atomic.Bool
}

func (b *refusePacks) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	if b.refuse.Load() && strings.HasPrefix(name, chunkstore.PackPrefix) {
		return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EACCES}
	}
	return b.Backend.Get(ctx, name, off, n)
}
