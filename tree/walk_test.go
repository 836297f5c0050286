package tree

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A file swapped after the listing is skipped: a link is never followed, a
// FIFO never waited on.
func TestOpenRefusesWhatChanged(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("root only"), 0o600)
	for _, swap := range []struct {
		name string
		make func(p string) error
	}{
		{"symlink", func(p string) error { return os.Symlink(secret, p) }},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
	} {
		t.Run(swap.name, func(t *testing.T) {
			src := filepath.Join(dir, "src-"+strings.ReplaceAll(swap.name, " ", "-"))
			os.MkdirAll(src, 0o755)
			os.WriteFile(filepath.Join(src, "f"), []byte("listed"), 0o644)
			sources, err := Walk([]string{src}, WalkOptions{Skip: func(p string, err error) { t.Errorf("skipped %s: %v", p, err) }})
			if err != nil {
				t.Fatal(err)
			}
			f := sources[len(sources)-1]
			if f.Type != File {
				t.Fatalf("last entry %+v", f)
			}
			os.Remove(f.Disk)
			if err := swap.make(f.Disk); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				file, err := Open(f)
				if err == nil {
					file.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrChanged) {
					t.Errorf("Open of a file swapped for a %s: %v, want ErrChanged", swap.name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Open hangs")
			}
		})
	}
}

func TestWalkListsEachPathOnceWithItsParents(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "f"), nil, 0o644)
	sources, err := Walk([]string{filepath.Join(dir, "a", "b"), filepath.Join(dir, "a"), filepath.Join(dir, "a", "b", "f")}, WalkOptions{Skip: func(p string, err error) { t.Errorf("skipped %s: %v", p, err) }})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sources {
		got = append(got, "/"+string(s.Path))
	}
	var want []string
	for d := dir; d != "/"; d = filepath.Dir(d) {
		want = append([]string{d}, want...)
	}
	want = append(want, dir+"/a", dir+"/a/b", dir+"/a/b/f")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Walk listed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := Walk([]string{filepath.Join(dir, "nope")}, WalkOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Walk of a missing path: %v", err)
	}
}

func TestWalkExcludes(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"keep/a.txt", "keep/a.tmp", "cache/big", "sub/cache/x", "sub/y"} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	sources, err := Walk([]string{dir}, WalkOptions{Exclude: []string{"*.tmp", dir + "/cache"}, Skip: func(p string, err error) { t.Errorf("skipped %s: %v", p, err) }})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sources {
		if rel, err := filepath.Rel(dir, s.Disk); err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
			got = append(got, rel)
		}
	}
	if want := "keep keep/a.txt sub sub/cache sub/cache/x sub/y"; strings.Join(got, " ") != want {
		t.Errorf("Walk with excludes listed %q, want %q", strings.Join(got, " "), want)
	}
	if _, err := Walk([]string{dir}, WalkOptions{Exclude: []string{"[x"}}); !errors.Is(err, path.ErrBadPattern) {
		t.Errorf("a bad pattern: %v", err)
	}
}

// A mount point under the path is listed, empty, with OneFileSystem.
func TestWalkOneFileSystem(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	defer syscall.Unmount(mnt, 0)
	os.WriteFile(filepath.Join(mnt, "inside"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "outside"), nil, 0o644)
	for _, one := range []bool{false, true} {
		sources, err := Walk([]string{dir}, WalkOptions{OneFileSystem: one, Skip: func(p string, err error) { t.Errorf("skipped %s: %v", p, err) }})
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, s := range sources {
			listed[s.Disk] = true
		}
		if !listed[mnt] || !listed[filepath.Join(dir, "outside")] || listed[filepath.Join(mnt, "inside")] != !one {
			t.Errorf("OneFileSystem %v listed %v", one, listed)
		}
	}
}
