package dedup

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
)

// repo is an open repository: the chunk store, the index, and the goroutines
// that hash, compress and pack chunks.
type repo struct {
	store *chunkstore.Store
	// idx is this process's index cache of the repository, brought up to
	// date from the objects by sync.
	idx  *index.DB
	opts Options
	// readOnly, if set, is why this process may not write the repository
	// (a read-only mount): every write fails with it.
	readOnly error
	// rebuilt is what the index rebuild at open found, nil if there was none.
	rebuilt *RebuildResult

	ctx    context.Context // cancelled by close
	cancel context.CancelFunc

	jobs        chan *job     // chunks for the workers
	slots       chan struct{} // one per chunk in flight in writers
	readSlots   chan struct{} // one per run prefetched beyond each reader's first
	chunkBufs   sync.Pool     // *[]byte of the max chunk size, for chunks in flight
	runBufs     sync.Pool     // *[]byte of max(runBytes, max chunk size), for reads in flight
	chunkerBufs sync.Pool     // *[]byte of the chunker's scratch size, one per writer
	feedBlocks  sync.Pool     // *[]byte of feedBlock bytes, for the writers' feeds
	uploads     chan *pack    // sealed packs for the uploader
	// builders holds the pack builders not in use, nil until first needed.
	// Its capacity bounds the packs in memory: one being filled while
	// another is written.
	builders chan *chunkstore.PackBuilder
	// encoders holds the workers' encoders not in use, nil until first
	// needed: at most GOMAXPROCS chunks are compressed at once.
	encoders chan *encoder

	mu       sync.Mutex
	pending  map[chunkstore.ID]*pack    // accepted chunks whose pack is not yet indexed
	cur      *pack                      // the pack being filled, or nil
	claims   map[chunkstore.ID]int      // chunks on writers' unsaved list segments
	gcClaims map[chunkstore.ID]struct{} // while a collection runs: chunks claimed or released since it began

	gcMu sync.Mutex // held from a collection's plan to its end

	syncMu sync.Mutex   // one sync at a time
	syncs  atomic.Int64 // syncs completed
	// synced is when the last sync that completed began, under syncMu;
	// zero before the first. The index records it only when a minute
	// later than what it holds: an older record costs only a longer
	// listing after a crash, and each record is an fsync.
	synced time.Time

	foreignMu sync.Mutex
	foreign   []index.Backup // backups in progress in other processes, as the last sync found them
	// markers are the markers of backups in progress the last sync read,
	// under syncMu.
	markers map[markerKey]index.Running

	leaseMu sync.Mutex
	lease   *lease              // the lease new backups take, nil if none
	leases  map[*lease]struct{} // every lease held

	backupLocks [64]sync.Mutex // serialize staging, manifest writes and removal per backup

	stageMu sync.Mutex
	staged  map[string]*stage // by stageKey: closed files not yet committed
	seed    maphash.Seed

	writers sync.WaitGroup // running writer goroutines
	workers sync.WaitGroup // workers and the uploader
}

// packsInMemory is how many packs may be filled or written at once. Two
// keep a 4 x 1 GiB ingest at 97 MiB of peak heap (47 MiB live); three
// measured 127 MiB (63 MiB live) for 16 % more speed on incompressible
// parallel streams, too close to the 128 MiB budget.
const packsInMemory = 2

// pack is a pack being filled, sealed, or written.
type pack struct {
	b    *chunkstore.PackBuilder
	done chan struct{} // closed once written and indexed, or failed
	err  error         // set before done is closed
}

// openRepo opens the repository at root; with fresh, its index is thrown
// away and rebuilt, as it is when opening finds it damaged.
func openRepo(ctx context.Context, root string, opts Options, fresh bool) (*repo, error) {
	r, err := openRepoIndex(ctx, root, opts, fresh)
	if errors.Is(err, index.ErrDamaged) && !fresh {
		opts.Logf("%v: rebuilding it from the repository", err)
		r, err = openRepoIndex(ctx, root, opts, true)
	}
	return r, err
}

