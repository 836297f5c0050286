// Package tree owns dedupctl's backups of directory trees: the catalog that
// records every entry of a tree (its path as raw bytes, type, mode, owner,
// times, link target, hard link, holes), the walk that lists a source tree
// into it and opens its files without following what changed since, and the
// restore that writes it back under a target without ever leaving it.
//
// The catalog is stored as one file of the backup beside the files' data,
// which the backup stores under numbered names: a tree's paths are any
// bytes, a backup's file names are not.
package tree

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"strings"
	"time"
	"unicode/utf8"
)

// Version is the catalog format Write writes and Read reads.
const Version = 2

// ErrCatalog is wrapped by Read's errors: the catalog is not one this
// version wrote, or is damaged.
var ErrCatalog = errors.New("tree: bad catalog")

// Type is the kind of an entry.
type Type string

// The types of entries. Sockets are not backed up: they hold no data and
// their server makes them again.
const (
	File    Type = "file"
	Dir     Type = "dir"
	Symlink Type = "symlink"
	FIFO    Type = "fifo"
	Char    Type = "char"  // character device
	Block   Type = "block" // block device
)

// Entry is one entry of a tree.
type Entry struct {
	// Path is slash-separated and relative: the absolute path it was backed
	// up from, without the leading slash. Any bytes but NUL and slash make a
	// name, including backslashes and bytes that are not UTF-8.
	Path Name `json:"path"`
	Type Type `json:"type"`
	// Stored is the backup file holding a regular file's data.
	Stored string `json:"stored,omitempty"`
	Size   int64  `json:"size,omitempty"`
	// Mode holds the permission bits with setuid, setgid and sticky, as
	// in st_mode (07777).
	Mode  uint32    `json:"mode"`
	UID   uint32    `json:"uid"`
	GID   uint32    `json:"gid"`
	MTime time.Time `json:"mtime"`
	// Target is where a symlink points, as stored in the link.
	Target Name `json:"target,omitempty"`
	// HardLink is the path of an earlier entry that is the same file; the
	// entry shares its Stored data.
	HardLink Name `json:"hardlink,omitempty"`
	// Rdev is a device's number.
	Rdev uint64 `json:"rdev,omitempty"`
	// Sparse marks a file that had holes: its runs of zeros are restored
	// as holes.
	Sparse bool `json:"sparse,omitempty"`
	// XAttrs are the extended attributes, POSIX ACLs (system.posix_acl_*)
	// and file capabilities (security.capability) included.
	XAttrs map[string][]byte `json:"xattrs,omitempty"`
	// Dev, Inode and CTime identify the file on its file system: with Size
	// and MTime, they tell the next backup that a file is unchanged.
	Dev   uint64    `json:"dev,omitempty"`
	Inode uint64    `json:"inode,omitempty"`
	CTime time.Time `json:"ctime"`
}

// FileMode returns e's permission bits as an fs.FileMode.
func (e Entry) FileMode() fs.FileMode {
	m := fs.FileMode(e.Mode & 0o777)
	if e.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if e.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if e.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// Name is a path or link target: any bytes. In JSON it is a string when it
// is valid UTF-8, and {"base64": "..."} otherwise, so that no byte is lost.
type Name string

type rawName struct {
	Base64 []byte `json:"base64"`
}

// MarshalJSON implements json.Marshaler.
func (n Name) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(n)) {
		return json.Marshal(string(n))
	}
	return json.Marshal(rawName{[]byte(n)})
}

// UnmarshalJSON implements json.Unmarshaler.
func (n *Name) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		var r rawName
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		*n = Name(r.Base64)
		return nil
	}
	return json.Unmarshal(b, (*string)(n))
}

// ValidPath reports whether p is a path an entry may have: relative,
// slash-separated, without empty, "." or ".." parts and without NUL, so
// that joined to a directory it names something inside it.
func ValidPath(p string) bool {
	if p == "" || strings.IndexByte(p, 0) >= 0 {
		return false
	}
	for part := range strings.SplitSeq(p, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

type header struct {
	Catalog int `json:"catalog"`
}

// Write writes a catalog of entries: a header, then one JSON line per
// entry, so that neither it nor Read has a limit on the size.
func Write(w io.Writer, entries iter.Seq[Entry]) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(header{Version}); err != nil {
		return err
	}
	for e := range entries {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// Read reads a catalog that Write wrote and checks it: every path valid and
// listed once, every hard link naming an earlier file. Its errors wrap
// ErrCatalog, or the reader's error.
func Read(r io.Reader) ([]Entry, error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 1<<16))
	var h header
	if err := dec.Decode(&h); err != nil {
		return nil, badCatalog(err)
	}
	if h.Catalog != Version {
		return nil, fmt.Errorf("%w: format %d, this dedupctl reads format %d (catalogs before v0.1.0 are not migrated)", ErrCatalog, h.Catalog, Version)
	}
	var out []Entry
	seen := map[Name]Type{}
	for {
		var e Entry
		err := dec.Decode(&e)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, badCatalog(err)
		}
		if err := check(e, seen); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrCatalog, len(out), err)
		}
		seen[e.Path] = e.Type
		out = append(out, e)
	}
}

// badCatalog wraps a decoding error, keeping the reader's own errors
// (damage found while reading, a cancelled context) matchable.
func badCatalog(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	if errors.As(err, &se) || errors.As(err, &te) || err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: %v", ErrCatalog, err)
	}
	return err
}

func check(e Entry, seen map[Name]Type) error {
	if !ValidPath(string(e.Path)) {
		return fmt.Errorf("path %q reaches outside the target", e.Path)
	}
	if _, dup := seen[e.Path]; dup {
		return fmt.Errorf("path %q listed twice", e.Path)
	}
	switch e.Type {
	case File:
		if e.HardLink != "" && seen[e.HardLink] != File {
			return fmt.Errorf("%q: hard link to %q, which is not an earlier file", e.Path, e.HardLink)
		}
		if e.Stored == "" {
			return fmt.Errorf("%q: no stored data", e.Path)
		}
	case Dir, Symlink, FIFO, Char, Block:
	default:
		return fmt.Errorf("%q: unknown type %q", e.Path, e.Type)
	}
	if e.Mode&^0o7777 != 0 {
		return fmt.Errorf("%q: mode %o", e.Path, e.Mode)
	}
	return nil
}
