package index

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/dedupstore/dedupstore/chunkstore"
	bolt "go.etcd.io/bbolt"
)

// Where chunks are. Every chunk the index knows has one location, the one
// Lookup returns, in the chunks bucket; any further copies (two agents that
// stored the same chunk at once, or a collection that copied it) are kept in
// the copies bucket, so that when a pack goes, its chunks move to a copy
// instead of leaving the index. A chunk's location is in a pack that is not
// condemned whenever one of its copies is, and among those, a copy stored
// whole whenever one is (see better): two agents may store one new chunk
// at once, one as a delta and one whole, and a chunk that is a delta's base
// must be found whole.

// AddPack records a durable pack and its chunks. A chunk already indexed in
// a pack that is not condemned keeps that location; the new one is kept as
// a copy.
//
// IMPORTANT: call it only after the pack is durable (Store.WritePack
// returned nil); an indexed chunk is one that writers deduplicate against.
func (d *DB) AddPack(p Pack, entries []chunkstore.PackEntry) error {
	return d.AddPacks([]PackEntries{{p, entries}})
}

// PackEntries is a pack and its chunks, for AddPacks.
type PackEntries struct {
	Pack
	Entries []chunkstore.PackEntry
}

// AddPacks records many packs as AddPack does, in one transaction, as a
// sync does that finds many: each commit of the index waits for the disk.
// Their chunks are inserted in ID order, which keeps the writes to the
// index's pages near each other.
func (d *DB) AddPacks(packs []PackEntries) error {
	return d.update(func(tx *bolt.Tx) error { return addPacks(tx, packs) })
}

func addPacks(tx *bolt.Tx, packs []PackEntries) error {
	type chunk struct {
		id  chunkstore.ID
		loc chunkstore.Location
	}
	var chunks []chunk
	for _, p := range packs {
		if err := tx.Bucket(bucketPacks).Put(p.ID[:], encodePack(p.Pack)); err != nil {
			return err
		}
		for _, e := range p.Entries {
			chunks = append(chunks, chunk{e.ID, chunkstore.Location{Pack: p.ID, Blob: e.Blob}})
		}
	}
	if err := addDeltaRecords(tx, packs); err != nil {
		return err
	}
	// Stable: of two copies of a chunk, the first pack's stays first.
	slices.SortStableFunc(chunks, func(a, b chunk) int { return bytes.Compare(a.id[:], b.id[:]) })
	for _, c := range chunks {
		if err := addChunk(tx, c.id, c.loc); err != nil {
			return err
		}
	}
	return nil
}

// addChunk records that chunk id is stored at loc: as its location, or as
// a copy when it is indexed already at a location as good (see better).
func addChunk(tx *bolt.Tx, id chunkstore.ID, loc chunkstore.Location) error {
	chunks, copies := tx.Bucket(bucketChunks), tx.Bucket(bucketCopies)
	if v := chunks.Get(id[:]); v != nil {
		cur, err := decodeLocation(v)
		if err != nil || cur.Pack == loc.Pack {
			return err
		}
		if !better(tx, loc, cur) {
			return copies.Put(copyKey(id, loc.Pack), encodeLocation(loc))
		}
		if err := copies.Put(copyKey(id, cur.Pack), v); err != nil {
			return err
		}
	}
	return chunks.Put(id[:], encodeLocation(loc))
}

// better reports whether copy loc of a chunk is a better location for it
// than cur: in a pack that is not condemned where cur's is, or else stored
// whole where cur is a delta.
func better(tx *bolt.Tx, loc, cur chunkstore.Location) bool {
	condemned := tx.Bucket(bucketCondemned)
	locGone, curGone := condemned.Get(loc.Pack[:]) != nil, condemned.Get(cur.Pack[:]) != nil
	if locGone != curGone {
		return curGone
	}
	return cur.Codec == chunkstore.CodecDelta && loc.Codec != chunkstore.CodecDelta
}

func copyKey(chunk, pack chunkstore.ID) []byte {
	return append(append(make([]byte, 0, 64), chunk[:]...), pack[:]...)
}

// ReplacePack retires pack old in one transaction: the replacement pack,
// if any, is added as AddPack does, and then old is dropped: each of chunks
// located in old moves to another copy (the replacement's, if it has one)
// or leaves the index. With replacement nil, this drops a pack.
//
// IMPORTANT: the new pack must be durable before, and old may only be
// deleted after, this returns nil.
func (d *DB) ReplacePack(old chunkstore.ID, chunks []chunkstore.ID, replacement *Pack, entries []chunkstore.PackEntry) error {
	return d.update(func(tx *bolt.Tx) error {
		var prefer *chunkstore.ID
		if replacement != nil {
			if err := addPacks(tx, []PackEntries{{*replacement, entries}}); err != nil {
				return err
			}
			prefer = &replacement.ID
		}
		return dropPack(tx, old, chunks, prefer)
	})
}

