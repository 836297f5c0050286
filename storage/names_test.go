package storage_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/dedupstore/dedupstore/storage"
)

func TestNames(t *testing.T) {
	for _, ok := range [][2]string{{"ks/0", "2026-11-25.070000.zone1-0000000101"}, {"ks/-80", "b"}, {"a/b/c", "x_y"}} {
		if err := storage.ValidateBackupName(ok[0], ok[1]); err != nil {
			t.Errorf("ValidateBackupName(%q, %q) = %v", ok[0], ok[1], err)
		}
	}
	for _, bad := range [][2]string{{"", "n"}, {"..", "n"}, {"a/../b", "n"}, {"/a", "n"}, {"a", ".."}, {"a", "b/c"}, {"a", ""}, {"a", strings.Repeat("x", 256)}, {"a b", "n"}} {
		if err := storage.ValidateBackupName(bad[0], bad[1]); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ValidateBackupName(%q, %q) = %v, want ErrInvalidName", bad[0], bad[1], err)
		}
	}
	for _, ok := range []string{"0", "MANIFEST", "backup-1", "backup.xbstream.gz-000", "a_b", ".hidden", "..."} {
		if err := storage.ValidateFileName(ok); err != nil {
			t.Errorf("ValidateFileName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a\\b", "a b", "é", strings.Repeat("x", 256)} {
		if err := storage.ValidateFileName(bad); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ValidateFileName(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
}

// FuzzNames checks that no accepted name can reach outside a root.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"ks/0", "..", "a/../b", "/x", "a//b", "n", "a.b"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, dir, name string) {
		if storage.ValidateBackupName(dir, name) == nil {
			for _, part := range append(strings.Split(dir, "/"), name) {
				if part == "" || part == "." || part == ".." || strings.ContainsAny(part, "/\\\x00") {
					t.Fatalf("accepted %q, %q", dir, name)
				}
			}
		}
		if storage.ValidateFileName(name) == nil && (name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00")) {
			t.Fatalf("accepted file name %q", name)
		}
	})
}
