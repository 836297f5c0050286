package index

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/dedupstore/dedupstore/chunkstore"
	bolt "go.etcd.io/bbolt"
)

// ListID names a file's chunk list. A writer stores the segments of its
// file's list as it chunks (PutSegment allocates the list with the first)
// and hands the last one to CommitFiles. Lists that were never committed are
// "open" until dropped. ListID 0 is no list: an empty one.
type ListID uint64

func (l ListID) key() []byte { return binary.BigEndian.AppendUint64(nil, uint64(l)) }

// Ref is one entry of a chunk list: a chunk and its plain length.
type Ref struct {
	ID     chunkstore.ID
	Length uint32
}

// RefSize is the bytes one Ref takes in the index and in manifests.
const RefSize = 36

// SegmentRefs is how many refs a full list segment holds (36 KiB): a writer
// keeps at most one segment in memory, whatever the file's length.
const SegmentRefs = 1024

// Segment is one numbered part of a chunk list.
type Segment struct {
	Seq  uint32
	Refs []Ref
}

// PutSegment stores a segment of a list and returns the list. With list 0
// it allocates an open list, in the same transaction. Every segment but
// the last holds SegmentRefs refs.
func (d *DB) PutSegment(list ListID, s Segment) (ListID, error) {
	err := d.update(func(tx *bolt.Tx) error {
		var err error
		list, err = putSegment(tx, list, s)
		return err
	})
	return list, err
}

func putSegment(tx *bolt.Tx, list ListID, s Segment) (ListID, error) {
	if len(s.Refs) > SegmentRefs {
		return 0, fmt.Errorf("index: segment of %d refs, at most %d", len(s.Refs), SegmentRefs)
	}
	lists := tx.Bucket(bucketLists)
	if list == 0 {
		seq, err := lists.NextSequence()
		if err != nil {
			return 0, err
		}
		list = ListID(seq)
		if err := tx.Bucket(bucketOpen).Put(list.key(), nil); err != nil {
			return 0, err
		}
	}
	v := make([]byte, 0, len(s.Refs)*RefSize)
	for _, r := range s.Refs {
		v = append(v, r.ID[:]...)
		v = binary.LittleEndian.AppendUint32(v, r.Length)
	}
	return list, lists.Put(binary.BigEndian.AppendUint32(list.key(), s.Seq), v)
}

// Segment appends the refs of segment seg of a list to dst. found is false
// past the last segment.
func (d *DB) Segment(list ListID, seg uint32, dst []Ref) (refs []Ref, found bool, err error) {
	refs = dst
	err = d.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketLists).Get(binary.BigEndian.AppendUint32(list.key(), seg))
		if v == nil {
			return nil
		}
		found = true
		refs, err = decodeRefs(v, dst)
		return err
	})
	return refs, found, err
}

// ListRefs calls fn with each segment of a list in order, each read in its
// own short transaction. The slice is reused between calls.
func (d *DB) ListRefs(list ListID, fn func([]Ref) error) error {
	var refs []Ref
	for seg := uint32(0); ; seg++ {
		var found bool
		var err error
		refs, found, err = d.Segment(list, seg, refs[:0])
		if err != nil || !found {
			return err
		}
		if err := fn(refs); err != nil {
			return err
		}
	}
}

func decodeRefs(v []byte, dst []Ref) ([]Ref, error) {
	if len(v)%RefSize != 0 || len(v) > SegmentRefs*RefSize {
		return nil, fmt.Errorf("index: list segment of %d bytes: %w", len(v), ErrDamaged)
	}
	for ; len(v) > 0; v = v[RefSize:] {
		var r Ref
		copy(r.ID[:], v)
		r.Length = binary.LittleEndian.Uint32(v[32:])
		dst = append(dst, r)
	}
	return dst, nil
}

// DropList deletes a list that will not be committed.
func (d *DB) DropList(list ListID) error {
	return d.update(func(tx *bolt.Tx) error { return deleteList(tx, list) })
}

func deleteList(tx *bolt.Tx, list ListID) error {
	prefix := list.key()
	c := tx.Bucket(bucketLists).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketOpen).Delete(prefix)
}

// DropOpenLists deletes every list that was never committed or dropped: the
// lists of writers that a crashed process left behind. Call it at open,
// before any writer starts.
func (d *DB) DropOpenLists() (dropped int, err error) {
	var any bool
	if err := d.view(func(tx *bolt.Tx) error { any = tx.Bucket(bucketOpen).Stats().KeyN > 0; return nil }); err != nil || !any {
		return 0, err // without a commit
	}
	err = d.update(func(tx *bolt.Tx) error {
		var open []ListID
		err := tx.Bucket(bucketOpen).ForEach(func(k, _ []byte) error {
			if len(k) != 8 {
				return damagedRecord("open list", k)
			}
			open = append(open, ListID(binary.BigEndian.Uint64(k)))
			return nil
		})
		if err != nil {
			return err
		}
		for _, l := range open {
			if err := deleteList(tx, l); err != nil {
				return err
			}
		}
		dropped = len(open)
		return nil
	})
	return dropped, err
}
