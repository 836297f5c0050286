package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/internal/dataset"
)

// The files cache reads only what changed, and a file rewritten with its
// size and modification time kept (its change time moves) is read again.
// So is a file changed less than a second before the previous backup.
func TestFilesCache(t *testing.T) {
	repo, work := newRepo(t)
	src := filepath.Join(work, "src")
	writeTree(t, src, map[string][]byte{"a": []byte("aaaa"), "b": []byte("bbbb"), "sub/c": []byte("cccc")})
	type result struct {
		Files     int `json:"files"`
		Unchanged int `json:"unchanged_files"`
	}
	var r0, r1, r2, r3 result
	okJSON(t, repo, &r0, "backup", "h/x/0", src)
	okJSON(t, repo, &r1, "backup", "h/x/1", src)
	if r0.Unchanged != 0 || r1.Unchanged != 0 {
		t.Errorf("files changed just before the previous backup were not read again: %+v, %+v", r0, r1)
	}
	time.Sleep(1100 * time.Millisecond)
	okJSON(t, repo, &r1, "backup", "h/x/1b", src)
	okJSON(t, repo, &r2, "backup", "h/x/2", src)
	if r2.Unchanged != 3 {
		t.Errorf("unchanged repeat %+v", r2)
	}
	b := filepath.Join(src, "b")
	info, _ := os.Stat(b)
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(b, []byte("BBBB"), 0o640)
	os.Chtimes(b, info.ModTime(), info.ModTime())
	time.Sleep(1100 * time.Millisecond)
	okJSON(t, repo, &r3, "backup", "h/x/3", src)
	if r3.Unchanged != 2 {
		t.Errorf("after rewriting b in place: %+v, want 2 unchanged", r3)
	}
	if out := ok(t, repo, "cat", "h/x/3", b); out != "BBBB" {
		t.Errorf("b in the third backup: %q", out)
	}
	target := filepath.Join(work, "target")
	ok(t, repo, "restore", "h/x/2", "--target", target)
	sameTreeContent(t, map[string]string{"a": "aaaa", "b": "bbbb", "sub/c": "cccc"}, filepath.Join(target, src))
	var forced result
	okJSON(t, repo, &forced, "backup", "h/x/4", src, "--force")
	if forced.Unchanged != 0 {
		t.Errorf("--force: %+v", forced)
	}
}

func sameTreeContent(t *testing.T, want map[string]string, dir string) {
	t.Helper()
	for p, w := range want {
		if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(got) != w {
			t.Errorf("%s: %q, %v; want %q", p, got, err, w)
		}
	}
}

func TestDiff(t *testing.T) {
	repo, work := newRepo(t)
	src := filepath.Join(work, "src")
	writeTree(t, src, map[string][]byte{"same": []byte("same"), "gone": []byte("gone"), "edited": []byte("v1"), "chmod": []byte("x")})
	ok(t, repo, "backup", "h/x/1", src)
	os.Remove(filepath.Join(src, "gone"))
	os.WriteFile(filepath.Join(src, "edited"), []byte("version 2"), 0o640)
	os.WriteFile(filepath.Join(src, "new"), []byte("new"), 0o640)
	os.Chmod(filepath.Join(src, "chmod"), 0o600)
	ok(t, repo, "backup", "h/x/2", src)
	var d struct {
		Changes []struct {
			Change, Path     string
			OldSize, NewSize int64
		}
		Added, Removed, Changed int
	}
	okJSON(t, repo, &d, "diff", "h/x/1", "h/x/2")
	got := map[string]string{}
	for _, c := range d.Changes {
		got[strings.TrimPrefix(c.Path, src[1:]+"/")] = c.Change
	}
	want := map[string]string{"gone": "removed", "new": "added", "edited": "content", "chmod": "metadata"}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %q, want %q (all: %v)", p, got[p], w, got)
		}
	}
	if _, listed := got["same"]; listed {
		t.Errorf("an unchanged file is listed: %v", got)
	}
	if d.Added != 1 || d.Removed != 1 {
		t.Errorf("diff --json totals: %+v", d)
	}
	if out := ok(t, repo, "diff", "h/x/1", "h/x/2"); !strings.Contains(out, "M  ") || !strings.Contains(out, "1 added, 1 removed") {
		t.Errorf("diff:\n%s", out)
	}
}

