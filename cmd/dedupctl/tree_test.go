package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/internal/dataset"
	"golang.org/x/sys/unix"
)

// Tree backups: everything a file system holds comes back exactly.

// exoticTree builds a tree with every kind of name, file and metadata a
// restore must bring back, and returns its root.
func exoticTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	in := func(p string) string { return filepath.Join(src, p) }
	must(os.MkdirAll(in("private"), 0o700))
	must(os.Mkdir(in("empty"), 0o750))
	must(os.Mkdir(in("sticky"), 0o755))
	must(syscall.Chmod(in("sticky"), 0o1777)) // os.Chmod takes these bits as fs.Mode flags
	for name, data := range map[string]string{
		"plain":                     "hello\n",
		`system-systemd\x2dcrypt`:   "backslash\n",
		"x\xff":                     "not utf-8 one\n",
		"x\xfe":                     "not utf-8 two\n",
		"private/secret":            "only me\n",
		"hard1":                     "linked\n",
		"suid":                      "#!/bin/sh\n",
		"sgid":                      "#!/bin/sh\n",
		"sticky/tmpfile":            "tmp\n",
		"deep/er/still/deeper/leaf": "leaf\n",
	} {
		must(os.MkdirAll(filepath.Dir(in(name)), 0o755))
		must(os.WriteFile(in(name), []byte(data), 0o640))
	}
	must(syscall.Chmod(in("suid"), 0o4755))
	must(syscall.Chmod(in("sgid"), 0o2750))
	must(os.Link(in("hard1"), in("hard2")))
	must(os.Symlink("plain", in("link")))
	must(os.Symlink("/nonexistent/elsewhere", in("dangling")))
	must(syscall.Mkfifo(in("fifo"), 0o620))
	sparse, err := os.Create(in("sparse"))
	must(err)
	must(sparse.Truncate(100 << 20))
	_, err = sparse.WriteAt([]byte("middle"), 50<<20)
	must(err)
	must(sparse.Close())
	must(unix.Lsetxattr(in("plain"), "user.comment", []byte("a file\x00with a NUL"), 0))
	must(unix.Lsetxattr(in("private"), "user.comment", []byte("a directory"), 0))
	if os.Geteuid() == 0 {
		// cap_net_raw, permitted and effective, as setcap gives ping
		must(unix.Lsetxattr(in("suid"), "security.capability", []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
		must(syscall.Mknod(in("null"), syscall.S_IFCHR|0o600, 1<<8|3))
		must(os.Lchown(in("plain"), 1234, 5678))
		must(os.Lchown(in("private"), 1234, 5678))
		must(os.Lchown(in("link"), 4321, 8765))
	}
	// Times last: every directory's mtime is set after its contents.
	old := time.Date(2020, 2, 29, 12, 34, 56, 789000000, time.UTC)
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if d.Type()&fs.ModeSymlink == 0 {
			must(os.Chtimes(p, old, old))
		}
		return nil
	})
	for _, d := range []string{"deep/er/still/deeper", "deep/er/still", "deep/er", "deep", "sticky", "private", "empty", "."} {
		must(os.Chtimes(in(d), old, old))
	}
	for p, want := range map[string]fs.FileMode{"suid": fs.ModeSetuid, "sgid": fs.ModeSetgid, "sticky": fs.ModeSticky} {
		if info, _ := os.Stat(in(p)); info.Mode()&want == 0 {
			t.Fatalf("%s: mode %v, the test needs %v", p, info.Mode(), want)
		}
	}
	return src
}

