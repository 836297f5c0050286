package chunkstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"time"
)

// Pack format. A pack is the stored chunks back to back, each behind a
// header, then a trailer that lists them, then a fixed footer:
//
//	blob 0 | blob 1 | ... | entry 0 | entry 1 | ... | footer
//	blob:   header | stored bytes
//	header: magic "DDSB" | id [32] | stored length u32 | plain length u32 | codec u8 | crc32c of the header before it u32
//	entry:  id [32] | offset u32 | stored length u32 | plain length u32 | codec u8 | slot [64]
//	footer: crc32c of the entries u32 | entry count u32 | magic "DDSPACK" | version u8
//
// All integers are little-endian; an entry's offset is that of the stored
// bytes, after the header. An entry's slot holds, for a delta (CodecDelta),
// the IDs of its bases, an all-zero ID after the last; for a chunk stored
// whole, its DeltaFeatures features, or zeros. A delta's stored bytes name
// its bases too: base count u8 | base IDs | zstd frame. The trailer lets
// the index be rebuilt from a pack with two small reads; the headers let
// ScanPack find every intact chunk of a pack whose trailer or tail is
// damaged. A pack is named by a random ID, so no two packs ever share a
// name: a pack one agent or a collection is deleting can never be written
// again under its name by another.
const (
	headerSize  = 4 + 32 + 4 + 4 + 1 + 4
	slotSize    = max(8*DeltaFeatures, 32*MaxDeltaBases)
	entrySize   = 32 + 4 + 4 + 4 + 1 + slotSize
	footerSize  = 4 + 4 + 8
	blobMagic   = "DDSB"
	packMagic   = "DDSPACK"
	packVersion = 4
)

// DeltaFeatures is how many features (see Features) a chunk stored whole
// carries in its pack entry, and MaxDeltaBases how many bases a delta may
// have. Both are part of the pack format.
const (
	DeltaFeatures = 4
	MaxDeltaBases = 2
)

// PackOverhead is the bytes a pack of n chunks takes besides their stored
// bytes (which, sealed with c, include their own seals): headers, trailer
// (sealed with c) and footer.
func PackOverhead(n int, c *Cipher) int64 {
	return int64(n)*(headerSize+entrySize) + int64(c.Overhead()) + footerSize
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Blob locates a stored chunk inside its pack.
type Blob struct {
	Offset      uint32
	Length      uint32 // stored bytes
	PlainLength uint32
	Codec       Codec
}

// PackEntry is one line of a pack's trailer.
type PackEntry struct {
	ID ID
	Blob
	// Bases are the chunks a delta was compressed against; nil unless
	// Codec is CodecDelta.
	Bases []ID
	// Features are those of a chunk stored whole in a repository that
	// makes deltas; nil otherwise.
	Features []uint64
}

// Location is where a chunk is stored: its pack and its place in it.
type Location struct {
	Pack ID
	Blob
}

// A pack's ID begins with the time its writer named it, in nanoseconds
// since 1970, big-endian, and goes on with random bytes; its object name,
// data/<first 5 hex digits>/<id>, groups packs by about 5 hours. So pack
// names sort by the time they were named, and a process catches up with
// what others wrote by listing the names after the last time it looked
// (see PacksAfter), not every pack.

// NewPackID returns a new pack ID named at t.
func NewPackID(t time.Time) (ID, error) {
	var id ID
	binary.BigEndian.PutUint64(id[:8], uint64(t.UnixNano()))
	_, err := rand.Read(id[8:])
	return id, err
}

// PackTime is the time pack id was named at, by its writer's clock.
func PackTime(id ID) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(id[:8])))
}

// PackName is the object name of a pack: data/<first 5 hex digits>/<id>.
func PackName(id ID) string {
	s := id.String()
	return PackPrefix + s[:packShard] + "/" + s
}

// PacksAfter is the name before every pack named at t or later: the start
// of a listing of packs written since t.
func PacksAfter(t time.Time) string {
	var id ID
	binary.BigEndian.PutUint64(id[:8], uint64(t.UnixNano()))
	return PackName(id)[:len(PackPrefix)+packShard+1+16]
}