func openRepoIndex(ctx context.Context, root string, opts Options, fresh bool) (*repo, error) {
	store, created, err := openStore(ctx, root, opts)
	if err != nil {
		return nil, fmt.Errorf("dedup: open repository %s: %w", root, asStorageErr(err))
	}
	var readOnly error
	dir := cacheDir(root, store.Config(), opts)
	idx, err := openCache(dir, fresh, opts.Logf)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		// A read-only mount or snapshot: read it through an index cache
		// of this user's, and write nothing.
		readOnly = fmt.Errorf("dedup: %s cannot be written (%v): %w", dir, err, storage.ErrReadOnly)
		tmp := cacheDir(filepath.Join(os.TempDir(), fmt.Sprintf("dedupstore-%d", os.Getuid())), store.Config(), Options{Backend: store.Backend()})
		opts.Logf("dedup: %s cannot be written (%v): reading through an index cache in %s, without writing", dir, err, tmp)
		idx, err = openCache(tmp, fresh, opts.Logf)
	}
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("dedup: open repository %s: %w", root, asStorageErr(err))
	}
	r := &repo{
		store:     store,
		idx:       idx,
		readOnly:  readOnly,
		opts:      opts,
		jobs:      make(chan *job),
		slots:     make(chan struct{}, opts.ChunksInFlight),
		readSlots: make(chan struct{}, opts.ChunksInFlight),
		uploads:   make(chan *pack),
		builders:  make(chan *chunkstore.PackBuilder, packsInMemory),
		encoders:  make(chan *encoder, min(opts.Workers, runtime.GOMAXPROCS(0))),
		pending:   map[chunkstore.ID]*pack{},
		claims:    map[chunkstore.ID]int{},
		leases:    map[*lease]struct{}{},
		staged:    map[string]*stage{},
		seed:      maphash.MakeSeed(),
	}
	// On a backend of the caller's (object storage), each read is a
	// request: the bases of deltas are read in runs, as files are.
	baseRun := 0
	if opts.Backend != nil {
		baseRun = runBytes
	}
	store.SetBaseLocator(r.locateBase, baseRun)
	params := store.Config().Chunker
	r.chunkBufs.New = func() any { b := make([]byte, params.MaxSize); return &b }
	r.runBufs.New = func() any { b := make([]byte, max(runBytes, params.MaxSize)); return &b }
	r.chunkerBufs.New = func() any { b := make([]byte, params.BufferSize()); return &b }
	r.feedBlocks.New = func() any { b := make([]byte, feedBlock); return &b }
	for range packsInMemory {
		r.builders <- nil
	}
	for range cap(r.encoders) {
		r.encoders <- nil
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	rebuilt, err := r.ensureIndex(ctx, created)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("dedup: open repository %s: %w", root, err)
	}
	if err := r.recover(ctx); err != nil {
		r.close()
		return nil, fmt.Errorf("dedup: open repository %s: %w", root, err)
	}
	if !created && !rebuilt {
		if err := r.syncIndex(ctx, false); err != nil {
			r.close()
			return nil, fmt.Errorf("dedup: open repository %s: %w", root, err)
		}
	}
	for range opts.Workers {
		r.workers.Add(1)
		go r.worker()
	}
	r.workers.Add(1)
	go r.uploader()
	return r, nil
}

// backend is where the repository's objects are: Options.Backend, or root.
func (o Options) backend(root string) chunkstore.Backend {
	if o.Backend != nil {
		return o.Backend
	}
	return local.New(root)
}

// openStore opens the repository's chunk store, creating the repository if
// its backend holds nothing. Of processes creating one repository at once,
// one creates it and the others use its config.
func openStore(ctx context.Context, root string, opts Options) (store *chunkstore.Store, created bool, err error) {
	backend := opts.backend(root)
	store, err = chunkstore.Open(ctx, backend, opts.Secret)
	if !errors.Is(err, chunkstore.ErrNotExist) {
		return store, false, keyError(err)
	}
	if store, err = createRepo(ctx, root, backend, opts); err == nil {
		return store, true, nil
	}
	// Another process may have created it meanwhile: use its config.
	if store, oerr := chunkstore.Open(ctx, backend, opts.Secret); oerr == nil {
		return store, false, nil
	}
	return nil, false, keyError(err)
}