// sameTree fails the test unless dst holds what src does: names, types,
// contents, modes, owners, times, link targets, hard links and holes.
func sameTree(t *testing.T, src, dst string) {
	t.Helper()
	inodes := map[uint64]uint64{} // src inode -> dst inode
	seen := 0
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		seen++
		a, _ := os.Lstat(p)
		b, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%q not restored: %v", rel, err)
			return nil
		}
		sa, sb := a.Sys().(*syscall.Stat_t), b.Sys().(*syscall.Stat_t)
		if a.Mode() != b.Mode() {
			t.Errorf("%q: mode %v, want %v", rel, b.Mode(), a.Mode())
		}
		if sa.Uid != sb.Uid || sa.Gid != sb.Gid {
			t.Errorf("%q: owner %d:%d, want %d:%d", rel, sb.Uid, sb.Gid, sa.Uid, sa.Gid)
		}
		if x, y := xattrs(t, p), xattrs(t, q); x != y {
			t.Errorf("%q: extended attributes %q, want %q", rel, y, x)
		}
		if !a.ModTime().Equal(b.ModTime()) {
			t.Errorf("%q: mtime %v, want %v", rel, b.ModTime(), a.ModTime())
		}
		switch {
		case a.Mode().IsRegular():
			x, _ := os.ReadFile(p)
			y, _ := os.ReadFile(q)
			if !bytes.Equal(x, y) {
				t.Errorf("%q: content differs", rel)
			}
			if sa.Blocks*512 < a.Size()/2 && sb.Blocks*512 >= a.Size()/2 {
				t.Errorf("%q: sparse file restored with %d bytes allocated", rel, sb.Blocks*512)
			}
			if sa.Nlink > 1 {
				if want, ok := inodes[sa.Ino]; ok && want != sb.Ino {
					t.Errorf("%q: hard link restored as a copy", rel)
				}
				inodes[sa.Ino] = sb.Ino
			}
		case a.Mode()&fs.ModeSymlink != 0:
			x, _ := os.Readlink(p)
			y, _ := os.Readlink(q)
			if x != y {
				t.Errorf("%q: link to %q, want %q", rel, y, x)
			}
		case a.Mode()&fs.ModeDevice != 0:
			if sa.Rdev != sb.Rdev {
				t.Errorf("%q: device %x, want %x", rel, sb.Rdev, sa.Rdev)
			}
		}
		return nil
	})
	restored := 0
	filepath.WalkDir(dst, func(string, fs.DirEntry, error) error { restored++; return nil })
	if restored != seen {
		t.Errorf("restored %d entries, the source has %d", restored, seen)
	}
}

// xattrs lists p's extended attributes and their values, sorted.
func xattrs(t *testing.T, p string) string {
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
	slices.Sort(names)
	var out []string
	for _, name := range names {
		if name == "" {
			continue
		}
		v := make([]byte, 1<<16)
		k, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s=%q", name, v[:k]))
	}
	return strings.Join(out, " ")
}

func TestTreeRestoresExactly(t *testing.T) {
	repo, work := newRepo(t)
	src := exoticTree(t)
	ok(t, repo, "backup", "h/x/1", src)
	if out := ok(t, repo, "check", "--read-data"); !strings.Contains(out, "no errors") {
		t.Errorf("check --read-data:\n%s", out)
	}
	target := filepath.Join(work, "target")
	ok(t, repo, "restore", "h/x/1", "--target", target)
	sameTree(t, src, filepath.Join(target, src))
	if out := ok(t, repo, "cat", "h/x/1", strings.TrimPrefix(src, "/")+`/system-systemd\x2dcrypt`); out != "backslash\n" {
		t.Errorf("cat of a name with a backslash = %q", out)
	}
}

func TestTreeSameLastPart(t *testing.T) {
	repo, work := newRepo(t)
	a, b := filepath.Join(work, "a", "data"), filepath.Join(work, "b", "data")
	writeTree(t, a, map[string][]byte{"f": []byte("from a")})
	writeTree(t, b, map[string][]byte{"f": []byte("from b")})
	ok(t, repo, "backup", "h/x/1", a, b)
	target := filepath.Join(work, "target")
	ok(t, repo, "restore", "h/x/1", "--target", target)
	sameTree(t, a, filepath.Join(target, a))
	sameTree(t, b, filepath.Join(target, b))
}

func TestTreeClimbingPath(t *testing.T) {
	repo, work := newRepo(t)
	data := filepath.Join(work, "t", "d")
	writeTree(t, data, map[string][]byte{"f": []byte("data"), "sub/g": []byte("more")})
	cmd := exec.Command(bin, "backup", "k/dd", "..")
	cmd.Dir = filepath.Join(data, "sub")
	cmd.Env = append(os.Environ(), "DEDUP_REPO="+repo)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("backup ..: %v: %s", err, out)
	}
	target := filepath.Join(work, "target")
	ok(t, repo, "restore", "k/dd", "--target", target)
	sameTree(t, data, filepath.Join(target, data))
}

