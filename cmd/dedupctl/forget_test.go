package main_test

import (
	"strings"
	"testing"

	"github.com/dedupstore/dedupstore/internal/dataset"
)

type forgetOut struct {
	DryRun bool `json:"dry_run"`
	Keep   []struct {
		Name    string
		Reasons []string
	}
	Remove     []struct{ Name string }
	InProgress []struct{ Name string } `json:"in_progress"`
	GC         *struct {
		Result *struct {
			Deleted int `json:"deleted_packs"`
		}
	}
}

// forget keeps by start time, never by name; --dry-run removes nothing;
// a backup in progress is left alone; and --gc reclaims the space of what
// it removed, while what it kept restores exactly.
func TestForget(t *testing.T) {
	repo, _ := newRepo(t)
	data := map[string][]byte{}
	// Named against their order: "d" is the oldest, "a" the newest.
	for i, n := range []string{"d", "c", "b", "a"} {
		data[n] = dataset.Random(uint64(i+1), 3<<20)
		if r := dedupctl(t, repo, strings.NewReader(string(data[n])), "backup", "db/0/"+n, "--stdin", "--name", "f"); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	ok(t, repo, "backup", "db/1/other", "--stdin", "--name", "f", "--allow-empty")
	names := func(dir string) string {
		var ls []struct{ Name string }
		okJSON(t, repo, &ls, "ls", dir)
		var out []string
		for _, b := range ls {
			out = append(out, b.Name)
		}
		return strings.Join(out, " ")
	}

	var dry forgetOut
	okJSON(t, repo, &dry, "forget", "db/0", "--keep-last", "2", "--dry-run")
	if !dry.DryRun || len(dry.Keep) != 2 || dry.Keep[0].Name != "a" || dry.Keep[1].Name != "b" ||
		strings.Join(dry.Keep[0].Reasons, ",") != "last" || len(dry.Remove) != 2 || dry.Remove[0].Name != "c" || dry.Remove[1].Name != "d" {
		t.Errorf("forget --keep-last 2 --dry-run: %+v", dry)
	}
	if got := names("db/0"); got != "d c b a" {
		t.Errorf("--dry-run removed backups: left %s", got)
	}
	if out := ok(t, repo, "forget", "db/0", "--keep-within", "1h", "--dry-run"); !strings.Contains(out, "db/0/d") || !strings.Contains(out, "within 1h") || !strings.Contains(out, "remove 0 of 4") {
		t.Errorf("forget --keep-within 1h --dry-run printed:\n%s", out)
	}

	// A backup in progress in db/0 is listed and left alone.
	cmd, stdin, stderr := startStdinBackup(t, repo, "db/0/running")
	waitBackupRunning(t, repo)
	var out forgetOut
	okJSON(t, repo, &out, "forget", "db/0", "--keep-last", "2", "--gc")
	if out.DryRun || len(out.Keep) != 2 || len(out.Remove) != 2 || len(out.InProgress) != 1 || out.InProgress[0].Name != "running" || out.GC == nil || out.GC.Result == nil {
		t.Errorf("forget --keep-last 2 --gc: %+v", out)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the backup running beside forget: %v: %s", err, stderr)
	}
	if got := names("db/0"); got != "b a running" {
		t.Errorf("after forget: db/0 holds %s", got)
	}
	if got := names("db/1"); got != "other" {
		t.Errorf("forget of db/0 touched db/1: %s", got)
	}
	ok(t, repo, "gc") // sweeps what the first collection condemned
	for _, n := range []string{"a", "b"} {
		if got := ok(t, repo, "cat", "db/0/"+n, "f"); got != string(data[n]) {
			t.Errorf("db/0/%s restores %d bytes, not its own %d", n, len(got), len(data[n]))
		}
	}
	ok(t, repo, "check", "--read-data")

	fails(t, dedupctl(t, repo, nil, "forget", "db/0"), 2, "forget needs a policy")
	fails(t, dedupctl(t, repo, nil, "forget", "db/0", "--keep-within", "7w"), 2, "want y, m, d or h")
	fails(t, dedupctl(t, repo, nil, "forget", "db/0", "--keep-daily", "-2"), 2, "--keep-daily -2")
	fails(t, dedupctl(t, repo, nil, "forget", "nothing/here", "--keep-last", "1"), 3, "no backups in nothing/here")
}