// keyError wraps chunkstore's errors about keys in storage's sentinels.
func keyError(err error) error {
	switch {
	case errors.Is(err, chunkstore.ErrKeyRequired):
		return fmt.Errorf("%w: %w (pass its password or key file)", storage.ErrKeyRequired, err)
	case errors.Is(err, chunkstore.ErrWrongKey):
		return fmt.Errorf("%w: %w", storage.ErrWrongKey, err)
	}
	return err
}

// createRepo writes the config of a new repository, whose objects must be
// missing or empty: dedup never writes into a directory (or a bucket
// prefix) it does not own. It fails with an error wrapping
// chunkstore.ErrExist if the repository exists.
func createRepo(ctx context.Context, root string, backend chunkstore.Backend, opts Options) (*chunkstore.Store, error) {
	// Backends do not list temporary files, which is what a creation that
	// crashed leaves.
	err := backend.List(ctx, "", "", func(o chunkstore.ObjectInfo) error {
		if o.Name == chunkstore.ConfigName {
			return fmt.Errorf("%s: %w", root, chunkstore.ErrExist)
		}
		return fmt.Errorf("%s is not empty and has no config (it holds %s): not a dedupstore repository", root, o.Name)
	})
	if err != nil {
		return nil, err
	}
	cfg, err := chunkstore.NewConfig(opts.Chunker, opts.Compression, opts.PackSize)
	if err != nil {
		return nil, err
	}
	cfg.Deltas = !opts.NoDeltas
	if !opts.Secret.Empty() {
		cfg.Encryption = chunkstore.EncryptionAESGCM
	}
	store, err := chunkstore.Create(ctx, backend, cfg, opts.Secret)
	if err == nil && opts.Secret.Empty() {
		opts.Logf("created repository %s unencrypted (no secret in its options): its objects are stored in plain", root)
	}
	return store, err
}

// Init creates a repository at root (on Options.Backend, if set) with the
// settings in opts, encrypted if opts.Secret is set, and returns its
// config. It fails with an error wrapping chunkstore.ErrExist if one
// exists, also when another process creates it at the same moment.
func Init(ctx context.Context, root string, opts Options) (chunkstore.Config, error) {
	store, err := createRepo(ctx, root, opts.backend(root), opts.withDefaults())
	if err != nil {
		return chunkstore.Config{}, fmt.Errorf("dedup: create repository %s: %w", root, err)
	}
	defer store.Close()
	return store.Config(), nil
}

// openIndex opens the index at path. A damaged index is moved aside to
// path.damaged (replacing an older one), and logged; with fresh, an intact
// one is deleted. Either way a new, empty index takes its place, which
// ensureIndex rebuilds.
func openIndex(path string, timeout time.Duration, fresh bool, logf func(string, ...any)) (*index.DB, error) {
	idx, err := index.Open(path, timeout)
	switch {
	case err == nil && !fresh:
		return idx, nil
	case err == nil:
		idx.Close()
		err = os.Remove(path)
	case errors.Is(err, index.ErrDamaged):
		logf("%v: moved aside to %s.damaged; rebuilding it from the repository", err, path)
		err = os.Rename(path, path+".damaged")
	default:
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("dedup: replace the index: %w", err)
	}
	return index.Open(path, timeout)
}

// ensureIndex makes the index ready: a new repository's empty one as it is,
// any other that is not ready (new, damaged and replaced, or its rebuild
// interrupted) rebuilt from the repository, with what the rebuild found in
// r.rebuilt.
func (r *repo) ensureIndex(ctx context.Context, created bool) (rebuilt bool, err error) {
	ready, err := r.idx.Ready()
	if err != nil || ready {
		return false, err
	}
	if created {
		return false, r.idx.SetReady(true)
	}
	res, err := r.rebuildIndex(ctx)
	r.rebuilt = &res
	return err == nil, err
}

