// Package storage is the plug-in contract between backup agents and backup
// stores, as in Vitess's backupstorage package: BackupStorage, BackupHandle,
// the registry BackupStorageMap, the flag backup_storage_implementation and
// GetBackupStorage. Implementations live in sub-packages (storage/dedup,
// storage/file) and register themselves when imported.
//
// Beyond the seed's interface this package defines the errors every
// implementation returns, for callers to match with errors.Is, and the name
// rules every implementation enforces (ValidateBackupName, ValidateFileName).
package storage

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

var (
	// BackupStorageImplementation is the implementation to use
	// for BackupStorage. Exported for test purposes.
	BackupStorageImplementation = flag.String("backup_storage_implementation", "", "which implementation to use for the backup storage feature")
)

// BackupHandle describes an individual backup.
type BackupHandle interface {
	// Directory is the location of the backup. Will contain keyspace/shard.
	Directory() string

	// Name is the individual name of the backup. Will contain
	// tabletAlias-timestamp.
	Name() string

	// AddFile opens a new file to be added to the backup.
	// Only works for read-write backups (created by StartBackup).
	// filename follows the name rules (ValidateFileName): letters,
	// digits, '.', '_' and '-', and never "." or "..".
	// It should be thread safe, it is possible to call AddFile in
	// multiple go routines once a backup has been started.
	// The context is valid for the duration of the writes, until the
	// WriteCloser is closed.
	AddFile(ctx context.Context, filename string) (io.WriteCloser, error)

	// EndBackup stops and closes a backup. The contents should be kept.
	// Only works for read-write backups (created by StartBackup).
	EndBackup(ctx context.Context) error

	// AbortBackup stops a backup, and removes the contents that
	// have been copied already. It is called if an error occurs
	// while the backup is being taken, and the backup cannot be finished.
	// Only works for read-write backups (created by StartBackup).
	AbortBackup(ctx context.Context) error

	// ReadFile starts reading a file from a backup.
	// Only works for read-only backups (created by ListBackups).
	// The context is valid for the duration of the reads, until the
	// ReadCloser is closed.
	ReadFile(ctx context.Context, filename string) (io.ReadCloser, error)
}

// BackupStorage is the interface to the storage system
type BackupStorage interface {
	// ListBackups returns all the backups in a directory.  The
	// returned backups are read-only (ReadFile can be called, but
	// AddFile/EndBackup/AbortBackup cannot).
	// The backups are string-sorted by Name(), ascending (ends up
	// being the oldest backup first).
	ListBackups(ctx context.Context, dir string) ([]BackupHandle, error)

	// StartBackup creates a new backup with the given name.  If a
	// backup with the same name already exists, it's an error.
	// The returned backup is read-write
	// (AddFile/EndBackup/AbortBackup can all be called, not
	// ReadFile). The provided context is only valid for that
	// function, and should not be stored by the implementation.
	StartBackup(ctx context.Context, dir, name string) (BackupHandle, error)

	// RemoveBackup removes all the data associated with a backup.
	// It will not appear in ListBackups after RemoveBackup succeeds.
	RemoveBackup(ctx context.Context, dir, name string) error

	// Close frees resources associated with an active backup
	// session, such as closing connections. Implementations of
	// BackupStorage must support being reused after Close() is called.
	Close() error
}

// BackupStorageMap contains the registered implementations for BackupStorage
var BackupStorageMap = make(map[string]BackupStorage)

// GetBackupStorage returns the current BackupStorage implementation.
// Should be called after flags have been initialized.
// When all operations are done, call BackupStorage.Close() to free resources.
func GetBackupStorage() (BackupStorage, error) {
	bs, ok := BackupStorageMap[*BackupStorageImplementation]
	if !ok {
		return nil, fmt.Errorf("no registered implementation of BackupStorage named %q (flag -backup_storage_implementation)", *BackupStorageImplementation)
	}
	return bs, nil
}

// Errors every implementation returns, wrapped with context. Match them with
// errors.Is.
var (
	// ErrNotFound: the backup or file does not exist (or is not yet
	// readable: a file whose writer has not closed).
	ErrNotFound = errors.New("not found")
	// ErrExists: StartBackup of a name that is already taken.
	ErrExists = errors.New("backup already exists")
	// ErrReadOnly: AddFile, EndBackup or AbortBackup on a handle from
	// ListBackups.
	ErrReadOnly = errors.New("backup handle is read-only")
	// ErrWriteOnly: ReadFile on a handle from StartBackup.
	ErrWriteOnly = errors.New("backup handle is read-write; list the backup to read it")
	// ErrInvalidName: a directory, backup name or file name that breaks the
	// name rules.
	ErrInvalidName = errors.New("invalid name")
	// ErrCorrupt: stored data does not match its hash or format. No wrong
	// bytes are ever returned in its place.
	ErrCorrupt = errors.New("corrupt data")
	// ErrKeyRequired: the repository is encrypted, and no password or key
	// file was given to open it.
	ErrKeyRequired = errors.New("key required")
	// ErrWrongKey: the password or key file given opens none of the
	// encrypted repository's keys. No data is read with it.
	ErrWrongKey = errors.New("wrong key")
	// ErrInUse: another process holds the repository.
	ErrInUse = errors.New("repository in use by another process")
	// ErrClosed: a handle or writer obtained before BackupStorage.Close was
	// used after it. Get new handles after reopening.
	ErrClosed = errors.New("backup storage was closed")
	// ErrAborted: the backup was aborted or removed while a handle or writer
	// was still using it.
	ErrAborted = errors.New("backup aborted or removed")
)