func TestLsSortAndRmPatterns(t *testing.T) {
	repo, _ := newRepo(t)
	for _, n := range []string{"db/0/c", "db/0/a", "db/1/b", "logs/x"} {
		if r := dedupctl(t, repo, strings.NewReader(n), "backup", n, "--stdin", "--name", "f"); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	names := func(args ...string) string {
		var ls []struct{ Dir, Name string }
		okJSON(t, repo, &ls, append([]string{"ls"}, args...)...)
		var out []string
		for _, b := range ls {
			out = append(out, b.Dir+"/"+b.Name)
		}
		return strings.Join(out, " ")
	}
	if got := names(); got != "db/0/c db/0/a db/1/b logs/x" {
		t.Errorf("ls by time: %s", got)
	}
	if got := names("--sort", "name"); got != "db/0/a db/0/c db/1/b logs/x" {
		t.Errorf("ls --sort name: %s", got)
	}
	var dry struct {
		Removed []string
		DryRun  bool `json:"dry_run"`
	}
	okJSON(t, repo, &dry, "rm", "db/*/?", "db/0/a", "--dry-run")
	if strings.Join(dry.Removed, " ") != "db/0/c db/0/a db/1/b" || !dry.DryRun || names() != "db/0/c db/0/a db/1/b logs/x" {
		t.Errorf("rm --dry-run: %+v; left %s", dry, names())
	}
	fails(t, dedupctl(t, repo, nil, "rm", "db/0/*", "nomatch/*"), 3, "no backup nomatch/*")
	if names() != "db/0/c db/0/a db/1/b logs/x" {
		t.Errorf("a failed rm removed something: %s", names())
	}
	ok(t, repo, "rm", "db/0/*", "logs/x")
	if got := names(); got != "db/1/b" {
		t.Errorf("after rm: %s", got)
	}
	fails(t, dedupctl(t, repo, nil, "ls", "--sort", "size"), 2, "--sort")
}

func TestShowMetadata(t *testing.T) {
	repo, work := newRepo(t)
	src := filepath.Join(work, "src")
	writeTree(t, src, map[string][]byte{"f": []byte("12345")})
	syscall.Chmod(filepath.Join(src, "f"), 0o4750)
	os.Symlink("f", filepath.Join(src, "l"))
	ok(t, repo, "backup", "h/x/1", src)
	out := ok(t, repo, "show", "h/x/1")
	for _, want := range []string{"urwxr-x---", "Lrwxrwxrwx", src[1:] + "/l -> f", "MODE", "OWNER", "MODIFIED"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	var js struct {
		Entries []struct {
			Path, Type string
			Mode       uint32
			Size       int64
		}
	}
	okJSON(t, repo, &js, "show", "h/x/1")
	last := js.Entries[len(js.Entries)-2]
	if last.Type != "file" || last.Mode != 0o4750 || last.Size != 5 {
		t.Errorf("show --json: %+v", js.Entries)
	}
}

// Readers in processes of their own read a local repository while a writer
// process backs up, removes and collects in a loop: every backup a reader
// lists and reads comes back exactly, or the read fails because the writer
// removed it meanwhile; never other bytes.
func TestReadersBesideWriter(t *testing.T) {
	repo, _ := newRepo(t)
	content := func(i int) []byte { return dataset.Random(uint64(500+i), 300<<10+i*4096) }
	const rounds = 8
	done := make(chan struct{})
	// A reader that finds the repository free opens it as its writer, for
	// a moment: the writer then waits for it, as a script would.
	write := func(stdin []byte, args ...string) bool {
		for deadline := time.Now().Add(20 * time.Second); ; {
			r := dedupctl(t, repo, bytes.NewReader(stdin), args...)
			if r.code == 0 {
				return true
			}
			if r.code != 4 || time.Now().After(deadline) {
				t.Errorf("%v: exit %d: %s", args, r.code, r.stderr)
				return false
			}
		}
	}
	go func() {
		defer close(done)
		for i := range rounds {
			if !write(content(i), "backup", fmt.Sprintf("d/b%d", i), "--stdin", "--name", "f") {
				return
			}
			if i >= 2 && (!write(nil, "rm", fmt.Sprintf("d/b%d", i-2)) || !write(nil, "gc", "--grace", "1ns")) {
				return
			}
		}
	}()
	reads := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		var ls []struct{ Name, State string }
		r := dedupctl(t, repo, nil, "ls", "--json")
		if r.code != 0 {
			t.Fatalf("ls beside the writer: exit %d: %s", r.code, r.stderr)
		}
		if err := json.Unmarshal([]byte(r.stdout), &ls); err != nil {
			t.Fatal(err)
		}
		for _, b := range ls {
			var i int
			fmt.Sscanf(b.Name, "b%d", &i)
			r := dedupctl(t, repo, nil, "cat", "d/"+b.Name, "f")
			switch {
			case r.code == 0 && r.stdout == string(content(i)):
				reads++
			case r.code == 0:
				t.Fatalf("cat d/%s returned %d other bytes", b.Name, len(r.stdout))
			case r.code != 3 && r.code != 1:
				t.Fatalf("cat d/%s beside the writer: exit %d: %s", b.Name, r.code, r.stderr)
			}
		}
	}
	if reads == 0 {
		t.Error("no read succeeded beside the writer")
	}
	if out := ok(t, repo, "check", "--read-data"); !strings.Contains(out, "no errors") {
		t.Errorf("check --read-data:\n%s", out)
	}
	t.Logf("%d reads beside the writer", reads)
}
