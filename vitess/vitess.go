// Package vitess adapts the backup storages of dedupstore to the
// backupstorage interface of Vitess v24 (vitess.io/vitess/go/vt/mysqlctl/
// backupstorage). New adapts any storage.BackupStorage; importing the
// package registers "dedup" in Vitess's BackupStorageMap, configured by
// flags (see plugin.go).
//
// What the adapter bridges between the two interfaces:
//
//   - AddFile takes a size, a hint that dedup does not need: any value,
//     and -1 (unknown), is accepted.
//   - Handles embed Vitess's per-file error recorder. A writer whose Close
//     fails records the error under its file name, and EndBackup returns
//     what is recorded, so that no failed file goes unnoticed.
//   - Bytes written and read are metered into Params.Stats (operations
//     "File:Write" and "File:Read", as Vitess's file storage meters them),
//     and backups started, ended, aborted and removed are logged to
//     Params.Logger.
//   - WithParams returns a copy that shares the repository: a dedup
//     Storage is one per repository per process.
//   - Vitess calls EndBackup up to three times per backup and adds its
//     MANIFEST after the first; the storages of this project allow both.
//   - Close releases the repository unless something opened through the
//     storage or any of its copies is in use: a backup started and not yet
//     ended or aborted, or a file being written or read. Then Close does
//     nothing, and a later Close releases it. Vitess's incremental backups
//     close the registered storage while the backup is still being taken.
//   - A writer's Close, called again after it failed, fails at once with
//     the same error (Vitess retries a failed Close 20 times with backoff).
//
// Errors keep the sentinels of package storage (storage.ErrNotFound,
// storage.ErrExists, ...), for errors.Is.
package vitess

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/dedupstore/dedupstore/storage"
	"vitess.io/vitess/go/ioutil"
	"vitess.io/vitess/go/vt/mysqlctl/backupstats"
	"vitess.io/vitess/go/vt/mysqlctl/backupstorage"
	mysqlctlerrors "vitess.io/vitess/go/vt/mysqlctl/errors"
)

// New adapts s to Vitess's backupstorage.BackupStorage. Close of the
// result, or of any copy WithParams makes, closes s once nothing opened
// through them is in use.
func New(s storage.BackupStorage) backupstorage.BackupStorage {
	return newStorage(func() (storage.BackupStorage, error) { return s, nil })
}

func newStorage(open func() (storage.BackupStorage, error)) *Storage {
	return &Storage{repo: &repo{open: open}, params: backupstorage.NoParams()}
}

// Storage implements backupstorage.BackupStorage.
type Storage struct {
	repo   *repo
	params backupstorage.Params
}

// repo is the storage that a Storage and its copies share, and what of it
// is in use.
type repo struct {
	open func() (storage.BackupStorage, error)

	mu    sync.Mutex
	s     storage.BackupStorage // nil until first use
	inUse int                   // backups in progress, files open
}

// get returns the storage, resolving it on first use.
func (r *repo) get() (storage.BackupStorage, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil {
		s, err := r.open()
		if err != nil {
			return nil, err
		}
		r.s = s
	}
	return r.s, nil
}

func (r *repo) hold() {
	r.mu.Lock()
	r.inUse++
	r.mu.Unlock()
}

func (r *repo) release() {
	r.mu.Lock()
	r.inUse--
	r.mu.Unlock()
}

// WithParams implements backupstorage.BackupStorage: the copy logs to and
// meters into params, and shares the repository.
func (s *Storage) WithParams(params backupstorage.Params) backupstorage.BackupStorage {
	none := backupstorage.NoParams()
	if params.Logger == nil {
		params.Logger = none.Logger
	}
	if params.Stats == nil {
		params.Stats = none.Stats
	}
	return &Storage{repo: s.repo, params: params}
}

// ListBackups implements backupstorage.BackupStorage.
func (s *Storage) ListBackups(ctx context.Context, dir string) ([]backupstorage.BackupHandle, error) {
	bs, err := s.repo.get()
	if err != nil {
		return nil, err
	}
	bhs, err := bs.ListBackups(ctx, dir)
	if err != nil {
		return nil, err
	}
	out := make([]backupstorage.BackupHandle, len(bhs))
	for i, bh := range bhs {
		out[i] = &handle{s: s, bh: bh, readOnly: true}
	}
	return out, nil
}