// DropPacks forgets packs that are gone from the repository, as another
// agent's collection leaves them: their chunks move to other copies or
// leave the index. It scans the whole index to find their chunks.
func (d *DB) DropPacks(ids []chunkstore.ID) error {
	if len(ids) == 0 {
		return nil // without scanning every chunk, or a commit
	}
	gone := map[chunkstore.ID][]chunkstore.ID{}
	for _, id := range ids {
		gone[id] = nil
	}
	err := d.ForEachChunk(func(id chunkstore.ID, loc chunkstore.Location) error {
		if chunks, ok := gone[loc.Pack]; ok {
			gone[loc.Pack] = append(chunks, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = d.scan(bucketCopies, func(k, _ []byte) error {
		if chunks, ok := gone[chunkstore.ID(k[32:])]; ok {
			gone[chunkstore.ID(k[32:])] = append(chunks, chunkstore.ID(k[:32]))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return d.update(func(tx *bolt.Tx) error {
		for pack, chunks := range gone {
			if err := dropPack(tx, pack, chunks, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropPack removes pack id and, of chunks, the copies in it; a chunk
// located in it moves to its best other copy (the one in pack prefer, if
// any) or leaves the index.
func dropPack(tx *bolt.Tx, id chunkstore.ID, chunks []chunkstore.ID, prefer *chunkstore.ID) error {
	b, copies := tx.Bucket(bucketChunks), tx.Bucket(bucketCopies)
	for _, c := range chunks {
		if err := copies.Delete(copyKey(c, id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketBases).Delete(copyKey(c, id)); err != nil {
			return err
		}
		v := b.Get(c[:])
		if v == nil {
			continue
		}
		loc, err := decodeLocation(v)
		if err != nil {
			return err
		}
		if loc.Pack != id {
			continue
		}
		next, found, err := bestCopy(tx, c, prefer)
		switch {
		case err != nil:
			return err
		case found:
			if err := b.Put(c[:], encodeLocation(next)); err != nil {
				return err
			}
			err = copies.Delete(copyKey(c, next.Pack))
		default:
			err = b.Delete(c[:])
		}
		if err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketCondemned).Delete(id[:]); err != nil {
		return err
	}
	return tx.Bucket(bucketPacks).Delete(id[:])
}

// bestCopy returns a copy of chunk c from the copies bucket: the one in
// pack prefer if there is one, else the best (see better).
func bestCopy(tx *bolt.Tx, c chunkstore.ID, prefer *chunkstore.ID) (best chunkstore.Location, found bool, err error) {
	cur := tx.Bucket(bucketCopies).Cursor()
	for k, v := cur.Seek(c[:]); k != nil && bytes.HasPrefix(k, c[:]); k, v = cur.Next() {
		loc, err := decodeLocation(v)
		if err != nil {
			return best, false, err
		}
		preferred := func(l chunkstore.Location) bool { return prefer != nil && l.Pack == *prefer }
		if !found || !preferred(best) && (preferred(loc) || better(tx, loc, best)) {
			best, found = loc, true
		}
	}
	return best, found, nil
}

// SetCondemned makes packs the set of condemned packs: those a collection
// has decided to delete once no agent can still depend on them. With add,
// they join the set instead, and packs in it stay, as a sync that did not
// list every pack must leave them: a pack deleted since may still be
// indexed. Writers must not deduplicate against the chunks of condemned
// packs (see Usable); reads may go on. Chunks located in a condemned pack
// move to a copy in a pack that is not, if they have one.
func (d *DB) SetCondemned(packs []chunkstore.ID, add bool) error {
	if add && len(packs) == 0 {
		return nil // without a commit
	}
	return d.update(func(tx *bolt.Tx) error {
		if !add {
			if err := tx.DeleteBucket(bucketCondemned); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(bucketCondemned); err != nil {
				return err
			}
		}
		condemned := tx.Bucket(bucketCondemned)
		var err error
		for _, p := range packs {
			if err := condemned.Put(p[:], []byte{1}); err != nil {
				return err
			}
		}
		// Copies are few: gather those better than their chunk's location,
		// then promote them.
		var promote []chunkstore.Location
		var ids []chunkstore.ID
		chunks, copies := tx.Bucket(bucketChunks), tx.Bucket(bucketCopies)
		err = copies.ForEach(func(k, v []byte) error {
			if condemned.Get(k[32:]) != nil {
				return nil
			}
			v0 := chunks.Get(k[:32])
			if v0 == nil {
				return nil
			}
			cur, err := decodeLocation(v0)
			if err != nil {
				return err
			}
			loc, err := decodeLocation(v)
			if err == nil && better(tx, loc, cur) {
				promote, ids = append(promote, loc), append(ids, chunkstore.ID(k[:32]))
			}
			return err
		})
		if err != nil {
			return err
		}
		for i, loc := range promote {
			c := ids[i]
			v := chunks.Get(c[:])
			cur, err := decodeLocation(v)
			if err != nil {
				return err
			}
			if !better(tx, loc, cur) {
				continue // promoted already: the chunk had two better copies
			}
			if err := copies.Put(copyKey(c, cur.Pack), v); err != nil {
				return err
			}
			if err := copies.Delete(copyKey(c, loc.Pack)); err != nil {
				return err
			}
			if err := chunks.Put(c[:], encodeLocation(loc)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Locations returns every place chunk id is stored: the one Lookup
// returns first, then its other copies. It is empty if the chunk is not
// indexed.
func (d *DB) Locations(id chunkstore.ID) ([]chunkstore.Location, error) {
	var locs []chunkstore.Location
	err := d.view(func(tx *bolt.Tx) error {
		loc, found, err := primary(tx, id)
		if err != nil || !found {
			return err
		}
		locs = append(locs, loc)
		cur := tx.Bucket(bucketCopies).Cursor()
		for k, v := cur.Seek(id[:]); k != nil && bytes.HasPrefix(k, id[:]); k, v = cur.Next() {
			loc, err := decodeLocation(v)
			if err != nil {
				return err
			}
			locs = append(locs, loc)
		}
		return nil
	})
	return locs, err
}

// Usable reports whether a writer may deduplicate against chunk id: it is
// indexed in a pack that is not condemned, and if it is a delta, its bases
// are usable as bases (see UsableBase).
func (d *DB) Usable(id chunkstore.ID) (bool, error) {
	var ok bool
	err := d.view(func(tx *bolt.Tx) (err error) {
		ok, err = usable(tx, id)
		return err
	})
	return ok, err
}

// UsableBase reports whether a writer may store a delta against chunk id:
// it is indexed stored whole, in a pack that is not condemned. A chunk
// found whole once may since have left the index and come back as a
// delta, which no delta may name as its base.
func (d *DB) UsableBase(id chunkstore.ID) (bool, error) {
	var ok bool
	err := d.view(func(tx *bolt.Tx) error {
		loc, found, err := primary(tx, id)
		ok = found && baseAt(tx, loc)
		return err
	})
	return ok, err
}

// AllUsable reports, in one transaction, whether Usable holds for every
// chunk of refs, and if not, the first that is not.
func (d *DB) AllUsable(refs []Ref) (missing chunkstore.ID, all bool, err error) {
	all = true
	err = d.view(func(tx *bolt.Tx) error {
		for _, r := range refs {
			ok, err := usable(tx, r.ID)
			if err != nil {
				return err
			}
			if !ok {
				missing, all = r.ID, false
				return nil
			}
		}
		return nil
	})
	return missing, all, err
}

func usable(tx *bolt.Tx, id chunkstore.ID) (bool, error) {
	loc, found, err := primary(tx, id)
	if err != nil || !found || tx.Bucket(bucketCondemned).Get(loc.Pack[:]) != nil {
		return false, err
	}
	if loc.Codec != chunkstore.CodecDelta {
		return true, nil
	}
	for _, b := range bases(tx, id, loc.Pack) { // stored whole: no deeper
		bl, found, err := primary(tx, b)
		if err != nil || !found || !baseAt(tx, bl) {
			return false, err
		}
	}
	return true, nil
}

// baseAt reports whether a chunk at loc may be a delta's base: stored
// whole, in a pack that is not condemned.
func baseAt(tx *bolt.Tx, loc chunkstore.Location) bool {
	return loc.Codec != chunkstore.CodecDelta && tx.Bucket(bucketCondemned).Get(loc.Pack[:]) == nil
}

// primary returns the location Lookup gives for chunk id, and false if the
// chunk is not indexed.
func primary(tx *bolt.Tx, id chunkstore.ID) (chunkstore.Location, bool, error) {
	v := tx.Bucket(bucketChunks).Get(id[:])
	if v == nil {
		return chunkstore.Location{}, false, nil
	}
	loc, err := decodeLocation(v)
	if err != nil {
		return loc, false, fmt.Errorf("index: chunk %s: %w", id, err)
	}
	return loc, true, nil
}
