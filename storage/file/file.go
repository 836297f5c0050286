// Package file is the plain BackupStorage: one file on disk per backup file,
// no deduplication, as Vitess's file backup storage does. It is the baseline
// that benchmarks compare storage/dedup against, and the second witness for
// the storagetest conformance suite.
//
// Importing the package registers it as "file" in storage.BackupStorageMap,
// rooted at the flag -file_backup_storage_root. Layout:
//
//	<root>/<path-escaped dir>/<name>/<file>
//
// A file is written to a temporary name, fsynced and renamed into place when
// its writer closes: a file that can be read is whole and durable.
package file

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/dedupstore/dedupstore/storage"
)

var rootFlag = flag.String("file_backup_storage_root", "", "root directory for the file backup storage")

func init() {
	storage.BackupStorageMap["file"] = &Storage{root: func() string { return *rootFlag }}
}

// Storage is the file BackupStorage. It holds no resources: Close does
// nothing and the storage is always usable.
type Storage struct {
	root func() string
}

// New returns a file storage rooted at dir.
func New(dir string) *Storage { return &Storage{root: func() string { return dir }} }

func (s *Storage) dirPath(dir string) (string, error) {
	if err := storage.ValidateDir(dir); err != nil {
		return "", err
	}
	root := s.root()
	if root == "" {
		return "", errors.New("file storage: no root directory (flag -file_backup_storage_root)")
	}
	return filepath.Join(root, url.PathEscape(dir)), nil
}

func (s *Storage) backupPath(dir, name string) (string, error) {
	if err := storage.ValidateBackupName(dir, name); err != nil {
		return "", err
	}
	p, err := s.dirPath(dir)
	return filepath.Join(p, name), err
}

// ListBackups implements storage.BackupStorage.
func (s *Storage) ListBackups(ctx context.Context, dir string) ([]storage.BackupHandle, error) {
	p, err := s.dirPath(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("file storage: list %s: %w", dir, err)
	}
	var out []storage.BackupHandle
	for _, e := range entries { // ReadDir sorts by name
		if e.IsDir() {
			out = append(out, &handle{dir: dir, name: e.Name(), path: filepath.Join(p, e.Name()), readOnly: true})
		}
	}
	return out, nil
}

// StartBackup implements storage.BackupStorage.
func (s *Storage) StartBackup(ctx context.Context, dir, name string) (storage.BackupHandle, error) {
	p, err := s.backupPath(dir, name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, fmt.Errorf("file storage: start %s/%s: %w", dir, name, err)
	}
	if err := os.Mkdir(p, 0o755); errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("file storage: start %s/%s: %w", dir, name, storage.ErrExists)
	} else if err != nil {
		return nil, fmt.Errorf("file storage: start %s/%s: %w", dir, name, err)
	}
	return &handle{dir: dir, name: name, path: p}, nil
}

// RemoveBackup implements storage.BackupStorage.
func (s *Storage) RemoveBackup(ctx context.Context, dir, name string) error {
	p, err := s.backupPath(dir, name)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("file storage: remove %s/%s: %w", dir, name, err)
	}
	return nil
}

// Close implements storage.BackupStorage.
func (s *Storage) Close() error { return nil }

type handle struct {
	dir, name, path string
	readOnly        bool
}

func (h *handle) Directory() string { return h.dir }
func (h *handle) Name() string      { return h.name }

func (h *handle) writable(op string) error {
	if h.readOnly {
		return fmt.Errorf("file storage: %s %s/%s: %w", op, h.dir, h.name, storage.ErrReadOnly)
	}
	return nil
}

func (h *handle) AddFile(ctx context.Context, filename string) (io.WriteCloser, error) {
	if err := h.writable("add file to"); err != nil {
		return nil, err
	}
	if err := storage.ValidateFileName(filename); err != nil {
		return nil, err
	}
	// "~" is in no valid file name, so no file's name is a temporary's.
	f, err := os.CreateTemp(h.path, "~"+filename+"-*")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("file storage: add file to %s/%s: %w", h.dir, h.name, storage.ErrAborted)
	}
	if err != nil {
		return nil, fmt.Errorf("file storage: add file to %s/%s: %w", h.dir, h.name, err)
	}
	w := &writer{ctx: ctx, f: f, final: filepath.Join(h.path, filename)}
	w.close = sync.OnceValue(w.finish)
	return w, nil
}

func (h *handle) EndBackup(ctx context.Context) error {
	if err := h.writable("end"); err != nil {
		return err
	}
	d, err := os.Open(h.path)
	if err != nil {
		return fmt.Errorf("file storage: end %s/%s: %w", h.dir, h.name, err)
	}
	defer d.Close()
	return d.Sync()
}

func (h *handle) AbortBackup(ctx context.Context) error {
	if err := h.writable("abort"); err != nil {
		return err
	}
	return os.RemoveAll(h.path)
}

func (h *handle) ReadFile(ctx context.Context, filename string) (io.ReadCloser, error) {
	if !h.readOnly {
		return nil, fmt.Errorf("file storage: read from %s/%s: %w", h.dir, h.name, storage.ErrWriteOnly)
	}
	if err := storage.ValidateFileName(filename); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(h.path, filename))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("file storage: %s/%s: file %s: %w", h.dir, h.name, filename, storage.ErrNotFound)
	}
	return f, err
}

// writer writes a temporary file and renames it into place on Close.
type writer struct {
	ctx   context.Context
	f     *os.File
	final string
	err   error
	close func() error // the first Close's result, for every Close
}

func (w *writer) Write(p []byte) (int, error) {
	if w.err == nil {
		w.err = w.ctx.Err()
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.err = err
	return n, err
}

// Close again returns what the first Close returned.
func (w *writer) Close() error { return w.close() }

func (w *writer) finish() error {
	err := w.err
	if err == nil {
		err = w.ctx.Err()
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.f.Name(), w.final)
	}
	if err != nil {
		os.Remove(w.f.Name())
	}
	return err
}
