package storage

import (
	"fmt"
	"strings"
)

// Name rules. A backup directory is one or more parts joined by "/"
// ("keyspace/shard"); a part, a backup name and a file name are each 1 to
// 255 of the characters A-Z a-z 0-9 . _ - and neither "." nor "..". That is
// what Vitess's backup engines write (the seed promised file names of
// alphanumerics and hyphens, but the XtraBackup engine writes
// "backup.xbstream.gz-000"). Nothing else can reach outside a repository, so
// nothing else is accepted.

const maxNameLen = 255

func validPart(s string) bool {
	if s == "" || len(s) > maxNameLen || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// ValidateBackupName checks a directory and a backup name against the name
// rules; the error wraps ErrInvalidName.
func ValidateBackupName(dir, name string) error {
	if dir == "" {
		return fmt.Errorf("backup directory is empty: %w", ErrInvalidName)
	}
	if err := ValidateDir(dir); err != nil {
		return err
	}
	if !validPart(name) {
		return fmt.Errorf("backup name %q: want 1-%d of A-Z a-z 0-9 . _ - (not . or ..): %w", name, maxNameLen, ErrInvalidName)
	}
	return nil
}

// ValidateDir checks a backup directory against the name rules; the error
// wraps ErrInvalidName.
func ValidateDir(dir string) error {
	for _, part := range strings.Split(dir, "/") {
		if !validPart(part) {
			return fmt.Errorf("backup directory %q: want parts of 1-%d of A-Z a-z 0-9 . _ - (not . or ..) joined by /: %w", dir, maxNameLen, ErrInvalidName)
		}
	}
	return nil
}

// ValidateFileName checks a file name against the name rules; the error
// wraps ErrInvalidName.
func ValidateFileName(name string) error {
	if !validPart(name) {
		return fmt.Errorf("file name %q: want 1-%d of A-Z a-z 0-9 . _ - (not . or ..): %w", name, maxNameLen, ErrInvalidName)
	}
	return nil
}
