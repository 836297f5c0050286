package dedup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
)

// Many processes, on one host or many, use one repository at once. Each
// has an index cache of its own, which sync brings up to date from the
// objects; backups hold leases, and collections are two-phase: see package
// gc for the protocol and why it is safe.

// maxCaches is how many processes on one host can use one repository at
// once with the same cache directory, each with its own index.
const maxCaches = 32

// cacheDir is the directory of the index caches of the repository at root:
// root/index/<host name> for a repository in a local directory, so that
// hosts sharing it over NFS never share a cache (whatever their file
// locks and clocks do), and root/<repository id> for one on
// Options.Backend, so that one root can hold the caches of many.
func cacheDir(root string, cfg chunkstore.Config, opts Options) string {
	if opts.Backend == nil {
		return LocalCacheDir(root)
	}
	sum := sha256.Sum256(cfg.Key)
	return filepath.Join(root, hex.EncodeToString(sum[:8]))
}

// LocalCacheDir is where this host keeps its index caches (index.db,
// index-1.db, ...) of the repository in the local directory root:
// root/index/<host name, path-escaped>.
func LocalCacheDir(root string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return filepath.Join(root, "index", url.PathEscape(host))
}

// openCache opens the first of dir/index.db, index-1.db, ... that no other
// process holds, as openIndex opens it.
func openCache(dir string, fresh bool, logf func(string, ...any)) (*index.DB, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i := range maxCaches {
		name := "index.db"
		if i > 0 {
			name = fmt.Sprintf("index-%d.db", i)
		}
		idx, err := openIndex(filepath.Join(dir, name), 10*time.Millisecond, fresh, logf)
		if !errors.Is(err, index.ErrInUse) {
			return idx, err
		}
	}
	return nil, fmt.Errorf("all %d index caches in %s are in use: %w", maxCaches, dir, index.ErrInUse)
}

// lease is one protocol.Heartbeat under leases/, shared by the backups and
// writers of this process that started while it was valid. While it is
// held, the index is synced every LeaseTTL/4 too, so that backups running
// beside other agents' deduplicate against what those stored meanwhile.
type lease struct {
	hb      *protocol.Heartbeat
	refs    int
	stop    context.CancelFunc // ends the syncs
	stopped chan struct{}
}

// valid returns nil while l is valid, or if l is nil: a manifest may be
// written. A nil lease is that of a repeated EndBackup, which rewrites the
// manifest of files each committed under a lease of its own writer.
func (l *lease) valid() error {
	if l == nil {
		return nil
	}
	if err := l.hb.Valid(); err != nil {
		return fmt.Errorf("dedup: %w: %w", storage.ErrAborted, err)
	}
	return nil
}

// holdLease returns the process's lease, taking a new one if there is none
// or it was lost; a new lease is followed by a sync, so that the index
// knows every pack condemned before it. IMPORTANT: pair with releaseLease.
func (r *repo) holdLease(ctx context.Context) (*lease, error) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if r.lease == nil || r.lease.hb.Valid() != nil {
		hb, err := protocol.StartHeartbeat(ctx, r.store.Backend(), protocol.LeasePrefix, r.opts.LeaseTTL)
		if err != nil {
			return nil, fmt.Errorf("dedup: take lease: %w", err)
		}
		if _, err := r.sync(ctx, false); err != nil {
			hb.Stop(context.WithoutCancel(ctx))
			return nil, err
		}
		l := &lease{hb: hb, stopped: make(chan struct{})}
		var lctx context.Context
		lctx, l.stop = context.WithCancel(r.ctx)
		go r.syncWhileHeld(lctx, l)
		r.lease = l
		r.leases[l] = struct{}{}
	}
	r.lease.refs++
	return r.lease, nil
}

// releaseLease drops a reference taken by holdLease; the last one deletes
// the lease object.
func (r *repo) releaseLease(l *lease) {
	if l == nil { // released already
		return
	}
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if l.refs--; l.refs > 0 {
		return
	}
	l.end()
	delete(r.leases, l)
	if r.lease == l {
		r.lease = nil
	}
}

// stopLeases deletes every lease object at close.
func (r *repo) stopLeases() {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	for l := range r.leases {
		l.end()
	}
	r.leases, r.lease = nil, nil
}

// end stops the syncs, then the heartbeat, deleting the lease object.
func (l *lease) end() {
	l.stop()
	<-l.stopped
	l.hb.Stop(context.Background())
}

// syncWhileHeld syncs the index every LeaseTTL/4 until ctx ends. A sync
// that fails is not retried before the next: a stale index costs only
// duplicate chunks.
func (r *repo) syncWhileHeld(ctx context.Context, l *lease) {
	defer close(l.stopped)
	t := time.NewTicker(r.opts.LeaseTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.sync(ctx, false)
		case <-ctx.Done():
			return
		}
	}
}

// syncAfter fully syncs the index unless a sync began after the caller
// read r.syncs as seen, so that many readers failing at once sync once.
func (r *repo) syncAfter(ctx context.Context, seen int64) error {
	if r.syncs.Load() > seen {
		return nil
	}
	_, err := r.sync(ctx, true)
	return err
}

// syncIndex syncs the index, fully if asked.
func (r *repo) syncIndex(ctx context.Context, full bool) error {
	_, err := r.sync(ctx, full)
	return asStorageErr(err)
}
