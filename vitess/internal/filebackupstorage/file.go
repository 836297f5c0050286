// Package filebackupstorage puts dedup in the place of Vitess's file backup
// storage, for Vitess's own tests: `make vitess-test` builds them with
// go test -overlay, this file replacing go/vt/mysqlctl/filebackupstorage/
// file.go of vitess.io/vitess, so that every test that backs up to the
// "file" storage, or through filebackupstorage.NewBackupHandle, backs up
// into a dedup repository through this project's adapter. It keeps what
// those tests use of the package: FileBackupStorageRoot, NewBackupHandle,
// the flag and the registration as "file".
//
// The repository is FileBackupStorageRoot/.dedup (the tests keep their
// datadir in the root). A new repository opens whenever the root changes,
// by name or because the tests removed and recreated it: both are checked,
// as a new directory may reuse the inode of one removed.
package filebackupstorage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/vitess"
	"github.com/spf13/pflag"
	"vitess.io/vitess/go/vt/mysqlctl/backupstorage"
	mysqlctlerrors "vitess.io/vitess/go/vt/mysqlctl/errors"
	"vitess.io/vitess/go/vt/servenv"
	"vitess.io/vitess/go/vt/utils"
)

// FileBackupStorageRoot is the directory the tests back up into.
var FileBackupStorageRoot string

var std = vitess.New(&rootStorage{})

func init() {
	for _, cmd := range []string{"vtbackup", "vtctl", "vtctld", "vttablet"} {
		servenv.OnParseFor(cmd, func(fs *pflag.FlagSet) {
			utils.SetFlagStringVar(fs, &FileBackupStorageRoot, "file-backup-storage-root", "", "Root directory for the file backup storage.")
		})
	}
	backupstorage.BackupStorageMap["file"] = std
}

// FileBackupStorage is the type of NewBackupHandle's first argument.
type FileBackupStorage struct{}

// NewBackupHandle returns a handle on backup dir/name, as Vitess's file
// storage does without StartBackup: for writing, it starts the backup, over
// an earlier one of that name; for reading, it finds it. Vitess's tests
// name no backup ("" and ""); dedup calls that one "_/_". The handle is
// closed, as Vitess closes the registered storage after each operation,
// after each EndBackup, AbortBackup and file read.
func NewBackupHandle(_ *FileBackupStorage, dir, name string, readOnly bool) backupstorage.BackupHandle {
	dir, name = orUnderscore(dir), orUnderscore(name)
	ctx := context.Background()
	defer std.Close() // a no-op while the backup started here is in progress
	var bh backupstorage.BackupHandle
	var err error
	if readOnly {
		var bhs []backupstorage.BackupHandle
		bhs, err = std.ListBackups(ctx, dir)
		for _, b := range bhs {
			if b.Name() == name {
				bh = b
			}
		}
		if err == nil && bh == nil {
			err = fmt.Errorf("backup %s/%s: %w", dir, name, storage.ErrNotFound)
		}
	} else {
		if err = std.RemoveBackup(ctx, dir, name); errors.Is(err, storage.ErrNotFound) {
			err = nil
		}
		if err == nil {
			bh, err = std.StartBackup(ctx, dir, name)
		}
	}
	if err != nil {
		return &failed{err: err, dir: dir, name: name}
	}
	return closing{bh}
}

func orUnderscore(s string) string {
	if s == "" {
		return "_"
	}
	return s
}

// closing closes the storage after each EndBackup, AbortBackup and read,
// as Vitess closes the registered storage after each operation: so a test
// leaves no repository open (Vitess's tests check for leaked goroutines).
type closing struct {
	backupstorage.BackupHandle
}

func (c closing) EndBackup(ctx context.Context) error {
	defer std.Close()
	return c.BackupHandle.EndBackup(ctx)
}

func (c closing) AbortBackup(ctx context.Context) error {
	defer std.Close()
	return c.BackupHandle.AbortBackup(ctx)
}

func (c closing) ReadFile(ctx context.Context, filename string) (io.ReadCloser, error) {
	rc, err := c.BackupHandle.ReadFile(ctx, filename)
	if err != nil {
		return nil, err
	}
	return closingReader{rc}, nil
}

type closingReader struct{ io.ReadCloser }

func (r closingReader) Close() error {
	defer std.Close()
	return r.ReadCloser.Close()
}

// failed is a handle whose backup could not be started or found.
type failed struct {
	err       error
	dir, name string
	mysqlctlerrors.PerFileErrorRecorder
}

func (f *failed) Directory() string { return f.dir }
func (f *failed) Name() string      { return f.name }
func (f *failed) AddFile(context.Context, string, int64) (io.WriteCloser, error) {
	return nil, f.err
}
func (f *failed) EndBackup(context.Context) error   { return f.err }
func (f *failed) AbortBackup(context.Context) error { return f.err }
func (f *failed) ReadFile(context.Context, string) (io.ReadCloser, error) {
	return nil, f.err
}

// rootStorage is a dedup storage in FileBackupStorageRoot/.dedup, opened
// again whenever the root changes.
type rootStorage struct {
	mu   sync.Mutex
	name string      // the root s is in
	root os.FileInfo // and its directory
	s    *dedup.Storage
}

func (r *rootStorage) current() (*dedup.Storage, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := os.MkdirAll(FileBackupStorageRoot, 0o755); err != nil {
		return nil, err
	}
	fi, err := os.Stat(FileBackupStorageRoot)
	if err != nil {
		return nil, err
	}
	if r.s == nil || r.name != FileBackupStorageRoot || !os.SameFile(fi, r.root) {
		if r.s != nil {
			r.s.Close()
		}
		r.s, r.name, r.root = dedup.New(filepath.Join(FileBackupStorageRoot, ".dedup"), dedup.Options{}), FileBackupStorageRoot, fi
	}
	return r.s, nil
}

func (r *rootStorage) ListBackups(ctx context.Context, dir string) ([]storage.BackupHandle, error) {
	s, err := r.current()
	if err != nil {
		return nil, err
	}
	return s.ListBackups(ctx, dir)
}

func (r *rootStorage) StartBackup(ctx context.Context, dir, name string) (storage.BackupHandle, error) {
	s, err := r.current()
	if err != nil {
		return nil, err
	}
	return s.StartBackup(ctx, dir, name)
}

func (r *rootStorage) RemoveBackup(ctx context.Context, dir, name string) error {
	s, err := r.current()
	if err != nil {
		return err
	}
	return s.RemoveBackup(ctx, dir, name)
}

func (r *rootStorage) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil {
		return nil
	}
	return r.s.Close()
}
