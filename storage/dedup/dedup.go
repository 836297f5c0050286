// Package dedup is the deduplicating storage.BackupStorage. Every file added
// to a backup is cut into content-defined chunks; each chunk is named by its
// keyed BLAKE3 hash, compressed with zstd and stored once, in pack files, in
// a repository on local disk (or on any chunkstore.Backend, such as S3,
// given in Options.Backend). A bbolt index maps chunks to packs and records
// every backup's files; a manifest object per ended backup makes the index
// rebuildable, and it is rebuilt when missing. PlanGC and ExecuteGC reclaim
// the space of removed backups while others keep running; Check verifies
// the repository; Stats and Files say what it holds.
//
// Importing the package registers it as "dedup" in storage.BackupStorageMap,
// with its repository at the flag -dedup_backup_storage_root, read whenever
// the storage opens (first use, and first use after Close). Library users
// call New instead.
//
// Repository layout under the root, or on Options.Backend:
//
//	config                     format version, chunker, BLAKE3 key, compression, pack size
//	data/<5 hex>/<pack id>     pack files, named by the time they were written
//	manifests/<dir>/<name>     one object per ended backup (<dir> path-escaped)
//	removed/<dir>/<name>@<t>   one per removed backup, so that its missing manifest is no damage
//	running/<dir>/<name>       one per backup in progress, naming its process's lease
//	leases/<random>            one per process with backups running
//	locks/<random>             the collection lock
//	condemned/<random>         packs a collection will delete (phase 1), or deleted (swept)
//
// Every process that opens the repository has an index cache of its own:
// in a local repository, the first of index/<host>/index.db, index-1.db,
// ... that no other process holds (see LocalCacheDir); with
// Options.Backend, the same under root/<repository id>. Sync brings it up to date from the objects: when the
// storage opens, before ListBackups, Check and Stats, when a backup starts
// and every LeaseTTL/4 while backups run, listing only what changed since
// the last sync (see package protocol).
//
// Guarantees. When a writer's Close returns nil, the file is complete and
// its chunks are handed to the store: it is staged, and readable (ReadFile
// of a staged file makes it durable first). When EndBackup returns nil,
// every file closed before it is durable and indexed, and the backup's
// manifest is durable: durability is paid once per backup, not per file,
// so that many small files fill packs and share one index commit. A pack a
// staged file needed that failed to write fails EndBackup, then and every
// time after: a backup never ends without a file whose Close succeeded.
// CopyFile adds a file by reference to chunks already stored, staged the
// same way. Writes go in the order pack, index, manifest, so a crash at any
// point loses nothing that had ended; backups still in progress when a
// process dies are dropped the next time its index cache opens, and their
// packs collected later. Within the process every method is safe for
// concurrent use.
//
// Any number of processes, on one host or many (over NFS, or on S3), use
// one repository at once: backups, restores, listings, removals and
// collections. Backups hold leases, and collections are two-phase (see
// package gc). A read-only mount is read through an index cache in the
// temporary directory; its writes fail with storage.ErrReadOnly.
package dedup

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
)

var rootFlag = flag.String("dedup_backup_storage_root", "", "repository directory of the dedup backup storage (created on first use if empty)")

func init() {
	storage.BackupStorageMap["dedup"] = &Storage{root: func() string { return *rootFlag }}
}

