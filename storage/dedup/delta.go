package dedup

import (
	"context"
	"fmt"

	"github.com/dedupstore/dedupstore/chunkstore"
)

// Deltas. In a repository that makes them (chunkstore.Config.Deltas), a
// worker that meets a new chunk asks the index for the stored chunk sharing
// most of its features (index.Similar), compresses the chunk against it,
// and keeps the delta when it is deltaShrink times smaller than the chunk,
// or else deltaGain times smaller than the chunk compressed alone. Bases
// are always chunks stored whole, so reading a delta costs one more chunk
// read, of its base; nothing caches bases, as a backup or a restore meets
// the same base again for about 2 % of its deltas.
//
// The settings come from dedupctl bench deltas on three real MariaDB
// backups (3.2 GB, see README): 4 features and one vote store 1.4 % more
// than 16 features and two votes, with a quarter of the feature records
// to index (the index's cost in time and memory); one base, as a second
// stores 4 % less but costs every read of a delta one more base read; a
// gain of 2 stores 4 % less than 4. A delta 8 times smaller than its chunk
// is kept without compressing the chunk whole as well: that halves the
// compression work of backups that make many deltas, and stores as much.
//
// A base stays claimed (see gc.go) from the moment a worker decides on it
// until the delta's pack is indexed; from then on the index records the
// delta's bases, and a collection keeps the bases of every delta it keeps
// (see gc.Collector).

const (
	deltaBases    = 1 // bases per delta, at most
	deltaMinVotes = 1 // features a stored chunk must share to be a base
	deltaGain     = 2 // how many times smaller than the chunk compressed whole a delta must be
	// deltaShrink: a delta this many times smaller than the chunk is kept
	// without compressing the chunk whole to compare.
	deltaShrink = 8
)

// locateBase is the store's chunkstore.BaseLocator.
func (r *repo) locateBase(_ context.Context, id chunkstore.ID) (chunkstore.Location, int64, error) {
	loc, found, err := r.idx.BaseLocation(id)
	if err == nil && !found {
		err = fmt.Errorf("dedup: base %s is not in the index stored whole: %w", id, chunkstore.ErrCorrupt)
	}
	if err != nil {
		return loc, 0, err
	}
	p, found, err := r.idx.Pack(loc.Pack)
	if err == nil && !found {
		err = fmt.Errorf("dedup: base %s is in pack %s, which is not in the index: %w", id, loc.Pack, chunkstore.ErrCorrupt)
	}
	return loc, p.Size, err
}

// encode returns a new chunk (id, plain) in its stored form: as a delta,
// with its bases, if one is deltaShrink times smaller than plain or
// deltaGain times smaller than the chunk compressed whole, and whole
// otherwise, with its features in a repository that makes deltas. Any
// failure to find or load a base only means no delta.
func (r *repo) encode(ws *encoder, id chunkstore.ID, plain []byte) (chunkstore.EncodedChunk, []chunkstore.ID) {
	if ws.delta == nil {
		return r.store.Encode(ws.scratch, id, plain), nil
	}
	features := chunkstore.Features(plain, chunkstore.DeltaFeatures)
	d, bases := r.tryDelta(ws, id, plain, features)
	if bases != nil && len(d.Data)*deltaShrink <= len(plain) {
		return d, bases
	}
	whole := r.encodeWhole(ws, id, plain, features)
	if bases != nil && len(d.Data)*deltaGain <= len(whole.Data) {
		return d, bases
	}
	return whole, nil
}

// encodeWhole compresses a new chunk whole, with its features, which make
// it a base for deltas.
func (r *repo) encodeWhole(ws *encoder, id chunkstore.ID, plain []byte, features []uint64) chunkstore.EncodedChunk {
	e := r.store.Encode(ws.scratch, id, plain)
	e.Features = features
	return e
}

// tryDelta returns chunk id as a delta against the stored chunks most
// similar to it, with their IDs, or no IDs if none is found or loads.
func (r *repo) tryDelta(ws *encoder, id chunkstore.ID, plain []byte, features []uint64) (chunkstore.EncodedChunk, []chunkstore.ID) {
	ids, err := r.idx.Similar(features, deltaMinVotes, deltaBases)
	if err != nil || len(ids) == 0 {
		return chunkstore.EncodedChunk{}, nil
	}
	bases := ws.bases[:len(ids)]
	for i, b := range ids {
		if bases[i], err = r.store.LoadBase(r.ctx, b, ws.bases[i]); err != nil {
			return chunkstore.EncodedChunk{}, nil
		}
	}
	d, err := r.store.EncodeDelta(ws.delta, ws.deltaScratch, id, plain, ids, bases)
	if err != nil {
		return chunkstore.EncodedChunk{}, nil
	}
	return d, ids
}

// claimBasesLocked claims a delta's bases if each is still usable as one
// (see index.UsableBase); the caller holds r.mu, so that no collection can
// condemn one in between. A base was loaded whole, but a collection may
// have removed it since and a writer stored it again, perhaps as a delta:
// a base pending in a pack is one stored again, and is refused too.
func (r *repo) claimBasesLocked(bases []chunkstore.ID) (bool, error) {
	for _, b := range bases {
		if _, stored := r.pending[b]; stored {
			return false, nil
		}
		if ok, err := r.idx.UsableBase(b); err != nil || !ok {
			return false, err
		}
	}
	for _, b := range bases {
		r.claimLocked(b)
	}
	return true, nil
}
