package index

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/zeebo/blake3"
)

// Manifest format: the durable record of an ended backup, stored as the
// object ManifestName(dir, name). All integers are varints.
//
//	magic "DDSMANI" | version u8
//	dir | name | started (unix ns) | ended (unix ns) | file count
//	per file: name | size | chunk count | per chunk: id [32] | plain length
//	BLAKE3-256 of all the bytes before it [32]
//
// Strings are a length followed by bytes.
const (
	manifestMagic   = "DDSMANI"
	manifestVersion = 1
	maxStringLen    = 4096
)

// ManifestPrefix is the prefix under which all manifests are listed.
const ManifestPrefix = "manifests/"

// ManifestName is the object name of a backup's manifest. The directory is
// path-escaped into one name part, so "ks/0" and backup names never collide.
func ManifestName(dir, name string) string {
	return ManifestPrefix + url.PathEscape(dir) + "/" + name
}

// RemovedPrefix is where removals of backups are recorded.
const RemovedPrefix = "removed/"

// RemovedName is the object name that records the removal of the backup
// dir/name started at started: its manifest may be missing without damage.
// The start time tells it from an earlier or later backup of that name.
func RemovedName(dir, name string, started time.Time) string {
	return RemovedPrefix + url.PathEscape(dir) + "/" + name + "@" + strconv.FormatInt(started.UnixNano(), 10)
}

// RunningPrefix is where backups in progress are published.
const RunningPrefix = "running/"

// RunningName is the object name that says backup dir/name is in progress
// in some process: no other process may start one of that name.
func RunningName(dir, name string) string {
	return RunningPrefix + url.PathEscape(dir) + "/" + name
}

// Running is the content of a RunningName object.
type Running struct {
	Lease   string    `json:"lease"` // the lease object of the process running the backup
	Started time.Time `json:"started"`
}

// ReadRunning reads the RunningName object obj.
func ReadRunning(ctx context.Context, b chunkstore.Backend, obj string) (Running, error) {
	var m Running
	rc, err := b.Get(ctx, obj, 0, -1)
	if err != nil {
		return m, err
	}
	defer rc.Close()
	if err := json.NewDecoder(io.LimitReader(rc, 1<<16)).Decode(&m); err != nil {
		return m, fmt.Errorf("index: %s: %w: %w", obj, chunkstore.ErrCorrupt, err)
	}
	return m, nil
}

// ParseManifestName is the inverse of ManifestName.
func ParseManifestName(object string) (dir, name string, err error) {
	return parseName(object, ManifestPrefix)
}

// ParseRunningName is the inverse of RunningName.
func ParseRunningName(object string) (dir, name string, err error) {
	return parseName(object, RunningPrefix)
}

func parseName(object, prefix string) (dir, name string, err error) {
	rest, ok := strings.CutPrefix(object, prefix)
	escaped, name, ok2 := strings.Cut(rest, "/")
	if ok && ok2 {
		if dir, err = url.PathUnescape(escaped); err == nil && prefix+url.PathEscape(dir)+"/"+name == object {
			return dir, name, nil
		}
	}
	return "", "", fmt.Errorf("index: %q is not a name under %s", object, prefix)
}

// maxNamePart and maxObjectName bound what every backend holds: a part of
// a path on common file systems, and an S3 key with room for a prefix.
const (
	maxNamePart   = 255
	maxObjectName = 900
)

// CheckManifestName reports a backup whose manifest name no backend could
// hold: a directory over 255 bytes once escaped into one name part, or a
// name too long as a whole. Name rules (package storage) are the caller's
// to check first.
func CheckManifestName(dir, name string) error {
	if n := len(url.PathEscape(dir)); n > maxNamePart {
		return fmt.Errorf("backup directory %q takes %d bytes in the repository (each / takes 3), at most %d", dir, n, maxNamePart)
	}
	if n := len(ManifestName(dir, name)); n > maxObjectName {
		return fmt.Errorf("backup %s/%s takes %d bytes in the repository, at most %d", dir, name, n, maxObjectName)
	}
	return nil
}

// ManifestFile is one file of a decoded manifest.
type ManifestFile struct {
	Name string
	Size int64
	Refs []Ref
}

// Manifest is a decoded manifest.
type Manifest struct {
	Backup Backup
	Files  []ManifestFile
}

// WriteManifest writes the manifest of a backup as the index holds it now,
// stamped as ended at ended. It reads each list segment in its own short
// transaction, so memory stays at one segment whatever the backup's size.
func (d *DB) WriteManifest(w io.Writer, dir, name string, ended time.Time) error {
	b, found, err := d.Backup(dir, name)
	if err != nil {
		return err
	}
	files, _, err := d.Files(dir, name)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("index: manifest of %s/%s: no such backup", dir, name)
	}
	e := newManifestEncoder(w, dir, name, b.Started, ended, len(files))
	for _, f := range files {
		e.file(f.Name, f.Size, f.Chunks)
		n := int64(0)
		err := d.ListRefs(f.List, func(refs []Ref) error {
			e.refs(refs)
			n += int64(len(refs))
			return nil
		})
		if err != nil {
			return err
		}
		if n != f.Chunks {
			return fmt.Errorf("index: file %s of %s/%s lists %d chunks, its record says %d: %w", f.Name, dir, name, n, f.Chunks, ErrDamaged)
		}
	}
	return e.finish()
}