// Options configures a Storage. The zero value is a good default.
type Options struct {
	// Chunker, Compression and PackSize are used only when the repository
	// is created; an existing repository keeps the settings in its config.
	// Zero values select chunkstore's defaults.
	Chunker     chunkstore.ChunkerParams
	Compression chunkstore.Compression
	PackSize    int
	// NoDeltas creates the repository without deltas: every new chunk is
	// stored whole, even when it differs from a stored one in a few bytes
	// (see delta.go).
	NoDeltas bool

	// Secret (a password or a key file's contents) unlocks an encrypted
	// repository. A repository created with one is encrypted: every
	// object's contents are sealed with AES-256-GCM under keys derived from a random
	// master key, which a key slot that the secret opens wraps. One created
	// without is not, and Logf says so. Opening an encrypted repository
	// without its secret fails with storage.ErrKeyRequired, with a wrong one
	// with storage.ErrWrongKey. IMPORTANT: a repository whose every secret
	// is lost cannot be read by anyone.
	Secret chunkstore.Secret

	// Backend, if set, holds the repository's objects (config, packs,
	// manifests) instead of the directory root, which then holds only
	// index caches, apart by repository.
	Backend chunkstore.Backend

	// Workers is the number of goroutines hashing and compressing chunks;
	// default 2 × GOMAXPROCS, of which at most GOMAXPROCS compress at once.
	// More workers than cores keep the cores busy while some wait (for a
	// pack buffer, a lock, a base's read) and keep a stream's chunker
	// from waiting for a free worker.
	Workers int
	// ChunksInFlight bounds the chunks being hashed and compressed at once,
	// across all writers, and the runs of chunks (up to 1 MiB each)
	// prefetched at once across all readers; default 4 × Workers. With it,
	// memory is about
	//	(ChunksInFlight × 3 + files being written × 2) × max chunk size
	//	+ files being written × 1 MiB + 2 × pack size
	//	+ (ChunksInFlight + files being read) × 2 MiB
	// whatever the length of the streams.
	ChunksInFlight int

	// Logf, if set, is told in one line of what the storage repaired on
	// its own (an index found damaged, moved aside and rebuilt), and that a
	// repository it created is not encrypted.
	Logf func(format string, args ...any)

	// LeaseTTL is how long a lease lives unrenewed; default
	// protocol.DefaultLeaseTTL. IMPORTANT: every process of a repository, and
	// its collections, must use the same.
	LeaseTTL time.Duration
}

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if o.ChunksInFlight <= 0 {
		o.ChunksInFlight = 4 * o.Workers
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = protocol.DefaultLeaseTTL
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// Storage is the dedup BackupStorage. It opens its repository on first use
// and releases it on Close; the next use opens it again, and so does the
// next use of a handle from before Close, unless that handle's backup was
// in progress at Close (it fails with storage.ErrClosed).
type Storage struct {
	root func() string
	opts Options

	mu   sync.Mutex
	repo *repo // nil while closed
}

// New returns a storage on the repository at root, created on first use if
// root is missing or empty.
func New(root string, opts Options) *Storage {
	return &Storage{root: func() string { return root }, opts: opts}
}

// open returns the open repository, opening it if needed.
func (s *Storage) open(ctx context.Context) (*repo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repo != nil {
		return s.repo, nil
	}
	return s.openRepo(ctx, false)
}

// openWritable returns the open repository if this process may write it:
// not on a read-only mount, and not while another process holds a local
// repository's index (the errors wrap storage.ErrReadOnly and
// storage.ErrInUse).
func (s *Storage) openWritable(ctx context.Context) (*repo, error) {
	r, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.writable(); err != nil {
		return nil, err
	}
	return r, nil
}

// openSynced returns the open repository with its index brought up to
// date with what other processes wrote, by a full sync if asked.
func (s *Storage) openSynced(ctx context.Context, full bool) (*repo, error) {
	r, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.syncIndex(ctx, full); err != nil {
		return nil, err
	}
	return r, nil
}

// openRepo opens the repository, with a fresh index if asked; the caller
// holds s.mu.
func (s *Storage) openRepo(ctx context.Context, freshIndex bool) (*repo, error) {
	root := s.root()
	if root == "" {
		return nil, errors.New("dedup: no repository root (flag -dedup_backup_storage_root)")
	}
	r, err := openRepo(ctx, root, s.opts.withDefaults(), freshIndex)
	if err != nil {
		return nil, err
	}
	s.repo = r
	return r, nil
}

// Close implements storage.BackupStorage. It stops open writers (their Close
// returns an error, their files are not added) and releases the repository.
// Handles obtained before Close return errors wrapping storage.ErrClosed.
func (s *Storage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repo == nil {
		return nil
	}
	err := s.repo.close()
	s.repo = nil
	return err
}

// ListBackups implements storage.BackupStorage. Backups in progress are
// listed too; ReadFile serves their files whose writers have closed.
// ListBackups, Check and Stats first bring the index up to date, so they
// see what every process has ended or removed.
func (s *Storage) ListBackups(ctx context.Context, dir string) ([]storage.BackupHandle, error) {
	if err := storage.ValidateDir(dir); err != nil {
		return nil, err
	}
	r, err := s.openSynced(ctx, false)
	if err != nil {
		return nil, err
	}
	backups, err := r.backups(dir, false)
	if err != nil {
		return nil, asStorageErr(err)
	}
	out := make([]storage.BackupHandle, len(backups))
	for i, b := range backups {
		out[i] = &handle{s: s, r: r, dir: b.Dir, name: b.Name, readOnly: true}
	}
	return out, nil
}

// StartBackup implements storage.BackupStorage. It fails with
// storage.ErrExists also when another process has ended a backup of that
// name or runs one (of two processes starting one name at the same moment,
// one fails), and the backup holds this process's lease until EndBackup
// succeeds or AbortBackup is called.
// IMPORTANT: end or abort every backup you start; while one is left open,
// collections in every process keep what they condemned meanwhile.
func (s *Storage) StartBackup(ctx context.Context, dir, name string) (storage.BackupHandle, error) {
	if err := ValidateBackupName(dir, name); err != nil {
		return nil, err
	}
	r, err := s.openWritable(ctx)
	if err != nil {
		return nil, err
	}
	l, err := r.holdLease(ctx)
	if err != nil {
		return nil, asStorageErr(err)
	}
	started := time.Now()
	created, err := r.idx.StartBackup(dir, name, started)
	if err == nil && !created {
		err = fmt.Errorf("dedup: start %s/%s: %w", dir, name, storage.ErrExists)
	} else if err == nil {
		if err = r.publishStart(ctx, dir, name, l, started); err != nil {
			r.idx.DeleteBackup(dir, name)
		}
	}
	if err != nil {
		r.releaseLease(l)
		return nil, err
	}
	return &handle{s: s, r: r, dir: dir, name: name, lease: l}, nil
}

// ValidateBackupName checks a backup's directory and name against
// storage's name rules and against what every backend can hold; the error
// wraps storage.ErrInvalidName. StartBackup checks it; callers may check
// it before they have a storage, as dedupctl does before reading a stream.
func ValidateBackupName(dir, name string) error {
	if err := storage.ValidateBackupName(dir, name); err != nil {
		return err
	}
	if err := index.CheckManifestName(dir, name); err != nil {
		return fmt.Errorf("dedup: %w: %w", storage.ErrInvalidName, err)
	}
	return nil
}

// RemoveBackup implements storage.BackupStorage. It deletes the backup's
// manifest, then its index records; its chunks stay until a GC finds them
// unreferenced. Removing a backup that does not exist is not an error.
func (s *Storage) RemoveBackup(ctx context.Context, dir, name string) error {
	if err := storage.ValidateBackupName(dir, name); err != nil {
		return err
	}
	r, err := s.openWritable(ctx)
	if err != nil {
		return err
	}
	return asStorageErr(r.removeBackup(ctx, dir, name))
}

// Backups returns the backups in dir (every backup if dir is ""), in
// progress or ended, oldest start first, with their state and times. It
// first brings the index up to date.
func (s *Storage) Backups(ctx context.Context, dir string) ([]index.Backup, error) {
	if dir != "" {
		if err := storage.ValidateDir(dir); err != nil {
			return nil, err
		}
	}
	r, err := s.openSynced(ctx, false)
	if err != nil {
		return nil, err
	}
	backups, err := r.backups(dir, dir == "")
	if err != nil {
		return nil, asStorageErr(err)
	}
	slices.SortStableFunc(backups, func(a, b index.Backup) int { return a.Started.Compare(b.Started) })
	return backups, nil
}

// Files describes the committed files of a backup, with what each cost the
// repository; the error wraps storage.ErrNotFound if there is no such backup.
func (s *Storage) Files(ctx context.Context, dir, name string) ([]gc.FileStats, error) {
	if err := storage.ValidateBackupName(dir, name); err != nil {
		return nil, err
	}
	r, err := s.open(ctx)
	if err != nil {
		return nil, err
	}
	files, found, err := gc.BackupFiles(ctx, r.idx, dir, name)
	if err == nil && !found {
		err = fmt.Errorf("dedup: %s/%s: %w", dir, name, storage.ErrNotFound)
	}
	return files, asStorageErr(err)
}

// Check verifies the repository; see package check. Damage is in the
// report, not the error.
func (s *Storage) Check(ctx context.Context, opts check.Options) (check.Report, error) {
	r, err := s.openSynced(ctx, true)
	if err != nil {
		return check.Report{}, err
	}
	rep, err := check.Run(ctx, r.store, r.idx, opts)
	return rep, asStorageErr(err)
}

// StoredBytes returns the size of the packs the index knows of: with a
// reading before and after a backup, what the backup added. It costs one
// scan of the packs, where Stats reads every backup's chunk lists.
func (s *Storage) StoredBytes(ctx context.Context) (int64, error) {
	r, err := s.open(ctx)
	if err != nil {
		return 0, err
	}
	packs, err := r.idx.Packs()
	var n int64
	for _, p := range packs {
		n += p.Size
	}
	return n, asStorageErr(err)
}

// Stats returns what the repository holds and what each backup costs; see
// gc.Stats.
func (s *Storage) Stats(ctx context.Context) (gc.Stats, error) {
	r, err := s.openSynced(ctx, true)
	if err != nil {
		return gc.Stats{}, err
	}
	st, err := gc.ComputeStats(ctx, r.idx, r.store.Cipher())
	st.Encryption = r.store.Config().Encryption
	if err == nil {
		err = r.store.Backend().ListPartial(ctx, func(o chunkstore.ObjectInfo) error {
			st.Partials++
			st.PartialBytes += o.Size
			return nil
		})
	}
	return st, asStorageErr(err)
}
