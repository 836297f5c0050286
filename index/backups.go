package index

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// State is a backup's state.
type State uint8

const (
	// InProgress: started, not yet ended. Its committed files can be read.
	InProgress State = 1
	// Ended: EndBackup succeeded at least once; its manifest object exists.
	Ended State = 2
)

func (s State) String() string {
	switch s {
	case InProgress:
		return "in progress"
	case Ended:
		return "ended"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Backup is the index's record of one backup.
type Backup struct {
	Dir, Name string
	State     State
	Started   time.Time
	Ended     time.Time // zero while in progress
}

// File is one committed file of a backup.
type File struct {
	Name   string
	List   ListID // its chunk list
	Size   int64
	Chunks int64
}

func backupKey(dir, name string) []byte { return []byte(dir + "\x00" + name) }

func encodeBackup(b Backup) []byte {
	rec := make([]byte, 17)
	rec[0] = byte(b.State)
	binary.LittleEndian.PutUint64(rec[1:], uint64(b.Started.UnixNano()))
	if !b.Ended.IsZero() {
		binary.LittleEndian.PutUint64(rec[9:], uint64(b.Ended.UnixNano()))
	}
	return rec
}

func decodeBackup(key, rec []byte) (Backup, error) {
	dir, name, ok := strings.Cut(string(key), "\x00")
	if !ok || len(rec) != 17 || (State(rec[0]) != InProgress && State(rec[0]) != Ended) {
		return Backup{}, damagedRecord("backup", key)
	}
	b := Backup{Dir: dir, Name: name, State: State(rec[0]), Started: time.Unix(0, int64(binary.LittleEndian.Uint64(rec[1:])))}
	if e := int64(binary.LittleEndian.Uint64(rec[9:])); e != 0 {
		b.Ended = time.Unix(0, e)
	}
	return b, nil
}

// StartBackup records a new backup in progress. It returns false, and changes
// nothing, if a backup of that name exists in dir.
func (d *DB) StartBackup(dir, name string, now time.Time) (created bool, err error) {
	err = d.update(func(tx *bolt.Tx) error {
		backups := tx.Bucket(bucketBackups)
		if backups.Bucket(backupKey(dir, name)) != nil {
			return nil
		}
		b, err := backups.CreateBucket(backupKey(dir, name))
		if err != nil {
			return err
		}
		if _, err := b.CreateBucket(bucketFiles); err != nil {
			return err
		}
		created = true
		return b.Put(keyMeta, encodeBackup(Backup{State: InProgress, Started: now}))
	})
	return created, err
}

// EndBackup marks a backup ended at now. It returns false if the backup is
// not there (aborted or removed meanwhile).
//
// IMPORTANT: call it only after the backup's manifest object is durable.
func (d *DB) EndBackup(dir, name string, now time.Time) (found bool, err error) {
	err = d.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBackups).Bucket(backupKey(dir, name))
		if b == nil {
			return nil
		}
		found = true
		rec, err := decodeBackup(backupKey(dir, name), b.Get(keyMeta))
		if err != nil {
			return err
		}
		rec.State, rec.Ended = Ended, now
		return b.Put(keyMeta, encodeBackup(rec))
	})
	return found, err
}

// Backup returns the record of one backup, and false if there is none.
func (d *DB) Backup(dir, name string) (b Backup, found bool, err error) {
	err = d.view(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketBackups).Bucket(backupKey(dir, name))
		if bk == nil {
			return nil
		}
		found = true
		b, err = decodeBackup(backupKey(dir, name), bk.Get(keyMeta))
		return err
	})
	return b, found, err
}

// Backups returns the backups in dir sorted by name, or every backup of the
// repository (sorted by dir, then name) when all is true.
func (d *DB) Backups(dir string, all bool) ([]Backup, error) {
	var out []Backup
	prefix := []byte(dir + "\x00")
	if all {
		prefix = nil
	}
	err := d.view(func(tx *bolt.Tx) error {
		backups := tx.Bucket(bucketBackups)
		c := backups.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			b, err := decodeBackup(k, backups.Bucket(k).Get(keyMeta))
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		return nil
	})
	return out, err
}

