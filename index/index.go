// Package index owns index.db, the bbolt database that maps chunk IDs to
// their places in packs (every copy, and which packs are condemned) and
// records every backup, its files and each file's ordered chunk list. It also owns the manifest format, the repository object
// that lets the backup records be rebuilt.
//
// Everything in index.db is derived: packs (through their trailers),
// manifest objects and condemnations hold the same facts. Transactions are short and never
// span I/O outside the database.
package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrInUse is returned by Open when another process holds the database.
var ErrInUse = errors.New("repository in use by another process")

// ErrDamaged is wrapped by the errors of Open and of every method when
// index.db is damaged: it does not parse, is shorter than its own pages
// say, or a page read faults. The index is derived data: move it aside and
// rebuild it.
var ErrDamaged = errors.New("index.db is damaged")

var (
	bucketChunks    = []byte("chunks")    // chunk ID → location
	bucketPacks     = []byte("packs")     // pack ID → size, count, created
	bucketBackups   = []byte("backups")   // dir \x00 name → bucket {meta, files}
	bucketLists     = []byte("lists")     // list ID, segment → refs
	bucketOpen      = []byte("open")      // list ID → nothing: lists of writers not yet committed
	bucketCopies    = []byte("copies")    // chunk ID, pack ID → location: more copies of indexed chunks
	bucketCondemned = []byte("condemned") // pack ID → nothing: packs a shared collection is deleting
	bucketDamaged   = []byte("damaged")   // object name → what is wrong: packs and manifests that do not parse
	keyMeta         = []byte("meta")
	bucketFiles     = []byte("files")
)

// DB is an open index.db. It is safe for concurrent use.
type DB struct {
	db *bolt.DB
}

// Open opens or creates the index at path. If another process holds it,
// Open gives up after timeout with an error wrapping ErrInUse; if it is
// damaged, with one wrapping ErrDamaged. A file that cannot be opened for
// writing gives the error of the file system (fs.ErrPermission, or EROFS).
func Open(path string, timeout time.Duration) (d *DB, err error) {
	defer recoverDamaged(nil, &err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, FreelistType: bolt.FreelistMapType})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("index: %s: %w", path, ErrInUse)
	case fileSystemTrouble(err):
		return nil, fmt.Errorf("index: open %s: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("index: open %s: %w: %w", path, ErrDamaged, err)
	}
	d = &DB{db: db}
	err = d.update(func(tx *bolt.Tx) error {
		// A file cut short (a crash of the file system, a full disk) opens,
		// and then faults where its pages are missing.
		if fi, err := os.Stat(path); err != nil {
			return err
		} else if fi.Size() < tx.Size() {
			return fmt.Errorf("%w: %d bytes, its pages need %d", ErrDamaged, fi.Size(), tx.Size())
		}
		for _, b := range append(dataBuckets, bucketMeta) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		if !errors.Is(err, ErrDamaged) && !fileSystemTrouble(err) {
			err = fmt.Errorf("%w: %w", ErrDamaged, err) // such as a page count that grows the file past its limit
		}
		return nil, fmt.Errorf("index: init %s: %w", path, err)
	}
	return d, nil
}

// fileSystemTrouble reports errors of the file system rather than of the
// index's contents: a file that is missing, may not be written, or has no
// room to grow.
func fileSystemTrouble(err error) bool {
	for _, e := range []error{fs.ErrNotExist, fs.ErrPermission, syscall.EROFS, syscall.ENOSPC, syscall.EDQUOT} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// view and update run a transaction, reporting a damaged page (bbolt
// panics on one, and a page past the end of a truncated file faults) as an
// error wrapping ErrDamaged instead of crashing the process. An index
// found damaged marks itself not ready, as far as it still can, so that
// the next open rebuilds it.
func (d *DB) view(fn func(*bolt.Tx) error) (err error) {
	defer recoverDamaged(d.db, &err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return d.db.View(fn)
}

func (d *DB) update(fn func(*bolt.Tx) error) (err error) {
	defer recoverDamaged(d.db, &err)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return d.db.Update(fn)
}

// recoverDamaged, deferred, turns a panic into an error wrapping
// ErrDamaged, and marks db (if not nil) not ready when it is damaged.
func recoverDamaged(db *bolt.DB, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("index: %w: %v", ErrDamaged, r)
	}
	if errors.Is(*err, syscall.EFBIG) { // a damaged page count grew the file
		*err = fmt.Errorf("index: %w: %w", ErrDamaged, *err)
	}
	if db == nil || !errors.Is(*err, ErrDamaged) {
		return
	}
	func() {
		defer func() { recover() }()
		db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyReady) })
	}()
}

// damagedRecord reports a record that does not decode, quoting at most
// the start of its key: a damaged page can give a key of any length.
func damagedRecord(what string, key []byte) error {
	return fmt.Errorf("index: %s record %q: %w", what, key[:min(len(key), 64)], ErrDamaged)
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

// Pack is the index's record of a stored pack.
type Pack struct {
	ID      chunkstore.ID
	Size    int64
	Chunks  int
	Created time.Time
}

func encodePack(p Pack) []byte {
	rec := binary.LittleEndian.AppendUint64(nil, uint64(p.Size))
	rec = binary.LittleEndian.AppendUint32(rec, uint32(p.Chunks))
	return binary.LittleEndian.AppendUint64(rec, uint64(p.Created.UnixNano()))
}

const locationSize = 32 + 4 + 4 + 4 + 1

func encodeLocation(l chunkstore.Location) []byte {
	b := make([]byte, 0, locationSize)
	b = append(b, l.Pack[:]...)
	b = binary.LittleEndian.AppendUint32(b, l.Offset)
	b = binary.LittleEndian.AppendUint32(b, l.Length)
	b = binary.LittleEndian.AppendUint32(b, l.PlainLength)
	return append(b, byte(l.Codec))
}

func decodeLocation(b []byte) (chunkstore.Location, error) {
	var l chunkstore.Location
	if len(b) != locationSize {
		return l, fmt.Errorf("index: chunk record of %d bytes: %w", len(b), ErrDamaged)
	}
	copy(l.Pack[:], b)
	l.Offset = binary.LittleEndian.Uint32(b[32:])
	l.Length = binary.LittleEndian.Uint32(b[36:])
	l.PlainLength = binary.LittleEndian.Uint32(b[40:])
	l.Codec = chunkstore.Codec(b[44])
	return l, nil
}

// Lookup returns where chunk id is stored, and false if it is not indexed.
func (d *DB) Lookup(id chunkstore.ID) (loc chunkstore.Location, found bool, err error) {
	err = d.view(func(tx *bolt.Tx) error {
		loc, found, err = primary(tx, id)
		return err
	})
	return loc, found, err
}

// Stats counts the index's chunks and packs and the packs' bytes.
type Stats struct {
	Chunks      int
	Packs       int
	StoredBytes int64
}

// Stats returns the index's totals.
func (d *DB) Stats() (Stats, error) {
	var s Stats
	err := d.view(func(tx *bolt.Tx) error {
		s.Chunks = tx.Bucket(bucketChunks).Stats().KeyN
		return tx.Bucket(bucketPacks).ForEach(func(k, v []byte) error {
			p, err := decodePack(k, v)
			s.Packs++
			s.StoredBytes += p.Size
			return err
		})
	})
	return s, err
}