// recover undoes what a crashed process left half done in this index
// cache: chunk lists of writers that never closed, and backups that never
// ended. Their chunks become garbage for GC. A backup whose manifest was
// written (the crash came between writing it and marking the backup ended)
// is whole, and other processes may be reading it: it is marked ended. What
// it cannot undo now (a full disk, a read-only mount) it logs and leaves
// for the next open: it never keeps healthy backups from being read.
func (r *repo) recover(ctx context.Context) error {
	if r.readOnly != nil {
		return nil // what is half done belongs to the process that writes
	}
	if _, err := r.idx.DropOpenLists(); errors.Is(err, index.ErrDamaged) {
		return err
	} else if err != nil {
		r.opts.Logf("dedup: could not drop the chunk lists of writers a crashed process left (retried at the next open): %v", err)
	}
	backups, err := r.idx.Backups("", true)
	if err != nil {
		return err
	}
	for _, b := range backups {
		if b.State != index.InProgress {
			continue
		}
		if err := r.recoverBackup(ctx, b); errors.Is(err, index.ErrDamaged) {
			return err
		} else if err != nil {
			r.opts.Logf("dedup: could not settle backup %s/%s, left in progress by a crashed process (retried at the next open): %v", b.Dir, b.Name, err)
		}
	}
	return nil
}

// recoverBackup settles backup b, which a crashed process left in progress
// in this index cache. If its manifest was written (the crash came between
// writing it and marking the backup ended), the backup is whole, and other
// processes may be reading it: it is marked ended. Otherwise the cache
// forgets it, and its chunks become garbage. Its marker, if still there
// (the same start time), names the crashed process's lease: holding the
// cache's file lock proves that process dead, so its lease is deleted, and
// the marker is passed over at once and its name free; the marker itself
// is left for the takeover or a collection, as the name may be another
// process's at any moment.
func (r *repo) recoverBackup(ctx context.Context, b index.Backup) error {
	l := r.backupLock(b.Dir, b.Name)
	l.Lock()
	defer l.Unlock()
	backend := r.store.Backend()
	if m, err := index.ReadRunning(ctx, backend, index.RunningName(b.Dir, b.Name)); err == nil && m.Started.Equal(b.Started) && strings.HasPrefix(m.Lease, protocol.LeasePrefix) {
		if err := backend.Delete(ctx, m.Lease); err != nil {
			return err
		}
	} else if err != nil && !errors.Is(err, chunkstore.ErrNotExist) {
		return err
	}
	rc, err := backend.Get(ctx, index.ManifestName(b.Dir, b.Name), 0, -1)
	if errors.Is(err, chunkstore.ErrNotExist) {
		return r.idx.DeleteBackup(b.Dir, b.Name)
	}
	if err != nil {
		return err
	}
	m, err := index.DecodeManifest(rc)
	rc.Close()
	if err != nil {
		return err
	}
	if !m.Backup.Started.Equal(b.Started) { // another process's backup of that name
		return r.idx.DeleteBackup(b.Dir, b.Name)
	}
	_, err = r.idx.EndBackup(b.Dir, b.Name, m.Backup.Ended)
	return err
}

// close stops writers, workers and the uploader and releases the repository.
// Packs not yet written are dropped: no committed file refers to them.
func (r *repo) close() error {
	r.cancel()
	r.writers.Wait()
	r.workers.Wait()
	r.closeEncoders()
	r.stopLeases()
	r.store.Close()
	if r.opts.Backend == nil { // the repository's directory, whose backend it made
		r.store.RawBackend().(*local.Backend).Close()
	}
	return r.idx.Close()
}

// writable returns r.readOnly, or an error wrapping storage.ErrClosed once
// the repo is closed.
func (r *repo) writable() error {
	if r.readOnly != nil {
		return r.readOnly
	}
	return r.alive()
}

// alive returns an error wrapping storage.ErrClosed once the repo is closed.
func (r *repo) alive() error {
	if r.ctx.Err() != nil {
		return fmt.Errorf("dedup: %w", storage.ErrClosed)
	}
	return nil
}

func (r *repo) backupLock(dir, name string) *sync.Mutex {
	return &r.backupLocks[maphash.String(r.seed, dir+"\x00"+name)%uint64(len(r.backupLocks))]
}

