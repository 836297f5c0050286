package dedup_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/internal/faulty"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

var gcKills = flag.Int("gc-kills", 20, "how many times TestGCKilled kills a collecting process")

func TestMain(m *testing.M) {
	if root := os.Getenv("DEDUP_GC_HELPER_ROOT"); root != "" {
		gcHelper(root)
		return
	}
	if root := os.Getenv("DEDUP_SYNC_HELPER_ROOT"); root != "" {
		syncHelper(root)
		return
	}
	if root := os.Getenv("DEDUP_WRITE_HELPER_ROOT"); root != "" {
		start, _ := strconv.Atoi(os.Getenv("DEDUP_WRITE_HELPER_START"))
		writeHelper(root, os.Getenv("DEDUP_WRITE_HELPER_SHARED") == "true", start)
		return
	}
	os.Exit(m.Run())
}

// startHelper starts this test binary as a helper process with the given
// environment, and returns its output lines and its standard error.
func startHelper(t *testing.T, env ...string) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewScanner(stdout), stderr
}

// slowBackend makes every call take a few milliseconds, as a busy disk
// would, so that kills land inside collections.
type slowBackend struct{ chunkstore.Backend }

func (b slowBackend) Put(ctx context.Context, name string, r io.Reader) error {
	time.Sleep(3 * time.Millisecond)
	return b.Backend.Put(ctx, name, r)
}

func (b slowBackend) Delete(ctx context.Context, name string) error {
	time.Sleep(3 * time.Millisecond)
	return b.Backend.Delete(ctx, name)
}

func (b slowBackend) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	time.Sleep(time.Millisecond)
	return b.Backend.Get(ctx, name, off, n)
}

// killedLeaseTTL is the lease TTL of TestGCKilled: a killed collection's
// lock stops the next one for that long.
const killedLeaseTTL = 2 * time.Second

// planWhenFree plans a collection, waiting while another holds the lock
// (as a killed one does until it expires).
func planWhenFree(s *dedup.Storage, opts gc.Options) (*gc.Plan, error) {
	p, err := s.PlanGC(ctx, opts)
	for deadline := time.Now().Add(3 * killedLeaseTTL); errors.Is(err, storage.ErrInUse) && time.Now().Before(deadline); {
		time.Sleep(killedLeaseTTL / 8)
		p, err = s.PlanGC(ctx, opts)
	}
	return p, err
}

// gcHelper collects garbage in a loop until it is killed.
func gcHelper(root string) {
	s := dedup.New(root, dedup.Options{Backend: slowBackend{local.New(root)}, LeaseTTL: killedLeaseTTL})
	for {
		p, err := planWhenFree(s, everything)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("planned")
		if _, err := s.ExecuteGC(ctx, p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		fmt.Println("executed")
	}
}

type backups map[string]map[string][]byte // backup name → file → content

func (bs backups) verify(t *testing.T, s *dedup.Storage, when string) {
	t.Helper()
	for name, files := range bs {
		for file, want := range files {
			got, err := readBack(t, s, "d", name, file)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: %s/%s read back %d bytes, %v", when, name, file, len(got), err)
			}
		}
	}
}

// makeGarbage adds backups whose removal leaves whole packs dead and packs
// half dead, and deltas whose only bases are in a removed backup, removes
// them, and returns the backups that stay.
func makeGarbage(t *testing.T, s *dedup.Storage, round int) backups {
	a, b := dataset.Random(uint64(1000+round), 300<<10), dataset.Random(uint64(2000+round), 300<<10)
	pages := dataset.Pages(uint64(4000+round), 32)
	keep, gone := fmt.Sprintf("keep-%d", round), fmt.Sprintf("gone-%d", round)
	kept := backups{keep: {"f": a, "g": dataset.Update(pages, uint64(round), 0.25)}}
	backup(t, s, "d", fmt.Sprintf("mixed-%d", round), map[string][]byte{"f": append(append([]byte(nil), a...), b...)})
	deltasBefore := countDeltas(s)
	backup(t, s, "d", gone, map[string][]byte{"f": dataset.Random(uint64(3000+round), 500<<10), "g": pages})
	backup(t, s, "d", keep, kept[keep])
	if countDeltas(s) == deltasBefore {
		t.Fatal("the kept backup made no deltas against the removed one")
	}
	for _, name := range []string{"mixed", "gone"} {
		if err := s.RemoveBackup(ctx, "d", fmt.Sprintf("%s-%d", name, round)); err != nil {
			t.Fatal(err)
		}
	}
	return kept
}

func countDeltas(s *dedup.Storage) int {
	n := 0
	dedup.IndexOf(s).ForEachDelta(func(chunkstore.ID, []chunkstore.ID) error { n++; return nil })
	return n
}