// PackPrefix is the prefix under which all packs are listed.
const PackPrefix = "data/"

// packShard is how many hex digits of a pack's ID name its directory.
const packShard = 5

// ParsePackName is the inverse of PackName.
func ParsePackName(name string) (ID, error) {
	if len(name) != len(PackPrefix)+packShard+1+64 || name[:len(PackPrefix)] != PackPrefix {
		return ID{}, fmt.Errorf("chunkstore: %q is not a pack name", name)
	}
	id, err := ParseID(name[len(PackPrefix)+packShard+1:])
	if err != nil || PackName(id) != name {
		return ID{}, fmt.Errorf("chunkstore: %q is not a pack name", name)
	}
	return id, nil
}

// PackBuilder collects encoded chunks into one pack. It is not safe for
// concurrent use.
type PackBuilder struct {
	data    []byte
	entries []PackEntry
}

// NewPackBuilder returns a builder whose buffer holds capacity bytes before
// it has to grow; pass the pack size plus one chunk and its trailer to never
// grow.
func NewPackBuilder(capacity int) *PackBuilder {
	return &PackBuilder{data: make([]byte, 0, capacity)}
}

// Reset empties the builder for a new pack, keeping its buffer. Entries and
// bytes returned by Finish are invalid afterwards.
func (p *PackBuilder) Reset() {
	p.data, p.entries = p.data[:0], p.entries[:0]
}

// Len is the number of bytes the pack holds so far.
func (p *PackBuilder) Len() int { return len(p.data) }

// Count is the number of chunks in the pack so far.
func (p *PackBuilder) Count() int { return len(p.entries) }

// Entries lists the chunks added so far; valid until Reset.
func (p *PackBuilder) Entries() []PackEntry { return p.entries }

// Add appends a chunk as produced by Store.Encode or Store.EncodeDelta.
// A delta's entry takes its bases from its stored bytes.
func (p *PackBuilder) Add(c EncodedChunk) PackEntry {
	e := PackEntry{ID: c.ID, Blob: Blob{Offset: uint32(len(p.data) + headerSize), Length: uint32(len(c.Data)), PlainLength: uint32(c.PlainLength), Codec: c.Codec}, Features: c.Features, Bases: c.Bases}
	start := len(p.data)
	p.data = append(p.data, blobMagic...)
	p.data = append(p.data, c.ID[:]...)
	p.data = binary.LittleEndian.AppendUint32(p.data, e.Length)
	p.data = binary.LittleEndian.AppendUint32(p.data, e.PlainLength)
	p.data = append(p.data, byte(e.Codec))
	p.data = binary.LittleEndian.AppendUint32(p.data, crc32.Checksum(p.data[start:], crcTable))
	p.data = append(p.data, c.Data...)
	p.entries = append(p.entries, e)
	return e
}

// Finish appends the trailer, sealed with c (nil: in plain), and returns
// the pack's bytes and its entries. The builder must not be used again
// until Reset.
func (p *PackBuilder) Finish(c *Cipher) ([]byte, []PackEntry) {
	start := len(p.data)
	p.data = append(p.data[:start], c.begin(nil)...)
	for _, e := range p.entries {
		p.data = append(p.data, e.ID[:]...)
		p.data = binary.LittleEndian.AppendUint32(p.data, e.Offset)
		p.data = binary.LittleEndian.AppendUint32(p.data, e.Length)
		p.data = binary.LittleEndian.AppendUint32(p.data, e.PlainLength)
		p.data = append(p.data, byte(e.Codec))
		p.data = appendSlot(p.data, e)
	}
	p.data = append(p.data[:start], c.sealInPlace(p.data[start:], trailerAD(len(p.entries)))...)
	p.data = binary.LittleEndian.AppendUint32(p.data, crc32.Checksum(p.data[start:], crcTable))
	p.data = binary.LittleEndian.AppendUint32(p.data, uint32(len(p.entries)))
	p.data = append(p.data, packMagic...)
	p.data = append(p.data, packVersion)
	return p.data, p.entries
}

