package chunkstore

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Backend stores named objects. Names are slash-separated relative paths such
// as "config", "data/18a2b/<pack id>" or "manifests/<dir>/<name>".
//
// Every method is safe for concurrent use. A Backend must pass the suite in
// chunkstore/backendtest.
type Backend interface {
	// Put stores the bytes read from r under name. The object appears whole or
	// not at all, and replaces any earlier object of that name. When Put
	// returns nil the object is durable.
	Put(ctx context.Context, name string, r io.Reader) error

	// Create stores the bytes read from r under name unless an object of
	// that name exists, and then fails with an error wrapping ErrExist and
	// leaves that object as it is. Of many Creates of one name at once,
	// one succeeds. A backend whose server cannot refuse an existing name
	// says so in its documentation; callers re-read what they created.
	Create(ctx context.Context, name string, r io.Reader) error

	// Get returns length bytes of the object starting at offset; a negative
	// length reads to the end. A missing object gives an error wrapping
	// ErrNotExist. A range past the end gives an error from the reader.
	Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)

	// List calls fn for every object whose name starts with prefix and, if
	// after is not empty, sorts after it (byte-wise), in no particular
	// order: a listing resumed where an earlier one stopped costs only what
	// is new, as S3's StartAfter does. An error from fn stops the listing
	// and is returned.
	List(ctx context.Context, prefix, after string, fn func(ObjectInfo) error) error

	// Delete removes the object. Deleting an object that is not there is not
	// an error, so that an interrupted cleanup can simply run again.
	Delete(ctx context.Context, name string) error

	// ListPartial calls fn for every write that never completed (a
	// temporary file, an incomplete multipart upload), in progress or left
	// by a process that died, with the time it began. Its names are for
	// DeletePartial only; List never lists them.
	ListPartial(ctx context.Context, fn func(ObjectInfo) error) error

	// DeletePartial removes a write ListPartial listed. IMPORTANT: a write
	// still in progress then fails; callers remove only old ones.
	DeletePartial(ctx context.Context, name string) error
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// CheckObjectName rejects names that are empty, absolute, or contain empty,
// "." or ".." parts, so that no name can reach outside a backend's root.
func CheckObjectName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") {
		return fmt.Errorf("chunkstore: invalid object name %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." || strings.ContainsRune(part, '\\') {
			return fmt.Errorf("chunkstore: invalid object name %q", name)
		}
	}
	return nil
}

// ReadObject reads object name whole. With limit above 0, an object of
// more than limit bytes gives an error wrapping ErrCorrupt, after reading
// no more than limit+1 bytes of it. A missing object gives the backend's
// error, which wraps ErrNotExist.
func ReadObject(ctx context.Context, b Backend, name string, limit int64) ([]byte, error) {
	rc, err := b.Get(ctx, name, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var r io.Reader = rc
	if limit > 0 {
		r = io.LimitReader(rc, limit+1)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("chunkstore: read %s: %w", name, err)
	}
	if limit > 0 && int64(len(data)) > limit {
		return nil, fmt.Errorf("chunkstore: %s is larger than %d bytes: %w", name, limit, ErrCorrupt)
	}
	return data, nil
}