// EncodeManifest writes m as a manifest, as a repair does for a backup it
// salvaged.
func EncodeManifest(w io.Writer, m Manifest) error {
	e := newManifestEncoder(w, m.Backup.Dir, m.Backup.Name, m.Backup.Started, m.Backup.Ended, len(m.Files))
	for _, f := range m.Files {
		e.file(f.Name, f.Size, int64(len(f.Refs)))
		e.refs(f.Refs)
	}
	return e.finish()
}

// manifestEncoder writes the manifest format, hashing as it goes.
type manifestEncoder struct {
	w   io.Writer
	h   *blake3.Hasher
	bw  *bufio.Writer
	tmp []byte
}

func newManifestEncoder(w io.Writer, dir, name string, started, ended time.Time, files int) *manifestEncoder {
	h := blake3.New()
	e := &manifestEncoder{w: w, h: h, bw: bufio.NewWriter(io.MultiWriter(w, h))}
	e.bw.WriteString(manifestMagic)
	e.bw.WriteByte(manifestVersion)
	e.str(dir)
	e.str(name)
	e.uvarint(uint64(started.UnixNano()))
	e.uvarint(uint64(ended.UnixNano()))
	e.uvarint(uint64(files))
	return e
}

func (e *manifestEncoder) uvarint(v uint64) {
	e.tmp = binary.AppendUvarint(e.tmp[:0], v)
	e.bw.Write(e.tmp)
}

func (e *manifestEncoder) str(s string) { e.uvarint(uint64(len(s))); e.bw.WriteString(s) }

func (e *manifestEncoder) file(name string, size, chunks int64) {
	e.str(name)
	e.uvarint(uint64(size))
	e.uvarint(uint64(chunks))
}

func (e *manifestEncoder) refs(refs []Ref) {
	for _, r := range refs {
		e.bw.Write(r.ID[:])
		e.uvarint(uint64(r.Length))
	}
}

// finish writes the checksum; the first write error, if any, is returned.
func (e *manifestEncoder) finish() error {
	if err := e.bw.Flush(); err != nil {
		return err
	}
	_, err := e.w.Write(e.h.Sum(nil))
	return err
}

// DecodeManifest reads a manifest. Allocation grows with the bytes actually
// read, never with a count the input claims, so damaged input gives an error
// wrapping chunkstore.ErrCorrupt, never a huge allocation. With that error
// it returns what it could decode, for a repair to salvage: the backup and
// every file before the damage (all files, when only the checksum
// disagrees; any of them may then hold the damaged bytes).
func DecodeManifest(r io.Reader) (Manifest, error) {
	h := blake3.New()
	br := bufio.NewReader(r)
	d := &decoder{r: io.TeeReader(br, h)}
	var m Manifest
	magic := d.bytes(len(manifestMagic) + 1)
	if d.err == nil && string(magic[:len(manifestMagic)]) != manifestMagic {
		d.fail("bad magic")
	}
	if d.err == nil && magic[len(manifestMagic)] != manifestVersion {
		return Manifest{}, fmt.Errorf("index: manifest version %d: %w", magic[len(manifestMagic)], chunkstore.ErrUnsupportedVersion)
	}
	m.Backup.Dir, m.Backup.Name = d.str(), d.str()
	m.Backup.Started, m.Backup.Ended = time.Unix(0, int64(d.uvarint())), time.Unix(0, int64(d.uvarint()))
	nfiles := d.uvarint()
	if d.err != nil {
		return Manifest{}, d.err // nothing to salvage without the header
	}
	m.Backup.State = Ended
	for i := uint64(0); i < nfiles && d.err == nil; i++ {
		f := ManifestFile{Name: d.str(), Size: int64(d.uvarint())}
		nrefs := d.uvarint()
		var sum int64
		for j := uint64(0); j < nrefs && d.err == nil; j++ {
			var ref Ref
			copy(ref.ID[:], d.bytes(32))
			l := d.uvarint()
			if l > chunkstore.MaxChunkSize {
				d.fail("chunk length out of range")
			}
			ref.Length = uint32(l)
			sum += int64(l)
			f.Refs = append(f.Refs, ref)
		}
		if d.err == nil && sum != f.Size {
			d.fail(fmt.Sprintf("file %s: chunks add up to %d bytes, size says %d", f.Name, sum, f.Size))
		}
		if d.err == nil {
			m.Files = append(m.Files, f)
		}
	}
	if d.err != nil {
		return m, d.err
	}
	want := h.Sum(nil)
	got := make([]byte, 32)
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, want) {
		return m, fmt.Errorf("index: manifest checksum mismatch: %w", chunkstore.ErrCorrupt)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return m, fmt.Errorf("index: manifest has trailing bytes: %w", chunkstore.ErrCorrupt)
	}
	return m, nil
}

type decoder struct {
	r   io.Reader
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("index: manifest: %s: %w", what, chunkstore.ErrCorrupt)
	}
}

func (d *decoder) bytes(n int) []byte {
	b := make([]byte, n)
	if d.err != nil {
		return b
	}
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.fail("truncated")
	}
	return b
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(byteReader{d.r})
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		d.fail(err.Error())
	}
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if n > maxStringLen {
		d.fail("string too long")
		return ""
	}
	return string(d.bytes(int(n)))
}

type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var p [1]byte
	_, err := io.ReadFull(b.r, p[:])
	return p[0], err
}
