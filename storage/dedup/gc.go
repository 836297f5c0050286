package dedup

import (
	"context"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
)

// Claims. Every chunk a writer puts on its chunk list is claimed from the
// moment a worker decides on it (under r.mu, with the lookup) until the list
// segment holding it is in the index. A collection running meanwhile spares
// every chunk claimed, or released, since it began: see gc.Claims.

func (r *repo) claimLocked(id chunkstore.ID) {
	r.claims[id]++
	if r.gcClaims != nil {
		r.gcClaims[id] = struct{}{}
	}
}

func (r *repo) release(refs []index.Ref) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ref := range refs {
		r.releaseOneLocked(ref.ID)
	}
}

func (r *repo) releaseLocked(ids []chunkstore.ID) {
	for _, id := range ids {
		r.releaseOneLocked(id)
	}
}

func (r *repo) releaseOneLocked(id chunkstore.ID) {
	if n := r.claims[id]; n > 1 {
		r.claims[id] = n - 1
	} else {
		delete(r.claims, id)
	}
	if r.gcClaims != nil {
		r.gcClaims[id] = struct{}{}
	}
}

// repoClaims is the gc.Claims of an open repository. Begin also takes the
// repository's GC lock, so one collection runs at a time.
type repoClaims struct{ r *repo }

func (c repoClaims) Begin() func() {
	c.r.gcMu.Lock()
	c.r.mu.Lock()
	c.r.gcClaims = map[chunkstore.ID]struct{}{}
	c.r.mu.Unlock()
	return func() {
		c.r.mu.Lock()
		c.r.gcClaims = nil
		c.r.mu.Unlock()
		c.r.gcMu.Unlock()
	}
}

func (c repoClaims) Commit(fn func(claimed func(chunkstore.ID) bool) error) error {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	return fn(func(id chunkstore.ID) bool {
		_, recent := c.r.gcClaims[id]
		return recent || c.r.claims[id] > 0 || c.r.pending[id] != nil
	})
}

func (r *repo) collector(opts gc.Options) *gc.Collector {
	return &gc.Collector{Store: r.store, Index: r.idx, Claims: repoClaims{r}, Options: opts, LeaseTTL: r.opts.LeaseTTL,
		Sync: func(ctx context.Context) error {
			_, err := r.sync(ctx, true)
			return err
		}}
}

// PlanGC marks the repository and returns what a collection would delete and
// rewrite. Backups may go on meanwhile, in this process and others. The
// collection is two-phase (see package protocol): while any process has a backup
// running, what it condemns is deleted by a later collection. One
// collection runs at a time: a second PlanGC in this process waits until
// the first plan is executed or closed, and one in another process fails
// with an error wrapping storage.ErrInUse while the first holds the lock.
//
// IMPORTANT: call ExecuteGC or the plan's Close.
func (s *Storage) PlanGC(ctx context.Context, opts gc.Options) (*gc.Plan, error) {
	r, err := s.openWritable(ctx)
	if err != nil {
		return nil, err
	}
	p, err := r.collector(opts).Plan(ctx)
	return p, asStorageErr(err)
}

// ExecuteGC carries out a plan from PlanGC. Chunks that backups running
// meanwhile deduplicated against are spared.
func (s *Storage) ExecuteGC(ctx context.Context, p *gc.Plan) (gc.Result, error) {
	r, err := s.openWritable(ctx)
	if err != nil {
		p.Close()
		return gc.Result{}, err
	}
	res, err := r.collector(gc.Options{}).Execute(ctx, p)
	return res, asStorageErr(err)
}
