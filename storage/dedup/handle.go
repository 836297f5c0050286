package dedup

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/dedupstore/dedupstore/storage"
)

// handle is a BackupHandle: read-write from StartBackup, read-only from
// ListBackups. A handle outlives Storage.Close unless its backup was in
// progress then: its next use reopens the storage (see repo).
type handle struct {
	s         *Storage
	dir, name string
	readOnly  bool

	mu    sync.Mutex
	r     *repo  // the repository the handle was made or last used in
	lease *lease // held from StartBackup until EndBackup succeeds or AbortBackup
}

// repo returns the handle's open repository: the one it was made in or,
// once that is closed, the storage reopened. A backup in progress when its
// repository closed died with it: that fails with storage.ErrClosed.
func (h *handle) repo(ctx context.Context) (*repo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.r.alive(); err == nil || h.lease != nil {
		return h.r, err
	}
	r, err := h.s.open(ctx)
	if err != nil {
		return nil, err
	}
	h.r = r
	return r, nil
}

// dropLease releases the handle's lease, once.
func (h *handle) dropLease() {
	h.mu.Lock()
	l, r := h.lease, h.r
	h.lease = nil
	h.mu.Unlock()
	r.releaseLease(l)
}

func (h *handle) Directory() string { return h.dir }
func (h *handle) Name() string      { return h.name }

// writable returns the handle's repository if the handle may write.
func (h *handle) writable(ctx context.Context, op string) (*repo, error) {
	if h.readOnly {
		return nil, fmt.Errorf("dedup: %s %s/%s: %w", op, h.dir, h.name, storage.ErrReadOnly)
	}
	r, err := h.repo(ctx)
	if err != nil {
		return nil, err
	}
	return r, r.writable()
}

// AddFile implements storage.BackupHandle. The file becomes readable, and
// replaces any earlier file of the same name, when the writer's Close
// returns nil. Adding a file after EndBackup is allowed: its Close rewrites
// the manifest.
func (h *handle) AddFile(ctx context.Context, filename string) (io.WriteCloser, error) {
	r, err := h.writable(ctx, "add file to")
	if err != nil {
		return nil, err
	}
	if err := storage.ValidateFileName(filename); err != nil {
		return nil, err
	}
	if _, found, err := r.idx.Backup(h.dir, h.name); err != nil {
		return nil, err
	} else if !found {
		return nil, fmt.Errorf("dedup: add file to %s/%s: %w", h.dir, h.name, storage.ErrAborted)
	}
	return r.newWriter(ctx, h.dir, h.name, filename)
}

// EndBackup implements storage.BackupHandle. It may be called again; each
// call rewrites the manifest with the files committed so far.
func (h *handle) EndBackup(ctx context.Context) error {
	r, err := h.writable(ctx, "end")
	if err != nil {
		return err
	}
	h.mu.Lock()
	l := h.lease
	h.mu.Unlock()
	if err := r.endBackup(ctx, h.dir, h.name, l); err != nil {
		return err
	}
	h.dropLease()
	return nil
}

// AbortBackup implements storage.BackupHandle. The backup disappears; writers
// still open on it fail at Close with storage.ErrAborted.
func (h *handle) AbortBackup(ctx context.Context) error {
	r, err := h.writable(ctx, "abort")
	if err != nil {
		return err
	}
	defer h.dropLease()
	return r.removeBackup(ctx, h.dir, h.name)
}

// ReadFile implements storage.BackupHandle.
func (h *handle) ReadFile(ctx context.Context, filename string) (io.ReadCloser, error) {
	if !h.readOnly {
		return nil, fmt.Errorf("dedup: read from %s/%s: %w", h.dir, h.name, storage.ErrWriteOnly)
	}
	if err := storage.ValidateFileName(filename); err != nil {
		return nil, err
	}
	r, err := h.repo(ctx)
	if err != nil {
		return nil, err
	}
	f, found, err := r.idx.File(h.dir, h.name, filename)
	if err == nil && !found && r.isStaged(h.dir, h.name, filename) {
		// Closed in a backup still running: commit it now.
		l := r.backupLock(h.dir, h.name)
		l.Lock()
		err = r.commitStaged(ctx, h.dir, h.name, true)
		l.Unlock()
		if err == nil {
			f, found, err = r.idx.File(h.dir, h.name, filename)
		}
	}
	if err != nil {
		return nil, asStorageErr(err)
	}
	if !found {
		return nil, fmt.Errorf("dedup: %s/%s: file %s: %w", h.dir, h.name, filename, storage.ErrNotFound)
	}
	return r.newReader(ctx, h, f), nil
}
