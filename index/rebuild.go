package index

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketMeta  = []byte("meta")
	keyReady    = []byte("ready")
	keySynced   = []byte("synced")
	dataBuckets = [][]byte{bucketChunks, bucketPacks, bucketBackups, bucketLists, bucketOpen, bucketCopies, bucketCondemned, bucketDamaged, bucketBases, bucketFeatures}
)

// Ready reports whether the index is complete: created for a new repository
// or fully rebuilt. An index that is not ready must be rebuilt before it is
// used; a rebuild that a crash interrupted leaves it not ready.
func (d *DB) Ready() (bool, error) {
	var ready bool
	err := d.view(func(tx *bolt.Tx) error {
		ready = len(tx.Bucket(bucketMeta).Get(keyReady)) == 1
		return nil
	})
	return ready, err
}

// SetReady marks the index complete, or not.
func (d *DB) SetReady(ready bool) error {
	return d.update(func(tx *bolt.Tx) error {
		if ready {
			return tx.Bucket(bucketMeta).Put(keyReady, []byte{1})
		}
		return tx.Bucket(bucketMeta).Delete(keyReady)
	})
}

// SyncedAt returns when the last sync of the index with the repository
// began, by this host's clock, as SetSyncedAt recorded it; ok is false if
// none did.
func (d *DB) SyncedAt() (t time.Time, ok bool, err error) {
	err = d.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySynced); len(v) == 8 {
			t, ok = time.Unix(0, int64(binary.BigEndian.Uint64(v))), true
		}
		return nil
	})
	return t, ok, err
}

// SetSyncedAt records when a sync that completed began.
func (d *DB) SetSyncedAt(t time.Time) error {
	return d.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySynced, binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())))
	})
}

// Reset empties the index and marks it not ready and never synced.
func (d *DB) Reset() error {
	return d.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Delete(keyReady); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Delete(keySynced); err != nil {
			return err
		}
		for _, b := range dataBuckets {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// ImportBackup records an ended backup from its manifest, as a rebuild
// does, in one transaction: a crash leaves the backup whole or absent. It
// fails if a backup of that name exists.
func (d *DB) ImportBackup(m Manifest) error {
	b := m.Backup
	return d.update(func(tx *bolt.Tx) error {
		bk, err := tx.Bucket(bucketBackups).CreateBucket(backupKey(b.Dir, b.Name))
		if err != nil {
			return fmt.Errorf("index: import %s/%s: %w", b.Dir, b.Name, err)
		}
		if _, err := bk.CreateBucket(bucketFiles); err != nil {
			return err
		}
		if err := bk.Put(keyMeta, encodeBackup(Backup{State: Ended, Started: b.Started, Ended: b.Ended})); err != nil {
			return err
		}
		for _, f := range m.Files {
			var list ListID
			n := len(f.Refs)
			last := Segment{Seq: uint32(max(0, n-1) / SegmentRefs)}
			for seg := uint32(0); seg < last.Seq; seg++ {
				if list, err = putSegment(tx, list, Segment{Seq: seg, Refs: f.Refs[seg*SegmentRefs : (seg+1)*SegmentRefs]}); err != nil {
					return err
				}
			}
			last.Refs = f.Refs[last.Seq*SegmentRefs:]
			if err := commitFile(tx, bk, File{Name: f.Name, List: list, Size: f.Size, Chunks: int64(n)}, last); err != nil {
				return err
			}
		}
		return nil
	})
}
