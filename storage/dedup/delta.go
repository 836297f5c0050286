package dedup

import (
	"container/list"
	"context"
	"fmt"
	"sync"

	"github.com/dedupstore/dedupstore/chunkstore"
)

// Deltas. In a repository that makes them (chunkstore.Config.Deltas), a
// worker that meets a new chunk asks the index for the stored chunk sharing
// most of its features (index.Similar), compresses the chunk against it,
// and keeps the delta when it is deltaGain times smaller than the chunk
// compressed alone. Bases are always chunks stored whole, so reading a
// delta costs one more chunk read, of its base.
//
// The settings come from dedupctl bench deltas on three real MariaDB
// backups (3.2 GB): one base stored 542 MiB, two bases 521 MiB, but a
// delta's read costs a whole chunk's per base (a restore spends most of
// its time on them: bases are rarely shared, and a larger cache of them
// only costs memory), so one. Two votes store as little as one and try
// fewer deltas; a gain of 2 stores 4 % less than 4 and 8 % less than 8.
//
// A base stays claimed (see gc.go) from the moment a worker decides on it
// until the delta's pack is indexed; from then on the index records the
// delta's bases, and a collection keeps the bases of every delta it keeps
// (see gc.Collector).

const (
	deltaBases    = 1 // bases per delta, at most
	deltaMinVotes = 2 // features a stored chunk must share to be a base
	deltaGain     = 2 // how many times smaller than the chunk compressed whole a delta must be
	// baseCacheBytes bounds the plain bytes of bases kept for reads and
	// for the workers' deltas: those a file's neighbouring deltas share.
	baseCacheBytes = 8 << 20
)

// baseCache keeps the plain bytes of recently used bases, least recently
// used out first. It is safe for concurrent use.
type baseCache struct {
	mu    sync.Mutex
	lru   *list.List // of *cachedBase, most recent first
	byID  map[chunkstore.ID]*list.Element
	bytes int
}

type cachedBase struct {
	id    chunkstore.ID
	plain []byte
}

func newBaseCache() *baseCache {
	return &baseCache{lru: list.New(), byID: map[chunkstore.ID]*list.Element{}}
}

func (c *baseCache) get(id chunkstore.ID) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byID[id]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*cachedBase).plain, true
}

func (c *baseCache) put(id chunkstore.ID, plain []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[id]; ok || len(plain) > baseCacheBytes {
		return
	}
	c.byID[id] = c.lru.PushFront(&cachedBase{id, plain})
	c.bytes += len(plain)
	for c.bytes > baseCacheBytes {
		old := c.lru.Remove(c.lru.Back()).(*cachedBase)
		delete(c.byID, old.id)
		c.bytes -= len(old.plain)
	}
}

// loadBase is the store's chunkstore.BaseLoader: the plain bytes of a
// chunk stored whole, from the cache or its pack. The bytes returned must
// not be modified.
func (r *repo) loadBase(ctx context.Context, id chunkstore.ID) ([]byte, error) {
	if plain, ok := r.bases.get(id); ok {
		return plain, nil
	}
	loc, found, err := r.idx.Lookup(id)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("dedup: base %s is not in the index: %w", id, chunkstore.ErrCorrupt)
	}
	if loc.Codec == chunkstore.CodecDelta {
		return nil, fmt.Errorf("dedup: base %s is itself a delta: %w", id, chunkstore.ErrCorrupt)
	}
	// The stored bytes go in a pooled buffer; the plain ones, which the
	// cache keeps, in one of their exact size.
	scratch := r.chunkBufs.Get().(*[]byte)
	defer r.chunkBufs.Put(scratch)
	plain, err := r.store.LoadChunk(ctx, id, loc, *scratch, make([]byte, 0, loc.PlainLength))
	if err != nil {
		return nil, err
	}
	r.bases.put(id, plain)
	return plain, nil
}

// tryDelta returns chunk id (plain, enc compressed whole) as a delta in
// dst, with its bases, if one is deltaGain times smaller than enc, and enc
// and no bases otherwise. Any failure to find or load a base only means no
// delta.
func (r *repo) tryDelta(de *chunkstore.DeltaEncoder, dst []byte, id chunkstore.ID, plain []byte, enc chunkstore.EncodedChunk) (chunkstore.EncodedChunk, []chunkstore.ID) {
	ids, err := r.idx.Similar(enc.Features, deltaMinVotes, deltaBases)
	if err != nil || len(ids) == 0 {
		return enc, nil
	}
	bases := make([][]byte, len(ids))
	for i, b := range ids {
		if bases[i], err = r.loadBase(r.ctx, b); err != nil {
			return enc, nil
		}
	}
	d, err := r.store.EncodeDelta(de, dst, id, plain, ids, bases)
	if err != nil || len(d.Data)*deltaGain > len(enc.Data) {
		return enc, nil
	}
	return d, ids
}

// claimBasesLocked claims a delta's bases if each is still usable; the
// caller holds r.mu, so that no collection can condemn one in between.
func (r *repo) claimBasesLocked(bases []chunkstore.ID) (bool, error) {
	for _, b := range bases {
		if _, known, err := r.lookupLocked(b); err != nil || !known {
			return false, err
		}
	}
	for _, b := range bases {
		r.claimLocked(b)
	}
	return true, nil
}
