package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

// TestManyProcesses runs manyProcesses on a local directory.
func TestManyProcesses(t *testing.T) {
	manyProcesses(t, filepath.Join(t.TempDir(), "repo"))
}

// manyProcesses runs dedupctl processes against one repository at the same
// time: writers back up three versions of one database, slowly, each
// keeping only its latest backup, so that a version's own data keeps dying
// and coming back; a collector runs collections in a loop meanwhile; and
// now and then a backup or a collection is killed at a random moment.
// Every ended backup must read back exactly just before it is removed and
// at the end, check --read-data must pass, and the collections must have
// deleted packs and left nothing to do. The lease TTL is short, so that
// what killed processes leave expires within the test. The processes open
// the repository with a key file: a password's argon2id would cost each of
// them 0.2 s and 64 MiB, and this test runs many, several at a time.
func manyProcesses(t *testing.T, repo string, flags ...string) {
	const ttl = 3 * time.Second
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, chunkstore.NewKeyFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	flags = append(flags, "--lease-ttl", ttl.String(), "--key-file", keyFile)
	run := func(stdin io.Reader, args ...string) result {
		return dedupctl(t, repo, stdin, append(append([]string(nil), flags...), args...)...)
	}
	// kill runs dedupctl and kills it after a random moment of up to max.
	kill := func(rng *rand.Rand, max time.Duration, stdin io.Reader, args ...string) {
		cmd := exec.Command(bin, append(append([]string(nil), flags...), args...)...)
		cmd.Env = append(os.Environ(), "DEDUP_REPO="+repo)
		cmd.Stdin = stdin
		if err := cmd.Start(); err != nil {
			t.Error(err)
			return
		}
		time.Sleep(time.Duration(rng.Int64N(int64(max))))
		cmd.Process.Kill()
		cmd.Wait()
	}
	if r := run(nil, "init"); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	base := dataset.Pages(7, 256) // 4 MiB
	var versions [3][]byte
	for v := range versions {
		versions[v] = append(dataset.Mutate(base, uint64(v), 0.2), dataset.Random(uint64(v), 1<<20)...)
	}

	const writers, rounds = 3, 6
	var (
		mu              sync.Mutex
		kept            = map[string][]byte{} // backup → content
		deleted, locked int
		done            = make(chan struct{})
	)
	// gcOnce runs a collection; one that finds the lock of a killed one
	// (exit 4) is counted and tried again later.
	gcOnce := func() bool {
		r := run(nil, "--json", "gc", "--grace", "1ns", "--repack-threshold", "0.01")
		var out struct {
			Result struct {
				Deleted int `json:"deleted_packs"`
			}
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.code == 4:
			locked++
		case r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil:
			t.Errorf("gc: exit %d: %s%s", r.code, r.stdout, r.stderr)
			return false
		default:
			deleted += out.Result.Deleted
		}
		return true
	}
	var collector sync.WaitGroup
	collector.Add(1)
	go func() {
		defer collector.Done()
		rng := rand.New(rand.NewPCG(99, 42))
		for {
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond):
			}
			if rng.IntN(4) == 0 {
				kill(rng, 300*time.Millisecond, nil, "gc", "--grace", "1ns", "--repack-threshold", "0.01")
			} else if !gcOnce() {
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for a := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(a), 42))
			prev, prevData := "", []byte(nil)
			for i := range rounds {
				name := fmt.Sprintf("db/%d/b%02d", a, i)
				data := versions[rng.IntN(len(versions))]
				killed := rng.IntN(3) == 0
				if killed { // a backup of that name, killed at a random moment first
					kill(rng, 1500*time.Millisecond, &slowReader{data: data, pause: 200 * time.Millisecond}, "backup", name, "--stdin", "--name", "stream")
				}
				r := run(&slowReader{data: data, pause: 400 * time.Millisecond}, "backup", name, "--stdin", "--name", "stream")
				for deadline := time.Now().Add(3 * ttl); killed && strings.Contains(r.stderr, "running in another process") && time.Now().Before(deadline); {
					// The killed one's lease has not expired yet.
					time.Sleep(ttl / 4)
					r = run(&slowReader{data: data, pause: 400 * time.Millisecond}, "backup", name, "--stdin", "--name", "stream")
				}
				if killed && r.code == 1 && strings.Contains(r.stderr, "already exists") {
					// The killed one had written its manifest: it is
					// whole, and stays.
					if r := run(nil, "cat", name, "stream"); r.code != 0 || r.stdout != string(data) {
						t.Errorf("writer %d: cat %s, ended by a killed process: exit %d, %d bytes, want %d exactly: %s", a, name, r.code, len(r.stdout), len(data), r.stderr)
						return
					}
				} else if r.code != 0 {
					t.Errorf("writer %d: backup %s: exit %d: %s", a, name, r.code, r.stderr)
					return
				}
				mu.Lock()
				kept[name] = data
				mu.Unlock()
				if prev != "" {
					// Collections ran all the while: it must still be whole.
					if r := run(nil, "cat", prev, "stream"); r.code != 0 || r.stdout != string(prevData) {
						t.Errorf("writer %d: cat %s: exit %d, %d bytes, want %d exactly: %s", a, prev, r.code, len(r.stdout), len(prevData), r.stderr)
						return
					}
					if r := run(nil, "rm", prev); r.code != 0 {
						t.Errorf("writer %d: rm %s: exit %d: %s", a, prev, r.code, r.stderr)
						return
					}
					mu.Lock()
					delete(kept, prev)
					mu.Unlock()
				}
				prev, prevData = name, data
			}
		}()
	}
	wg.Wait()
	close(done)
	collector.Wait()
	if t.Failed() {
		return
	}
	// What killed processes left expires; then one collection condemns
	// and sweeps what is left, and one more sweeps what waited for them.
	time.Sleep(2 * ttl)
	for range 2 {
		time.Sleep(time.Second) // S3 object times are in whole seconds
		if !gcOnce() {
			t.FailNow()
		}
	}
	if deleted == 0 {
		t.Error("no collection deleted a pack")
	}
	var listed []struct{ Dir, Name string }
	if r := run(nil, "--json", "ls"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &listed) != nil {
		t.Fatalf("ls: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if len(listed) != len(kept) {
		t.Errorf("ls lists %d backups, want %d", len(listed), len(kept))
	}
	for name, data := range kept {
		if r := run(nil, "cat", name, "stream"); r.code != 0 || r.stdout != string(data) {
			t.Errorf("cat %s: exit %d, %d bytes, want %d exactly: %s", name, r.code, len(r.stdout), len(data), r.stderr)
		}
	}
	if r := run(nil, "check", "--read-data"); r.code != 0 {
		t.Errorf("check: %s%s", r.stdout, r.stderr)
	}
	// The collections reached the end: a plan finds nothing left to do
	// (dead bytes may stay, in packs under the repack threshold).
	var plan struct {
		Plan struct {
			Delete int `json:"delete_packs"`
			Repack int `json:"repack_packs"`
			Orphan int `json:"orphan_packs"`
			Phases struct {
				Sweep   int `json:"sweep_packs"`
				Waiting int `json:"waiting_condemnations"`
			} `json:"phases"`
		} `json:"plan"`
	}
	if r := run(nil, "--json", "gc", "--dry-run", "--grace", "1ns", "--repack-threshold", "0.01"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &plan) != nil {
		t.Errorf("gc --dry-run: exit %d: %s%s", r.code, r.stdout, r.stderr)
	} else if p := plan.Plan; p.Delete+p.Repack+p.Orphan+p.Phases.Sweep+p.Phases.Waiting != 0 {
		t.Errorf("after the last collections a plan still has work: %+v", p)
	}
	t.Logf("%d backups kept, %d packs deleted by collections, %d collections found a killed one's lock", len(kept), deleted, locked)
}
