package dedup_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/internal/dataset"
)

// syncHelper opens agent "b" of the shared repository at root, whose open
// imports what other agents ended since, and says so.
func syncHelper(root string) {
	s := openCrashRepo(root, true, "b")
	if _, err := s.ListBackups(ctx, "d"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s.Close()
	fmt.Println("synced")
}

// An agent killed while its index cache imports another agent's backup of
// many files listed it afterwards as ended with only some of them, and
// restored those with success. Importing a manifest is one transaction
// now: after any kill, the backup is listed whole, or imported whole by
// the next sync.
func TestImportKilled(t *testing.T) {
	const files = 600
	root := filepath.Join(t.TempDir(), "repo")
	a := openCrashRepo(root, true, "a")
	backup(t, a, "d", "small", map[string][]byte{"f": []byte("x")})
	b := openCrashRepo(root, true, "b")
	if _, err := b.ListBackups(ctx, "d"); err != nil { // b's cache is ready, without "big"
		t.Fatal(err)
	}
	b.Close()
	big := map[string][]byte{}
	for i := range files {
		big[fmt.Sprintf("f%d", i)] = dataset.Random(uint64(i), 100)
	}
	backup(t, a, "d", "big", big)
	a.Close()
	cache := filepath.Join(root, "b")
	pristine := filepath.Join(t.TempDir(), "b")
	if err := os.CopyFS(pristine, os.DirFS(cache)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runSyncHelper(t, root, 0)
	full := time.Since(start)
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 3))
	for kill := range 15 {
		os.RemoveAll(cache)
		if err := os.CopyFS(cache, os.DirFS(pristine)); err != nil {
			t.Fatal(err)
		}
		runSyncHelper(t, root, time.Duration(rng.Int64N(int64(full))))
		b := openCrashRepo(root, true, "b")
		fs, err := b.Files(ctx, "d", "big")
		if err != nil || len(fs) != files {
			t.Fatalf("kill %d: after a kill during the import, d/big has %d files (%v), want %d", kill, len(fs), err, files)
		}
		b.Close()
	}
}

// runSyncHelper runs syncHelper and kills it after wait, if it is still
// running then; 0 waits for it to finish.
func runSyncHelper(t *testing.T, root string, wait time.Duration) {
	t.Helper()
	cmd, out, stderr := startHelper(t, "DEDUP_SYNC_HELPER_ROOT="+root)
	if wait > 0 {
		time.Sleep(wait)
		cmd.Process.Kill()
	}
	for out.Scan() {
	}
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
			t.Fatalf("sync helper: %v: %s", err, stderr)
		}
	}
}
