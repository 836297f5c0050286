package dedup

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/dedupstore/dedupstore/storage"
)

// handle is a BackupHandle: read-write from StartBackup, read-only from
// ListBackups.
type handle struct {
	r         *repo
	dir, name string
	readOnly  bool

	mu    sync.Mutex
	lease *lease // held from StartBackup until EndBackup succeeds or AbortBackup
}

// dropLease releases the handle's lease, once.
func (h *handle) dropLease() {
	h.mu.Lock()
	l := h.lease
	h.lease = nil
	h.mu.Unlock()
	h.r.releaseLease(l)
}

func (h *handle) Directory() string { return h.dir }
func (h *handle) Name() string      { return h.name }

func (h *handle) writable(op string) error {
	if h.readOnly {
		return fmt.Errorf("dedup: %s %s/%s: %w", op, h.dir, h.name, storage.ErrReadOnly)
	}
	return h.r.alive()
}

// AddFile implements storage.BackupHandle. The file becomes readable, and
// replaces any earlier file of the same name, when the writer's Close
// returns nil. Adding a file after EndBackup is allowed: its Close rewrites
// the manifest.
func (h *handle) AddFile(ctx context.Context, filename string) (io.WriteCloser, error) {
	if err := h.writable("add file to"); err != nil {
		return nil, err
	}
	if err := storage.ValidateFileName(filename); err != nil {
		return nil, err
	}
	if _, found, err := h.r.idx.Backup(h.dir, h.name); err != nil {
		return nil, err
	} else if !found {
		return nil, fmt.Errorf("dedup: add file to %s/%s: %w", h.dir, h.name, storage.ErrAborted)
	}
	return h.r.newWriter(ctx, h.dir, h.name, filename)
}

// EndBackup implements storage.BackupHandle. It may be called again; each
// call rewrites the manifest with the files committed so far.
func (h *handle) EndBackup(ctx context.Context) error {
	if err := h.writable("end"); err != nil {
		return err
	}
	h.mu.Lock()
	l := h.lease
	h.mu.Unlock()
	if err := h.r.endBackup(ctx, h.dir, h.name, l); err != nil {
		return err
	}
	h.dropLease()
	return nil
}

// AbortBackup implements storage.BackupHandle. The backup disappears; writers
// still open on it fail at Close with storage.ErrAborted.
func (h *handle) AbortBackup(ctx context.Context) error {
	if err := h.writable("abort"); err != nil {
		return err
	}
	defer h.dropLease()
	return h.r.removeBackup(ctx, h.dir, h.name)
}

// ReadFile implements storage.BackupHandle.
func (h *handle) ReadFile(ctx context.Context, filename string) (io.ReadCloser, error) {
	if !h.readOnly {
		return nil, fmt.Errorf("dedup: read from %s/%s: %w", h.dir, h.name, storage.ErrWriteOnly)
	}
	if err := storage.ValidateFileName(filename); err != nil {
		return nil, err
	}
	if err := h.r.alive(); err != nil {
		return nil, err
	}
	f, found, err := h.r.idx.File(h.dir, h.name, filename)
	if err == nil && !found && h.r.isStaged(h.dir, h.name, filename) {
		// Closed in a backup still running: commit it now.
		l := h.r.backupLock(h.dir, h.name)
		l.Lock()
		err = h.r.commitStaged(ctx, h.dir, h.name, true)
		l.Unlock()
		if err == nil {
			f, found, err = h.r.idx.File(h.dir, h.name, filename)
		}
	}
	if err != nil {
		return nil, asStorageErr(err)
	}
	if !found {
		return nil, fmt.Errorf("dedup: %s/%s: file %s: %w", h.dir, h.name, filename, storage.ErrNotFound)
	}
	return h.r.newReader(ctx, h, f), nil
}
