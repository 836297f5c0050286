package index

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/dedupstore/dedupstore/chunkstore"
	bolt "go.etcd.io/bbolt"
)

// Deltas. A chunk stored as a delta depends on its bases: the bases bucket
// records them for each copy (chunk ID, pack ID → base IDs), so that a
// collection keeps every base a live delta needs. The features bucket maps
// each feature of a chunk stored whole to the first 8 bytes of its ID (the
// chunk indexed last wins), for writers to find a similar chunk: at 16
// features, 16 records of 16 bytes, about 0.5 KiB per chunk with bbolt's
// overhead. Both come from pack trailers, like every chunk record, so
// rebuilds and syncs restore them. A feature record may outlive its chunk;
// Similar skips those.

var (
	bucketBases    = []byte("bases")    // chunk ID, pack ID → base IDs
	bucketFeatures = []byte("features") // feature → chunk ID prefix
)

// addDeltaRecords records what the packs' entries say of deltas: their
// bases or their features. Features are random keys: inserted in order,
// they touch each page of the bucket once per batch, not once per record.
func addDeltaRecords(tx *bolt.Tx, packs []PackEntries) error {
	type feature struct{ key, value []byte }
	var features []feature
	for _, p := range packs {
		for _, e := range p.Entries {
			if len(e.Bases) > 0 {
				var v []byte
				for _, b := range e.Bases {
					v = append(v, b[:]...)
				}
				if err := tx.Bucket(bucketBases).Put(copyKey(e.ID, p.ID), v); err != nil {
					return err
				}
			}
			for _, f := range e.Features {
				features = append(features, feature{binary.BigEndian.AppendUint64(nil, f), e.ID[:8]})
			}
		}
	}
	// Stable: of two chunks with a feature, the later one's record wins.
	slices.SortStableFunc(features, func(a, b feature) int { return bytes.Compare(a.key, b.key) })
	fb := tx.Bucket(bucketFeatures)
	for _, f := range features {
		if err := fb.Put(f.key, f.value); err != nil {
			return err
		}
	}
	return nil
}

// Similar returns up to n chunks, most votes first, that share at least
// minVotes of features (a chunk's, from chunkstore.Features) with a chunk
// usable as a base (see UsableBase).
func (d *DB) Similar(features []uint64, minVotes, n int) ([]chunkstore.ID, error) {
	var out []chunkstore.ID
	err := d.view(func(tx *bolt.Tx) error {
		votes := map[chunkstore.ID]int{}
		cur := tx.Bucket(bucketChunks).Cursor()
		fb := tx.Bucket(bucketFeatures)
		for _, f := range features {
			prefix := fb.Get(binary.BigEndian.AppendUint64(nil, f))
			if prefix == nil {
				continue
			}
			k, v := cur.Seek(prefix)
			if k == nil || !bytes.HasPrefix(k, prefix) {
				continue // the chunk left the index
			}
			loc, err := decodeLocation(v)
			if err != nil {
				return err
			}
			if baseAt(tx, loc) {
				votes[chunkstore.ID(k)]++
			}
		}
		for id, v := range votes {
			if v >= minVotes {
				out = append(out, id)
			}
		}
		slices.SortFunc(out, func(a, b chunkstore.ID) int {
			if votes[a] != votes[b] {
				return votes[b] - votes[a]
			}
			return bytes.Compare(a[:], b[:])
		})
		out = out[:min(n, len(out))]
		return nil
	})
	return out, err
}

// ForEachDelta calls fn for every copy of a chunk stored as a delta, with
// its bases.
func (d *DB) ForEachDelta(fn func(id chunkstore.ID, bases []chunkstore.ID) error) error {
	return d.scan(bucketBases, func(k, v []byte) error {
		if len(k) != 64 || len(v) == 0 || len(v)%32 != 0 {
			return fmt.Errorf("index: bases record of %d bytes: %w", len(v), ErrDamaged)
		}
		var ids []chunkstore.ID
		for i := 0; i < len(v); i += 32 {
			ids = append(ids, chunkstore.ID(v[i:i+32]))
		}
		return fn(chunkstore.ID(k[:32]), ids)
	})
}

// Bases returns the bases of the copy of chunk id in pack: nil if that copy
// is stored whole.
func (d *DB) Bases(id, pack chunkstore.ID) ([]chunkstore.ID, error) {
	var out []chunkstore.ID
	err := d.view(func(tx *bolt.Tx) error {
		out = bases(tx, id, pack)
		return nil
	})
	return out, err
}

// BaseLocation returns where to read chunk id as a delta's base: its
// location (see Lookup) if that copy is stored whole, or else its first copy
// stored whole, in a condemned pack or not, as reads go on from those (a
// chunk's location moves out of a condemned pack to any copy, also a
// delta). It reports false if no copy is stored whole.
func (d *DB) BaseLocation(id chunkstore.ID) (loc chunkstore.Location, found bool, err error) {
	locs, err := d.Locations(id)
	for _, l := range locs {
		if l.Codec != chunkstore.CodecDelta {
			return l, true, nil
		}
	}
	return loc, false, err
}

func bases(tx *bolt.Tx, id, pack chunkstore.ID) []chunkstore.ID {
	v := tx.Bucket(bucketBases).Get(copyKey(id, pack))
	var out []chunkstore.ID
	for i := 0; i+32 <= len(v); i += 32 {
		out = append(out, chunkstore.ID(v[i:i+32]))
	}
	return out
}
