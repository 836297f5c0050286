package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/internal/s3test"
)

// s3Repo starts an S3 server and returns a repository location on it,
// with the credentials set. The bucket does not exist: init creates it.
func s3Repo(t *testing.T) string {
	endpoint, stop, err := s3test.Start("../..")
	if errors.Is(err, s3test.ErrSkip) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.Secret)
	return fmt.Sprintf("s3:http://%s/backups/prod", endpoint)
}

// TestS3Repository runs dedupctl on a repository on a real S3 server, and
// rebuilds its index from the objects after the cache is deleted.
func TestS3Repository(t *testing.T) {
	repo := s3Repo(t)
	cache := t.TempDir()
	run := func(stdin []byte, args ...string) result {
		return dedupctl(t, repo, bytes.NewReader(stdin), append([]string{"--cache-dir", cache}, args...)...)
	}
	if r := run(nil, "ls"); r.code != 3 {
		t.Errorf("ls before init: exit %d, %s", r.code, r.stderr)
	}
	if r := run(nil, "init"); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	data := dataset.Pages(500, 300)
	if r := run(data, "backup", "db/0/b1", "--stdin", "--name", "xbstream"); r.code != 0 {
		t.Fatalf("backup: %s", r.stderr)
	}
	if r := run(nil, "cat", "db/0/b1", "xbstream"); r.code != 0 || r.stdout != string(data) {
		t.Fatalf("cat: exit %d, %d bytes: %s", r.code, len(r.stdout), r.stderr)
	}
	entries, _ := os.ReadDir(cache)
	if len(entries) != 1 {
		t.Fatalf("cache holds %d entries", len(entries))
	}
	os.RemoveAll(filepath.Join(cache, entries[0].Name())) // a new host: the index is rebuilt from S3
	if r := run(nil, "ls"); r.code != 0 || !strings.Contains(r.stdout, "db/0/b1") {
		t.Fatalf("ls after the cache was deleted: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run(nil, "check", "--read-data"); r.code != 0 {
		t.Fatalf("check: %s%s", r.stdout, r.stderr)
	}
	if r := run(nil, "cat", "db/0/b1", "xbstream"); r.stdout != string(data) {
		t.Fatal("cat after the rebuild differs")
	}
	// Credentials by flag instead of the environment.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	if r := run(nil, "ls"); r.code == 0 {
		t.Error("ls without credentials succeeded")
	}
	if r := run(nil, "--s3-access-key-id", s3test.Access, "--s3-secret-access-key", s3test.Secret, "ls"); r.code != 0 || !strings.Contains(r.stdout, "db/0/b1") {
		t.Errorf("ls with credentials by flag: exit %d: %s", r.code, r.stderr)
	}
}

// TestS3ManyAgents runs agents as separate dedupctl processes against one
// repository on a real S3 server, at the same time: writers back up three
// versions of one database, slowly, each keeping only its latest backup,
// so that a version's own data keeps dying and coming back; a collector
// runs collections in a loop meanwhile. Every backup must read back
// exactly just before it is removed and at the end, and the collections
// must have deleted packs.
func TestS3ManyAgents(t *testing.T) {
	repo := s3Repo(t)
	cache := t.TempDir() // one cache root: concurrent processes get separate index caches in it
	run := func(stdin io.Reader, args ...string) result {
		return dedupctl(t, repo, stdin, append([]string{"--cache-dir", cache}, args...)...)
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
		mu      sync.Mutex
		kept    = map[string][]byte{} // backup → content
		deleted int
		done    = make(chan struct{})
	)
	gcOnce := func(args ...string) (deleted int, ok bool) {
		// One collector runs at a time here: exit 4 (in use) is a failure.
		r := run(nil, append([]string{"--json", "gc", "--grace", "1ns", "--repack-threshold", "0.01"}, args...)...)
		var out struct {
			Result struct {
				Deleted int `json:"deleted_packs"`
			}
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
			t.Errorf("gc: exit %d: %s%s", r.code, r.stdout, r.stderr)
			return 0, false
		}
		return out.Result.Deleted, true
	}
	var collector sync.WaitGroup
	collector.Add(1)
	go func() {
		defer collector.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(300 * time.Millisecond):
			}
			n, ok := gcOnce()
			if !ok {
				return
			}
			mu.Lock()
			deleted += n
			mu.Unlock()
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
				if r := run(&slowReader{data: data, pause: 400 * time.Millisecond}, "backup", name, "--stdin", "--name", "stream"); r.code != 0 {
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
	for range 2 { // condemn what is left, then sweep it
		time.Sleep(time.Second) // S3 object times are in whole seconds: let the condemnation age
		n, ok := gcOnce()
		if !ok {
			t.FailNow()
		}
		deleted += n
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
	t.Logf("%d backups kept, %d packs deleted by collections", len(kept), deleted)
}

// slowReader pauses before each MiB of its data, so that a backup lasts
// long enough for collections to run during it.
type slowReader struct {
	data  []byte
	pause time.Duration
	given int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.given%(1<<20) == 0 {
		time.Sleep(r.pause)
	}
	n := copy(p[:min(len(p), 1<<20-r.given%(1<<20))], r.data)
	r.data = r.data[n:]
	r.given += n
	return n, nil
}