func trailerAD(n int) []byte { return binary.LittleEndian.AppendUint32([]byte("trailer"), uint32(n)) }

// ParsePackFooter checks a pack's last footerSize bytes and returns how many
// bytes the trailer before it takes, sealed with c. packSize bounds the
// count, so a damaged footer cannot make a caller allocate more than the
// pack holds.
func ParsePackFooter(footer []byte, packSize int64, c *Cipher) (trailerLen int64, err error) {
	if len(footer) != footerSize || string(footer[8:15]) != packMagic {
		return 0, fmt.Errorf("chunkstore: pack footer: bad magic: %w", ErrCorrupt)
	}
	if footer[15] != packVersion {
		return 0, fmt.Errorf("chunkstore: pack format version %d, this build reads %d: %w", footer[15], packVersion, ErrUnsupportedVersion)
	}
	n := int64(binary.LittleEndian.Uint32(footer[4:8]))
	if n*entrySize+int64(c.Overhead()) > packSize-footerSize {
		return 0, fmt.Errorf("chunkstore: pack footer: %d entries do not fit a pack of %d bytes: %w", n, packSize, ErrCorrupt)
	}
	return n*entrySize + int64(c.Overhead()), nil
}

// ParsePackTrailer decodes the entries and footer at the end of a pack of
// packSize bytes (trailer is the last trailerLen+footerSize bytes), opening
// them with c. Every entry must lie inside the pack's data section.
func ParsePackTrailer(trailer []byte, packSize int64, c *Cipher) ([]PackEntry, error) {
	if len(trailer) < footerSize {
		return nil, fmt.Errorf("chunkstore: pack trailer too short: %w", ErrCorrupt)
	}
	footer := trailer[len(trailer)-footerSize:]
	n, err := ParsePackFooter(footer, packSize, c)
	if err != nil {
		return nil, err
	}
	if int64(len(trailer)) != n+footerSize {
		return nil, fmt.Errorf("chunkstore: pack trailer is %d bytes, footer says %d: %w", len(trailer), n+footerSize, ErrCorrupt)
	}
	raw := trailer[:n]
	if crc32.Checksum(raw, crcTable) != binary.LittleEndian.Uint32(footer[0:4]) {
		return nil, fmt.Errorf("chunkstore: pack trailer checksum mismatch: %w", ErrCorrupt)
	}
	count := int(binary.LittleEndian.Uint32(footer[4:8]))
	if raw, err = c.open(nil, raw, trailerAD(count)); err != nil {
		return nil, fmt.Errorf("chunkstore: pack trailer: %w", err)
	}
	dataEnd := packSize - int64(len(trailer))
	entries := make([]PackEntry, 0, count)
	for len(raw) > 0 {
		var e PackEntry
		copy(e.ID[:], raw[:32])
		e.Offset = binary.LittleEndian.Uint32(raw[32:])
		e.Length = binary.LittleEndian.Uint32(raw[36:])
		e.PlainLength = binary.LittleEndian.Uint32(raw[40:])
		e.Codec = Codec(raw[44])
		slotOK := parseSlot(&e, raw[45:entrySize])
		raw = raw[entrySize:]
		if !slotOK || e.Offset < headerSize || int64(e.Offset)+int64(e.Length) > dataEnd || e.PlainLength > MaxChunkSize || e.Codec > CodecDelta {
			return nil, fmt.Errorf("chunkstore: pack entry for chunk %s out of range: %w", e.ID, ErrCorrupt)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// ReadPackTrailer reads and decodes the trailer of the pack object name, of
// size bytes, as listed by the backend, opening it with c.
func ReadPackTrailer(ctx context.Context, b Backend, name string, size int64, c *Cipher) ([]PackEntry, error) {
	if size < footerSize {
		return nil, fmt.Errorf("chunkstore: pack %s has %d bytes: %w", name, size, ErrCorrupt)
	}
	// One read of the tail holds the whole trailer of most packs (a
	// 16 MiB pack of 64 KiB chunks has 12 KiB of it).
	tail, err := readRange(ctx, b, name, size-min(size, trailerGuess), min(size, trailerGuess))
	if err != nil {
		return nil, err
	}
	n, err := ParsePackFooter(tail[len(tail)-footerSize:], size, c)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", name, err)
	}
	trailer := tail[max(0, int64(len(tail))-footerSize-n):]
	if int64(len(trailer)) < n+footerSize {
		if trailer, err = readRange(ctx, b, name, size-footerSize-n, n+footerSize); err != nil {
			return nil, err
		}
	}
	entries, err := ParsePackTrailer(trailer, size, c)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", name, err)
	}
	return entries, nil
}

// trailerGuess is how much of a pack's end ReadPackTrailer reads first.
const trailerGuess = 64 << 10

func readRange(ctx context.Context, b Backend, name string, off, n int64) ([]byte, error) {
	rc, err := b.Get(ctx, name, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("chunkstore: read %s: %w", name, err)
	}
	return buf, nil
}

// ScanPack finds the chunks of a pack by their headers alone, for a pack
// whose trailer or footer is damaged: it walks the blobs from the start
// and, past a damaged header, searches on for the next one. It returns
// every blob whose header is intact and lies inside data, without a
// delta's bases; the caller verifies their contents and finds the bases
// (Store.Salvage does). Blobs that a damaged
// header hides are not returned.
func ScanPack(data []byte) []PackEntry {
	var entries []PackEntry
	for off := 0; off+headerSize <= len(data); {
		e, ok := parseHeader(data, off)
		if !ok {
			next := bytes.Index(data[off+1:], []byte(blobMagic))
			if next < 0 {
				break
			}
			off += 1 + next
			continue
		}
		entries = append(entries, e)
		off = int(e.Offset + e.Length)
	}
	return entries
}

// parseHeader decodes the blob header at data[off:], if it is intact and
// its blob lies inside data.
func parseHeader(data []byte, off int) (PackEntry, bool) {
	h := data[off : off+headerSize]
	if string(h[:4]) != blobMagic || crc32.Checksum(h[:headerSize-4], crcTable) != binary.LittleEndian.Uint32(h[headerSize-4:]) {
		return PackEntry{}, false
	}
	var e PackEntry
	copy(e.ID[:], h[4:36])
	e.Offset = uint32(off + headerSize)
	e.Length = binary.LittleEndian.Uint32(h[36:])
	e.PlainLength = binary.LittleEndian.Uint32(h[40:])
	e.Codec = Codec(h[44])
	if int64(e.Offset)+int64(e.Length) > int64(len(data)) || e.PlainLength > MaxChunkSize || e.Codec > CodecDelta {
		return PackEntry{}, false
	}
	return e, true
}

// appendSlot appends e's slot: its bases or its features.
func appendSlot(b []byte, e PackEntry) []byte {
	start := len(b)
	for _, id := range e.Bases {
		b = append(b, id[:]...)
	}
	for _, f := range e.Features {
		b = binary.LittleEndian.AppendUint64(b, f)
	}
	return append(b, make([]byte, slotSize-(len(b)-start))...)
}

// parseSlot sets e's bases or features from its slot. A delta's slot must
// name 1 to MaxDeltaBases bases and hold zeros after them.
func parseSlot(e *PackEntry, slot []byte) bool {
	if e.Codec != CodecDelta {
		if slices.ContainsFunc(slot, func(b byte) bool { return b != 0 }) {
			e.Features = make([]uint64, DeltaFeatures)
			for i := range e.Features {
				e.Features[i] = binary.LittleEndian.Uint64(slot[8*i:])
			}
		}
		return true
	}
	for i := 0; i < MaxDeltaBases; i++ {
		id := ID(slot[32*i:][:32])
		if id == (ID{}) {
			break
		}
		e.Bases = append(e.Bases, id)
	}
	rest := slot[32*len(e.Bases):]
	return len(e.Bases) > 0 && !slices.ContainsFunc(rest, func(b byte) bool { return b != 0 })
}
