package main_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// The reproductions of issue 11, as a user runs them.

// Two dedupctl init at once: one creates the repository, the other says
// it exists (both said "created" before).
func TestConcurrentInitCommands(t *testing.T) {
	for trial := range 5 {
		repo := filepath.Join(t.TempDir(), "repo")
		var wg sync.WaitGroup
		results := make([]result, 2)
		for i := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); results[i] = dedupctl(t, repo, nil, "init") }()
		}
		wg.Wait()
		created := 0
		for _, r := range results {
			switch {
			case r.code == 0 && strings.Contains(r.stdout, "created"):
				created++
			case r.code == 1 && strings.Contains(r.stderr, "already exists"):
			default:
				t.Errorf("trial %d: init: exit %d, %q %q", trial, r.code, r.stdout, r.stderr)
			}
		}
		if created != 1 {
			t.Fatalf("trial %d: %d inits said they created the repository", trial, created)
		}
	}
}

// A truncated index.db (SIGBUS on every command before) is moved aside
// and rebuilt, with one line saying so.
func TestTruncatedIndexCommand(t *testing.T) {
	repo, _ := newRepo(t)
	data := dataset.Pages(7, 100)
	if r := dedupctl(t, repo, bytes.NewReader(data), "backup", "db/a/1", "--stdin", "--name", "s"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if err := os.Truncate(filepath.Join(dedup.LocalCacheDir(repo), "index.db"), 8192); err != nil {
		t.Fatal(err)
	}
	r := dedupctl(t, repo, nil, "cat", "db/a/1", "s")
	if r.code != 0 || r.stdout != string(data) {
		t.Fatalf("cat after truncating index.db: exit %d, %d bytes, %s", r.code, len(r.stdout), r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "damaged") {
		t.Errorf("stderr %q, want one line saying the index was damaged", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dedup.LocalCacheDir(repo), "index.db.damaged")); err != nil {
		t.Errorf("the damaged index was not kept aside: %v", err)
	}
}

// A pack with a damaged trailer: cat reads it, index rebuild salvages it
// and exits 5 naming it, and gc deletes nothing (it deleted the pack as
// an orphan before).
func TestDamagedPackCommands(t *testing.T) {
	repo, _ := newRepo(t)
	data := dataset.Pages(8, 100)
	if r := dedupctl(t, repo, bytes.NewReader(data), "backup", "db/a/1", "--stdin", "--name", "s"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	packs, _ := filepath.Glob(filepath.Join(repo, "data", "*", "*"))
	slices.SortFunc(packs, func(a, b string) int { return int(fileSize(b) - fileSize(a)) }) // the data's, not the catalog's
	pack, err := os.ReadFile(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	pack[len(pack)-100] ^= 1
	os.WriteFile(packs[0], pack, 0o644)
	r := dedupctl(t, repo, nil, "index", "rebuild")
	if r.code != 5 || !strings.Contains(r.stdout, "damaged pack") || !strings.Contains(r.stdout, "salvaged") {
		t.Errorf("index rebuild: exit %d, %q %q; want exit 5 naming the salvaged pack", r.code, r.stdout, r.stderr)
	}
	fails(t, dedupctl(t, repo, nil, "gc", "--grace", "1ns"), 5, "damaged")
	if _, err := os.Stat(packs[0]); err != nil {
		t.Fatalf("gc deleted the damaged pack: %v", err)
	}
	if r := dedupctl(t, repo, nil, "cat", "db/a/1", "s"); r.code != 0 || r.stdout != string(data) {
		t.Fatalf("cat: exit %d, %s", r.code, r.stderr)
	}
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Nonsense is refused, not read as "check nothing and pass"; a corrupt
// config is damage (exit 5).
func TestIntegrityUsageAndCodes(t *testing.T) {
	repo, _ := newRepo(t)
	for _, subset := range []string{"NaN%", "nan", "Inf%", "-5%", "0%"} {
		fails(t, dedupctl(t, repo, nil, "check", "--read-data-subset", subset), 2, "percentage")
	}
	if err := os.WriteFile(filepath.Join(repo, "config"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	fails(t, dedupctl(t, repo, nil, "ls"), 5, "config")
}

// A directory no file system can hold as one manifest name part is refused
// before anything is stored (it bricked the repository before).
func TestNameTooLongCommand(t *testing.T) {
	repo, _ := newRepo(t)
	dir := strings.Repeat("a", 130) + "/" + strings.Repeat("b", 130)
	fails(t, dedupctl(t, repo, strings.NewReader("x\n"), "backup", dir+"/n", "--stdin", "--name", "s"), 2, "at most 255")
	ok(t, repo, "ls")
	ok(t, repo, "index", "rebuild")
}

// Damaged chunk bytes: check finds them and exits 5; gc then refuses;
// repair moves the pack aside, names the file it cannot restore and exits
// 5; gc runs again, and the other backup restores exactly. (Unencrypted,
// so that the test finds the pack of a's bytes by its contents.)
func TestRepairCommand(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	ok(t, repo, "init", "--no-encryption")
	a, b := dataset.Random(9, 300<<10), dataset.Random(10, 300<<10)
	for name, data := range map[string][]byte{"db/a/1": a, "db/b/1": b} {
		if r := dedupctl(t, repo, bytes.NewReader(data), "backup", name, "--stdin", "--name", "s"); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	var rep struct {
		Packs []struct {
			Pack string `json:"pack"`
		} `json:"packs"`
		Lost []struct {
			Dir  string `json:"dir"`
			File string `json:"file"`
		} `json:"lost_files"`
	}
	// Damage a's data: the pack holding its first bytes.
	packs, _ := filepath.Glob(filepath.Join(repo, "data", "*", "*"))
	var victim string
	for _, p := range packs {
		if data, _ := os.ReadFile(p); bytes.Contains(data, a[1000:1100]) {
			victim = p
			damageBytes(t, p, bytes.Index(data, a[1000:1100]))
		}
	}
	if victim == "" {
		t.Fatal("no pack holds a's bytes")
	}
	if r := dedupctl(t, repo, nil, "check", "--read-data"); r.code != 5 {
		t.Fatalf("check: exit %d: %s", r.code, r.stdout)
	}
	fails(t, dedupctl(t, repo, nil, "gc", "--grace", "1ns"), 5, "damaged")
	if r := dedupctl(t, repo, nil, "repair", "--dry-run"); r.code != 5 || !strings.Contains(r.stdout, "would move to quarantine/") {
		t.Errorf("repair --dry-run: exit %d: %s", r.code, r.stdout)
	}
	if _, err := os.Stat(filepath.Join(repo, "quarantine")); !os.IsNotExist(err) {
		t.Fatalf("repair --dry-run changed the repository: %v", err)
	}
	r := dedupctl(t, repo, nil, "repair", "--json")
	if r.code != 5 {
		t.Fatalf("repair: exit %d, %s %s; want 5", r.code, r.stdout, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Packs) != 1 || len(rep.Lost) != 1 || rep.Lost[0].Dir != "db/a" {
		t.Fatalf("repair --json = %s", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(repo, "quarantine", "data", filepath.Base(filepath.Dir(victim)), filepath.Base(victim))); err != nil {
		t.Errorf("the damaged pack is not in quarantine/: %v", err)
	}
	ok(t, repo, "gc", "--grace", "1ns")
	if r := dedupctl(t, repo, nil, "cat", "db/b/1", "s"); r.code != 0 || r.stdout != string(b) {
		t.Fatalf("cat db/b/1 after repair and gc: exit %d: %s", r.code, r.stderr)
	}
	if r := dedupctl(t, repo, nil, "repair"); r.code != 5 || !strings.Contains(r.stdout, "lost: backup db/a/1") {
		t.Errorf("second repair: exit %d: %s", r.code, r.stdout)
	}
}

// damageBytes flips a byte at off in the file at path.
func damageBytes(t *testing.T, path string, off int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