// DeleteBackup removes a backup, its files and their chunk lists. Deleting a
// backup that is not there is not an error.
func (d *DB) DeleteBackup(dir, name string) error {
	return d.update(func(tx *bolt.Tx) error {
		backups := tx.Bucket(bucketBackups)
		b := backups.Bucket(backupKey(dir, name))
		if b == nil {
			return nil
		}
		err := b.Bucket(bucketFiles).ForEach(func(k, v []byte) error {
			f, err := decodeFile(k, v)
			if err != nil {
				return err
			}
			return deleteList(tx, f.List)
		})
		if err != nil {
			return err
		}
		return backups.DeleteBucket(backupKey(dir, name))
	})
}

func encodeFile(f File) []byte {
	rec := binary.LittleEndian.AppendUint64(nil, uint64(f.List))
	rec = binary.LittleEndian.AppendUint64(rec, uint64(f.Size))
	return binary.LittleEndian.AppendUint64(rec, uint64(f.Chunks))
}

func decodeFile(name, rec []byte) (File, error) {
	if len(rec) != 24 {
		return File{}, damagedRecord("file", name)
	}
	return File{
		Name:   string(name),
		List:   ListID(binary.LittleEndian.Uint64(rec)),
		Size:   int64(binary.LittleEndian.Uint64(rec[8:])),
		Chunks: int64(binary.LittleEndian.Uint64(rec[16:])),
	}, nil
}

// Commit is a file to commit with the final segment of its chunk list.
type Commit struct {
	File File
	Last Segment
}

// CommitFiles makes files part of a backup, in one transaction, each
// replacing (and dropping the chunk list of) any earlier file of its name.
// Each file's last segment is stored with it (its list allocated if
// File.List is 0), and its list stops being open. It returns false, and
// changes nothing, if the backup is not there.
//
// IMPORTANT: call it only after every chunk on the files' lists is indexed.
func (d *DB) CommitFiles(dir, name string, files []Commit) (found bool, err error) {
	err = d.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBackups).Bucket(backupKey(dir, name))
		if b == nil {
			return nil
		}
		found = true
		for _, c := range files {
			if err := commitFile(tx, b, c.File, c.Last); err != nil {
				return err
			}
		}
		return nil
	})
	return found, err
}

func commitFile(tx *bolt.Tx, b *bolt.Bucket, f File, last Segment) error {
	if len(last.Refs) > 0 {
		var err error
		if f.List, err = putSegment(tx, f.List, last); err != nil {
			return err
		}
	}
	files := b.Bucket(bucketFiles)
	if old := files.Get([]byte(f.Name)); old != nil {
		prev, err := decodeFile([]byte(f.Name), old)
		if err != nil {
			return err
		}
		if err := deleteList(tx, prev.List); err != nil {
			return err
		}
	}
	if err := files.Put([]byte(f.Name), encodeFile(f)); err != nil {
		return err
	}
	return tx.Bucket(bucketOpen).Delete(f.List.key())
}

// Files returns a backup's committed files sorted by name; found is false if
// the backup is not there.
func (d *DB) Files(dir, name string) (files []File, found bool, err error) {
	err = d.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBackups).Bucket(backupKey(dir, name))
		if b == nil {
			return nil
		}
		found = true
		return b.Bucket(bucketFiles).ForEach(func(k, v []byte) error {
			f, err := decodeFile(k, v)
			files = append(files, f)
			return err
		})
	})
	return files, found, err
}

// File returns one committed file of a backup; found is false if the backup
// or the file is not there.
func (d *DB) File(dir, name, file string) (f File, found bool, err error) {
	err = d.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBackups).Bucket(backupKey(dir, name))
		if b == nil {
			return nil
		}
		v := b.Bucket(bucketFiles).Get([]byte(file))
		if v == nil {
			return nil
		}
		found = true
		f, err = decodeFile([]byte(file), v)
		return err
	})
	return f, found, err
}
