package tree

import (
	"errors"
	"os"
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
			sources, err := Walk([]string{src}, func(p string, err error) { t.Errorf("skipped %s: %v", p, err) })
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
	sources, err := Walk([]string{filepath.Join(dir, "a", "b"), filepath.Join(dir, "a"), filepath.Join(dir, "a", "b", "f")}, func(p string, err error) { t.Errorf("skipped %s: %v", p, err) })
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
	if _, err := Walk([]string{filepath.Join(dir, "nope")}, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Walk of a missing path: %v", err)
	}
}
