package index

import (
	bolt "go.etcd.io/bbolt"
)

// Damaged objects. A pack whose trailer does not parse or a manifest that
// does not decode is recorded here with what is wrong with it, for as long
// as it is in the repository. While any is, nothing may be deleted as
// unreferenced: a damaged manifest may reference anything, and a damaged
// pack may hold the only copy of a chunk that nothing else records.

// SetDamaged records object name as damaged, and why.
func (d *DB) SetDamaged(name, why string) error {
	return d.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDamaged).Put([]byte(name), []byte(why))
	})
}

// ClearDamaged forgets that object name was damaged: it is gone, or was
// repaired.
func (d *DB) ClearDamaged(name string) error {
	return d.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDamaged).Delete([]byte(name))
	})
}

// Damaged returns the damaged objects, name → what is wrong.
func (d *DB) Damaged() (map[string]string, error) {
	out := map[string]string{}
	err := d.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDamaged).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	return out, err
}