func TestStdinNames(t *testing.T) {
	repo, _ := newRepo(t)
	for _, name := range []string{"/abs/path", "../x", "dir/", "a//b", ".", "a/../b", ""} {
		fails(t, dedupctl(t, repo, strings.NewReader("data"), "backup", "d/b", "--stdin", "--name", name), 2, "--name")
	}
	ok(t, repo, "ls")
	if r := dedupctl(t, repo, strings.NewReader("data"), "backup", "d/b", "--stdin", "--name", "dumps/x.sql"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if out := ok(t, repo, "cat", "d/b", "dumps/x.sql"); out != "data" {
		t.Errorf("cat = %q", out)
	}
}

func TestStdinEmptyNeedsFlag(t *testing.T) {
	repo, _ := newRepo(t)
	fails(t, dedupctl(t, repo, strings.NewReader(""), "backup", "d/b", "--stdin", "--name", "f"), 1, "--allow-empty")
	var ls []any
	okJSON(t, repo, &ls, "ls")
	if len(ls) != 0 {
		t.Errorf("an empty stream refused, yet ls lists %v", ls)
	}
	if r := dedupctl(t, repo, strings.NewReader(""), "backup", "d/b", "--stdin", "--name", "f", "--allow-empty"); r.code != 0 {
		t.Fatal(r.stderr)
	}
}

func TestStdinFromCommand(t *testing.T) {
	repo, _ := newRepo(t)
	r := dedupctl(t, repo, nil, "backup", "db/t/1", "--name", "x", "--stdin-from-command", "--", "sh", "-c", "head -c 5000000 /dev/urandom; exit 1")
	if r.code != 1 || !strings.Contains(r.stderr, "exit status 1") || !strings.Contains(r.stderr, "nothing of it is kept") {
		t.Errorf("failed producer: exit %d, %s", r.code, r.stderr)
	}
	var ls []any
	okJSON(t, repo, &ls, "ls")
	if len(ls) != 0 {
		t.Errorf("a failed producer's stream was kept: %v", ls)
	}
	ok(t, repo, "backup", "db/t/2", "--name", "x", "--stdin-from-command", "--", "sh", "-c", "printf 'good data'")
	if out := ok(t, repo, "cat", "db/t/2", "x"); out != "good data" {
		t.Errorf("cat = %q", out)
	}
}

// A symlink already in the target never leads a restore outside it.
func TestRestoreStaysInTarget(t *testing.T) {
	repo, work := newRepo(t)
	src := filepath.Join(work, "src")
	writeTree(t, src, map[string][]byte{"sub/f": []byte("data")})
	ok(t, repo, "backup", "h/x/1", src)
	target, elsewhere := filepath.Join(work, "target"), filepath.Join(work, "elsewhere")
	os.MkdirAll(filepath.Join(target, filepath.Dir(src)), 0o755)
	os.MkdirAll(elsewhere, 0o755)
	if err := os.Symlink(elsewhere, filepath.Join(target, src)); err != nil {
		t.Fatal(err)
	}
	r := dedupctl(t, repo, nil, "restore", "h/x/1", "--target", target, "--overwrite")
	if r.code == 0 {
		t.Errorf("restore through a symlink leaving the target succeeded: %s", r.stdout)
	}
	if entries, _ := os.ReadDir(elsewhere); len(entries) != 0 {
		t.Errorf("restore wrote %v outside the target", entries)
	}
}

// asUnprivileged makes cmd run as nobody when the tests run as root, so
// that permission bits are enforced, and hands dirs to nobody.
func asUnprivileged(t *testing.T, cmd *exec.Cmd, dirs ...string) {
	if os.Geteuid() != 0 {
		return
	}
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, _ fs.DirEntry, _ error) error { return os.Lchown(p, 65534, 65534) })
		for p := d; p != "/"; p = filepath.Dir(p) {
			if info, err := os.Stat(p); err == nil {
				os.Chmod(p, info.Mode().Perm()|0o005)
			}
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
}