// TestGCFaultAtEveryStep fails the backend at each call of a collection in
// turn (one that condemns, then sweeps at once, no lease being held): every
// call refused, and every put cut short or failing after it stored. The
// error must reach the caller, every backup must still read back, and the
// next collections must reach the clean end state.
func TestGCFaultAtEveryStep(t *testing.T) {
	all := []string{faulty.Put, faulty.Get, faulty.List, faulty.Delete}
	const leaseTTL = 3 * time.Second // long enough for a loaded machine
	// collectAll runs collections until the repository is clean. A lock
	// that the failed collection could not delete would stop them for the
	// TTL (TestSharedLeaseExpiresAndLock tests that): no collection runs,
	// so it goes now.
	collectAll := func(s *dedup.Storage, fb *faulty.Backend) {
		fb.List(ctx, protocol.LockPrefix, "", func(o chunkstore.ObjectInfo) error { return fb.Delete(ctx, o.Name) })
		for range 2 {
			collect(t, s, everything)
		}
	}
	run := func(k int, fault faulty.Fault, ops []string) (s *dedup.Storage, fb *faulty.Backend, kept backups, calls int, failed bool, err error) {
		fb = faulty.New(local.New(filepath.Join(t.TempDir(), "objects")))
		s, _ = newStorage(t, dedup.Options{Backend: fb, PackSize: 1 << 20, LeaseTTL: leaseTTL})
		kept = makeGarbage(t, s, 0)
		fb.Arm(k, fault, ops...)
		var p *gc.Plan
		if p, err = s.PlanGC(ctx, everything); err == nil {
			_, err = s.ExecuteGC(ctx, p)
		}
		calls, failed = fb.Disarm()
		return s, fb, kept, calls, failed, err
	}
	type armed struct {
		fault faulty.Fault
		ops   []string
	}
	for _, a := range []armed{{faulty.Refuse, all}, {faulty.ShortWrite, []string{faulty.Put}}, {faulty.AfterStore, []string{faulty.Put}}} {
		_, _, _, steps, _, err := run(1<<30, faulty.Refuse, a.ops)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("a fault-free collection makes %d calls of %v", steps, a.ops)
		for k := 1; k <= steps; k++ {
			s, fb, kept, _, failed, err := run(k, a.fault, a.ops)
			if !failed {
				t.Fatalf("fault %d at call %d: no call failed", a.fault, k)
			}
			// A collection that could not delete its lock succeeded.
			if !errors.Is(err, faulty.ErrInjected) && err != nil {
				t.Fatalf("fault %d at call %d failed, but the collection returned %v", a.fault, k, err)
			}
			kept.verify(t, s, fmt.Sprintf("after fault %d at call %d", a.fault, k))
			collectAll(s, fb)
			kept.verify(t, s, fmt.Sprintf("after the collections following fault %d at call %d", a.fault, k))
			p, err := s.PlanGC(ctx, everything)
			if err != nil {
				t.Fatal(err)
			}
			p.Close()
			if p.Dead != 0 || len(p.Delete)+len(p.Repack)+len(p.Orphans)+len(p.Sweep)+p.Waiting != 0 {
				t.Errorf("fault %d at call %d: the next collections left %d dead chunks, plan %d/%d/%d, sweep %d, waiting %d",
					a.fault, k, p.Dead, len(p.Delete), len(p.Repack), len(p.Orphans), len(p.Sweep), p.Waiting)
			}
			if st := stats(t, s); st.DeadBytes != 0 {
				t.Errorf("fault %d at call %d: %d dead bytes left", a.fault, k, st.DeadBytes)
			}
		}
	}
}

// TestGCKilled kills a collecting process at random moments, over and over
// on one repository. After every kill the repository opens and every backup
// reads back; at the end one collection leaves it clean.
func TestGCKilled(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	all := backups{}
	killedAt := map[string]int{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for round := range *gcKills {
		s := dedup.New(root, dedup.Options{PackSize: 256 << 10})
		for name, files := range makeGarbage(t, s, round) {
			all[name] = files
		}
		s.Close()

		// Kill one round in five at a random moment of start-up, the others
		// a random moment after the first plan, while it executes.
		cmd, lines, stderr := startHelper(t, "DEDUP_GC_HELPER_ROOT="+root)
		last := "" // the helper's last line before the kill: where it landed
		if rng.IntN(5) != 0 {
			for lines.Scan() && lines.Text() != "planned" {
			}
			last = "planned"
		}
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		cmd.Process.Kill()
		for lines.Scan() {
			last = lines.Text()
		}
		if err := cmd.Wait(); stderr.Len() > 0 {
			t.Fatalf("round %d: the collecting process failed: %v: %s", round, err, stderr.String())
		}
		killedAt[map[string]string{"": "opening or planning", "planned": "executing a plan", "executed": "between collections"}[last]]++
		// The killed process's lock would stop the next collection for the
		// TTL (TestSharedLeaseExpiresAndLock tests that): it is dead, so
		// its lock goes now.
		os.RemoveAll(filepath.Join(root, filepath.FromSlash(protocol.LockPrefix)))

		s = dedup.New(root, dedup.Options{LeaseTTL: killedLeaseTTL})
		all.verify(t, s, fmt.Sprintf("after kill %d", round))
		if r := runCheck(t, s, check.Options{}); !r.OK() {
			t.Fatalf("check after kill %d: %+v", round, r.Problems)
		}
		s.Close()
	}
	t.Logf("kills: %v", killedAt)
	if killedAt["executing a plan"] < *gcKills/2 {
		t.Errorf("only %d of %d kills landed while a plan was executed", killedAt["executing a plan"], *gcKills)
	}
	// The temporary files of killed writes, aged past the hour a
	// collection waits, go with the final collection.
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), local.TempPrefix) {
			then := time.Now().Add(-gc.PartialMinAge - time.Minute)
			os.Chtimes(p, then, then)
		}
		return nil
	})
	s := dedup.New(root, dedup.Options{LeaseTTL: killedLeaseTTL})
	defer s.Close()
	p, err := planWhenFree(s, everything)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ExecuteGC(ctx, p); err != nil {
		t.Fatal(err)
	}
	all.verify(t, s, "after the final collection")
	checkClean(t, s, root)
}