// endBackup commits the backup's staged files, writes its manifest, then
// marks it ended. It runs at EndBackup and again whenever a file is
// committed to an ended backup, so the manifest always lists every
// committed file.
//
// It refuses, with storage.ErrAborted, to write the
// manifest once the lease the caller's chunk references depend on is lost.
func (r *repo) endBackup(ctx context.Context, dir, name string, ls *lease) error {
	l := r.backupLock(dir, name)
	l.Lock()
	defer l.Unlock()
	if err := ls.valid(); err != nil {
		return fmt.Errorf("dedup: end %s/%s: %w", dir, name, err)
	}
	if _, found, err := r.idx.Backup(dir, name); err != nil {
		return err
	} else if !found {
		return fmt.Errorf("dedup: end %s/%s: %w", dir, name, storage.ErrAborted)
	}
	if err := r.commitStaged(ctx, dir, name, true); err != nil {
		return err
	}
	now := time.Now()
	if err := r.putManifest(ctx, dir, name, now); err != nil {
		return fmt.Errorf("dedup: end %s/%s: %w", dir, name, err)
	}
	found, err := r.idx.EndBackup(dir, name, now)
	if err != nil {
		return err
	}
	if !found { // removed while the manifest was written
		return fmt.Errorf("dedup: end %s/%s: %w", dir, name, storage.ErrAborted)
	}
	// The manifest says it ended; a marker left by a failed delete is
	// passed over for it.
	r.store.Backend().Delete(ctx, index.RunningName(dir, name))
	return nil
}

// putManifest stores the manifest of a backup as the index holds it,
// stamped as ended at ended, streaming it from the index.
func (r *repo) putManifest(ctx context.Context, dir, name string, ended time.Time) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(r.idx.WriteManifest(pw, dir, name, ended)) }()
	err := r.store.Backend().Put(ctx, index.ManifestName(dir, name), pr)
	pr.CloseWithError(errors.New("manifest not consumed")) // unblocks the writer if Put failed early
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// removeBackup records the removal of a backup, then deletes its manifest,
// then its index records. The record tells other processes' syncs that the
// manifest is gone on purpose.
func (r *repo) removeBackup(ctx context.Context, dir, name string) error {
	l := r.backupLock(dir, name)
	l.Lock()
	defer l.Unlock()
	b, found, err := r.idx.Backup(dir, name)
	if err != nil {
		return err
	}
	if found {
		if err := r.store.Backend().Put(ctx, index.RemovedName(dir, name, b.Started), strings.NewReader(time.Now().UTC().Format(time.RFC3339))); err != nil {
			return fmt.Errorf("dedup: remove %s/%s: %w", dir, name, err)
		}
	}
	for _, obj := range []string{index.ManifestName(dir, name), index.RunningName(dir, name)} {
		if err := r.store.Backend().Delete(ctx, obj); err != nil {
			return fmt.Errorf("dedup: remove %s/%s: %w", dir, name, err)
		}
	}
	if err := r.idx.DeleteBackup(dir, name); err != nil {
		return fmt.Errorf("dedup: remove %s/%s: %w", dir, name, err)
	}
	r.dropStage(dir, name)
	if err := r.idx.ClearDamaged(index.ManifestName(dir, name)); err != nil { // removed with its backup
		return fmt.Errorf("dedup: remove %s/%s: %w", dir, name, err)
	}
	return nil
}

// asStorageErr adds the storage sentinel matching an error of the lower
// layers, so callers need only know package storage.
func asStorageErr(err error) error {
	switch {
	case errors.Is(err, chunkstore.ErrCorrupt), errors.Is(err, gc.ErrDamaged):
		return fmt.Errorf("%w: %w", storage.ErrCorrupt, err)
	case errors.Is(err, index.ErrDamaged):
		return fmt.Errorf("%w: %w (it is derived data: reopening the repository, or dedupctl index rebuild, replaces it)", storage.ErrCorrupt, err)
	case errors.Is(err, index.ErrInUse), errors.Is(err, protocol.ErrLocked):
		return fmt.Errorf("%w: %w", storage.ErrInUse, err)
	}
	return err
}
