package index

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	bolt "go.etcd.io/bbolt"
)

// scanBatch is how many keys one read transaction of a scan visits: long
// enough to amortise the transaction, short enough that writers never wait
// on a scan for the database to grow.
const scanBatch = 4096

// scan calls fn for every key and value of a top-level bucket, in key order,
// in a series of short read transactions. Keys added or removed during the
// scan may or may not be seen.
func (d *DB) scan(bucket []byte, fn func(k, v []byte) error) error {
	var after []byte
	for {
		n := 0
		err := d.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
				if k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && n < scanBatch; k, v = c.Next() {
				if err := fn(k, v); err != nil {
					return err
				}
				after = append(after[:0], k...)
				n++
			}
			return nil
		})
		if err != nil || n < scanBatch {
			return err
		}
	}
}

// ForEachListRef calls fn for every ref of every chunk list: those of
// committed files and those of writers still running. It is the mark phase
// of GC: a chunk no list refers to is referenced by nothing stored.
func (d *DB) ForEachListRef(fn func(Ref) error) error {
	var refs []Ref
	return d.scan(bucketLists, func(k, v []byte) error {
		var err error
		refs, err = decodeRefs(v, refs[:0])
		if err != nil {
			return err
		}
		for _, r := range refs {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// ForEachCopy calls fn for every further copy of an indexed chunk (see
// AddPack) and its location.
func (d *DB) ForEachCopy(fn func(chunkstore.ID, chunkstore.Location) error) error {
	return d.scan(bucketCopies, func(k, v []byte) error {
		if len(k) != 64 {
			return damagedRecord("copy", k)
		}
		loc, err := decodeLocation(v)
		if err != nil {
			return err
		}
		return fn(chunkstore.ID(k[:32]), loc)
	})
}

// ForEachChunk calls fn for every indexed chunk and its location.
func (d *DB) ForEachChunk(fn func(chunkstore.ID, chunkstore.Location) error) error {
	return d.scan(bucketChunks, func(k, v []byte) error {
		if len(k) != len(chunkstore.ID{}) {
			return fmt.Errorf("index: chunk key of %d bytes: %w", len(k), ErrDamaged)
		}
		loc, err := decodeLocation(v)
		if err != nil {
			return err
		}
		return fn(chunkstore.ID(k), loc)
	})
}

// Packs returns every pack record.
func (d *DB) Packs() ([]Pack, error) {
	var out []Pack
	err := d.scan(bucketPacks, func(k, v []byte) error {
		p, err := decodePack(k, v)
		out = append(out, p)
		return err
	})
	return out, err
}

func decodePack(k, v []byte) (Pack, error) {
	if len(k) != 32 || len(v) != 20 {
		return Pack{}, damagedRecord("pack", k)
	}
	return Pack{
		ID:      chunkstore.ID(k),
		Size:    int64(binary.LittleEndian.Uint64(v)),
		Chunks:  int(binary.LittleEndian.Uint32(v[8:])),
		Created: time.Unix(0, int64(binary.LittleEndian.Uint64(v[12:]))),
	}, nil
}

// Pack returns the record of pack id, and false if the index does not
// list it.
func (d *DB) Pack(id chunkstore.ID) (p Pack, found bool, err error) {
	err = d.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPacks).Get(id[:])
		if found = v != nil; found {
			p, err = decodePack(id[:], v)
		}
		return err
	})
	return p, found, err
}
