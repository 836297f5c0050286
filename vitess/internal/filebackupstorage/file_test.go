package filebackupstorage

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A root of another name is another repository, even when the directory is
// the same one (renamed here; in Vitess's tests, a new temporary directory
// that reuses the inode of one removed): Vitess's TestBackupRestoreLagged
// found its backup "already exists" when the storage of the test before it
// stayed open.
func TestRootOfAnotherName(t *testing.T) {
	ctx := t.Context()
	t.Cleanup(func() { std.Close() })
	a := filepath.Join(t.TempDir(), "a")
	b := filepath.Join(filepath.Dir(a), "b")
	backup := func(name string) {
		t.Helper()
		bh, err := std.StartBackup(ctx, "d", name)
		if err != nil {
			t.Fatal(err)
		}
		w, err := bh.AddFile(ctx, "f", 5)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, name); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := bh.EndBackup(ctx); err != nil {
			t.Fatal(err)
		}
	}

	FileBackupStorageRoot = a
	backup("one")
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	FileBackupStorageRoot = b
	backup("two")
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Fatalf("the backup to %s wrote to the old root %s (stat: %v)", b, a, err)
	}
	bhs, err := std.ListBackups(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, bh := range bhs {
		names = append(names, bh.Name())
	}
	if len(names) != 2 || names[0] != "one" || names[1] != "two" {
		t.Fatalf("backups in %s: %q, want one and two", b, names)
	}
}