func TestUnreadableFileSkipped(t *testing.T) {
	repo, work := newRepo(t)
	src := filepath.Join(work, "src")
	writeTree(t, src, map[string][]byte{"a": []byte("a"), "locked/b": []byte("b"), "c": []byte("c")})
	os.Chmod(filepath.Join(src, "locked", "b"), 0)
	cmd := exec.Command(bin, "backup", "h/x/1", src)
	cmd.Env = append(os.Environ(), "DEDUP_REPO="+repo)
	asUnprivileged(t, cmd, work)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 6 || !strings.Contains(stderr.String(), "locked/b") {
		t.Fatalf("backup with an unreadable file: %v, %s", err, stderr.String())
	}
	target := filepath.Join(work, "target")
	ok(t, repo, "restore", "h/x/1", "--target", target)
	for f, want := range map[string]string{"a": "a", "c": "c"} {
		if got, _ := os.ReadFile(filepath.Join(target, src, f)); string(got) != want {
			t.Errorf("%s restored as %q", f, got)
		}
	}
	if _, err := os.Lstat(filepath.Join(target, src, "locked", "b")); err == nil {
		t.Error("the unreadable file was restored")
	}
}

// A damaged file does not stop a restore: everything else comes back, and
// the damaged file is named.
func TestRestoreGoesPastDamage(t *testing.T) {
	repo, work := newRepo(t)
	src := filepath.Join(work, "src")
	writeTree(t, src, map[string][]byte{"a": []byte("small a"), "big": dataset.Random(9, 300<<10), "z": []byte("small z")})
	ok(t, repo, "backup", "h/x/1", src)
	corruptLargestPack(t, repo)
	target := filepath.Join(work, "target")
	r := dedupctl(t, repo, nil, "restore", "h/x/1", "--target", target)
	if r.code != 5 || !strings.Contains(r.stderr, filepath.Join(src, "big")[1:]) {
		t.Errorf("restore past damage: exit %d, %s", r.code, r.stderr)
	}
	for f, want := range map[string]string{"a": "small a", "z": "small z"} {
		if got, _ := os.ReadFile(filepath.Join(target, src, f)); string(got) != want {
			t.Errorf("%s restored as %q", f, got)
		}
	}
}

// corruptLargestPack flips a byte in the middle of the repository's largest
// pack.
func corruptLargestPack(t *testing.T, repo string) {
	t.Helper()
	var pack string
	var largest int64
	filepath.WalkDir(filepath.Join(repo, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, _ := d.Info(); info.Size() > largest {
				pack, largest = p, info.Size()
			}
		}
		return nil
	})
	data, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	os.WriteFile(pack, data, 0o644)
}

// Restoring as another user than root restores what it can and says how
// many owners and root-only attributes it could not set.
func TestRestoreUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to back up files of other owners and run the restore as nobody")
	}
	repo, work := newRepo(t)
	src := filepath.Join(work, "src")
	writeTree(t, src, map[string][]byte{"owned": []byte("x"), "cap": []byte("y")})
	os.Lchown(filepath.Join(src, "owned"), 1234, 1234)
	if err := unix.Lsetxattr(filepath.Join(src, "cap"), "security.capability", []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0); err != nil {
		t.Fatal(err)
	}
	ok(t, repo, "backup", "h/x/1", src)
	target := filepath.Join(work, "target")
	os.Mkdir(target, 0o755)
	cmd := exec.Command(bin, "restore", "h/x/1", "--target", target, "--json")
	cmd.Env = append(os.Environ(), "DEDUP_REPO="+repo)
	asUnprivileged(t, cmd, work)
	out, err := cmd.Output()
	var res struct {
		Files        int `json:"files"`
		NotPermitted int `json:"not_permitted"`
	}
	if err != nil || json.Unmarshal(out, &res) != nil || res.Files != 2 || res.NotPermitted < 2 {
		t.Fatalf("restore as nobody: %v, %s", err, out)
	}
	for f, want := range map[string]string{"owned": "x", "cap": "y"} {
		if got, _ := os.ReadFile(filepath.Join(target, src, f)); string(got) != want {
			t.Errorf("%s restored as %q", f, got)
		}
	}
}
