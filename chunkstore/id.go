// Package chunkstore owns the bytes of a repository: how streams are cut into
// content-defined chunks, how a chunk is named (keyed BLAKE3-256), compressed
// (zstd) and packed into immutable pack files, the repository's config object,
// and the Backend interface through which every object reaches storage. The
// backends sit beside it, one sub-package each: local (a directory, or NFS)
// and s3, each wired to the conformance suite in backendtest.
//
// It knows nothing of backups, manifests or indexes: those belong to the
// index and storage/dedup packages, which use the types defined here.
package chunkstore

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrCorrupt is wrapped by every error that reports data which does not match
// its name or format: a chunk whose hash differs from its ID, a pack trailer
// that does not parse, a config object that is not JSON.
var ErrCorrupt = errors.New("corrupt data")

// ErrNotExist is wrapped by Backend errors about an object that is not there.
var ErrNotExist = errors.New("object does not exist")

// ErrExist is wrapped by Backend.Create's error when the object is already
// there.
var ErrExist = errors.New("object already exists")

// ErrUnsupportedVersion is returned when a repository's config names a format
// version this build cannot read.
var ErrUnsupportedVersion = errors.New("unsupported repository format version")

// ID names a chunk (keyed BLAKE3-256 of its plain bytes) or a pack (random).
type ID [32]byte

// String returns the ID as 64 lower-case hex digits.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses 64 hex digits as produced by ID.String.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("chunkstore: invalid ID %q: want %d hex digits", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("chunkstore: invalid ID %q: %w", s, err)
	}
	return id, nil
}

// MarshalText encodes the ID as String does, so IDs read well in JSON.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	*id = v
	return err
}