// StartBackup implements backupstorage.BackupStorage.
func (s *Storage) StartBackup(ctx context.Context, dir, name string) (backupstorage.BackupHandle, error) {
	bs, err := s.repo.get()
	if err != nil {
		return nil, err
	}
	bh, err := bs.StartBackup(ctx, dir, name)
	if err != nil {
		return nil, err
	}
	s.repo.hold()
	s.params.Logger.Infof("dedup: started backup %s/%s", dir, name)
	return &handle{s: s, bh: bh, inProgress: true}, nil
}

// RemoveBackup implements backupstorage.BackupStorage.
func (s *Storage) RemoveBackup(ctx context.Context, dir, name string) error {
	bs, err := s.repo.get()
	if err != nil {
		return err
	}
	if err := bs.RemoveBackup(ctx, dir, name); err != nil {
		return err
	}
	s.params.Logger.Infof("dedup: removed backup %s/%s", dir, name)
	return nil
}

// Close implements backupstorage.BackupStorage. It closes the storage
// unless something opened through it or its copies is in use; then it does
// nothing, and a later Close closes it. The storage reopens on next use.
func (s *Storage) Close() error {
	r := s.repo
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil || r.inUse > 0 {
		return nil
	}
	return r.s.Close()
}

// handle implements backupstorage.BackupHandle.
type handle struct {
	s        *Storage
	bh       storage.BackupHandle
	readOnly bool
	mysqlctlerrors.PerFileErrorRecorder

	mu         sync.Mutex
	inProgress bool // holds the repository: started, or a file added after EndBackup
}

func (h *handle) Directory() string { return h.bh.Directory() }
func (h *handle) Name() string      { return h.bh.Name() }

// setInProgress marks the backup in progress or not, holding or releasing
// the repository on a change.
func (h *handle) setInProgress(on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inProgress == on {
		return
	}
	h.inProgress = on
	if on {
		h.s.repo.hold()
	} else {
		h.s.repo.release()
	}
}

// AddFile implements backupstorage.BackupHandle. filesize is a hint dedup
// does not need.
func (h *handle) AddFile(ctx context.Context, filename string, filesize int64) (io.WriteCloser, error) {
	if !h.readOnly {
		h.setInProgress(true)
	}
	w, err := h.bh.AddFile(ctx, filename)
	if err != nil {
		return nil, err
	}
	h.s.repo.hold()
	stat := h.s.params.Stats.Scope(backupstats.Operation("File:Write"))
	return &writer{MeteredWriteCloser: ioutil.NewMeteredWriteCloser(w, stat.TimedIncrementBytes), h: h, name: filename}, nil
}

// EndBackup implements backupstorage.BackupHandle: it ends the backup with
// every file closed so far, and returns the errors recorded on the handle.
func (h *handle) EndBackup(ctx context.Context) error {
	err := h.finished("ended", h.bh.EndBackup(ctx))
	if h.readOnly {
		return err
	}
	return errors.Join(err, h.Error())
}

// AbortBackup implements backupstorage.BackupHandle.
func (h *handle) AbortBackup(ctx context.Context) error {
	return h.finished("aborted", h.bh.AbortBackup(ctx))
}

// finished ends what a started backup holds once EndBackup or AbortBackup
// returned err, and logs it.
func (h *handle) finished(what string, err error) error {
	if h.readOnly {
		return err
	}
	h.setInProgress(false)
	if err == nil {
		h.s.params.Logger.Infof("dedup: %s backup %s/%s", what, h.Directory(), h.Name())
	}
	return err
}

// ReadFile implements backupstorage.BackupHandle.
func (h *handle) ReadFile(ctx context.Context, filename string) (io.ReadCloser, error) {
	rc, err := h.bh.ReadFile(ctx, filename)
	if err != nil {
		return nil, err
	}
	h.s.repo.hold()
	stat := h.s.params.Stats.Scope(backupstats.Operation("File:Read"))
	return &reader{MeteredReadCloser: ioutil.NewMeteredReadCloser(rc, stat.TimedIncrementBytes), repo: h.s.repo}, nil
}

// writer holds the repository until its first Close, and records a failed
// Close on its handle.
type writer struct {
	ioutil.MeteredWriteCloser
	h      *handle
	name   string
	closed sync.Once
}

func (w *writer) Close() error {
	err := w.MeteredWriteCloser.Close() // again: the first Close's result
	w.closed.Do(func() {
		w.h.RecordError(w.name, err)
		w.h.s.repo.release()
	})
	return err
}

// reader holds the repository until its first Close.
type reader struct {
	ioutil.MeteredReadCloser
	repo   *repo
	closed sync.Once
}

func (r *reader) Close() error {
	err := r.MeteredReadCloser.Close()
	r.closed.Do(r.repo.release)
	return err
}
