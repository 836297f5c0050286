package chunkstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/zeebo/blake3"
)

// Store is a repository's chunk layer: its config and the backend holding its
// objects. It names, encodes, packs and loads chunks. A Store is safe for
// concurrent use.
type Store struct {
	cfg     Config
	backend Backend // sealedBackend around raw if encrypted
	raw     Backend
	cipher  *Cipher // nil: unencrypted
	master  []byte
	slot    string
	codec   *codec
	hashers sync.Pool
	locate  BaseLocator // nil: no delta can be decoded
	deltas  DeltaDecoder
	bufs    sync.Pool // *[]byte of the max chunk size, for the bases of deltas
	runs    baseRuns
}

// BaseLocator returns where chunk id, a chunk stored whole that deltas
// name as their base, is stored, and the size of the pack holding it. The
// repository's index knows where chunks are; the Store does not.
type BaseLocator func(ctx context.Context, id ID) (loc Location, packSize int64, err error)

// SetBaseLocator tells s where to find the bases of deltas (until it is
// set, loading a delta fails), and how to read them: runBytes 0 reads each
// base alone, as suits a local disk, where a read costs little; more reads
// runBytes of its pack from each base on, for the bases after it (see
// baseRuns), as suits object storage, where each read is a request.
func (s *Store) SetBaseLocator(f BaseLocator, runBytes int) {
	s.locate, s.runs.bytes = f, int64(runBytes)
}

// Create writes cfg as the config of a new repository on b and opens it.
// If cfg.Encryption is EncryptionAESGCM, it draws a master key, stores a
// key slot that secret opens, keys the chunker, and seals the config.
// It fails with an error wrapping ErrExist if b already holds a config,
// and then the caller opens that one instead. The store returned uses the
// config stored when Create re-reads it, which is cfg unless the backend
// could not refuse a creator that raced with this one.
func Create(ctx context.Context, b Backend, cfg Config, secret Secret) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var c *Cipher
	if cfg.Encryption == EncryptionAESGCM {
		if secret.Empty() {
			return nil, fmt.Errorf("chunkstore: create an encrypted repository: %w", ErrKeyRequired)
		}
		master := make([]byte, masterKeySize)
		rand.Read(master)
		var err error
		if c, err = newCipher(master); err != nil {
			return nil, err
		}
		if cfg.Chunker.Kind == ChunkerFastCDC {
			cfg.Chunker.Key = make([]byte, 32)
			rand.Read(cfg.Chunker.Key)
		}
		slot, err := newSlot(master, secret)
		if err != nil {
			return nil, err
		}
		if err := writeSlot(ctx, b, slot); err != nil {
			return nil, err
		}
	}
	data, err := marshalConfig(cfg, c)
	if err != nil {
		return nil, err
	}
	if err := b.Create(ctx, ConfigName, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("chunkstore: create repository: %w", err)
	}
	return Open(ctx, b, secret)
}

// Open opens the repository on b by reading its config, unlocking it with
// secret if it is encrypted (see ReadConfig for the errors).
func Open(ctx context.Context, b Backend, secret Secret) (*Store, error) {
	u, err := readConfig(ctx, b, secret)
	if err != nil {
		return nil, err
	}
	cd, err := newCodec(u.cfg.Compression, u.cfg.Chunker.MaxSize)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: u.cfg, backend: b, raw: b, codec: cd, cipher: u.cipher, master: u.master, slot: u.slot}
	if u.cipher != nil {
		s.backend = sealedBackend{b, u.cipher}
	}
	cfg := u.cfg
	s.hashers.New = func() any {
		h, err := blake3.NewKeyed(cfg.Key)
		if err != nil {
			panic(err) // unreachable: Validate checked the key length
		}
		return h
	}
	s.bufs.New = func() any { b := make([]byte, 0, cfg.Chunker.MaxSize); return &b }
	return s, nil
}

// Close releases the codec's resources.
func (s *Store) Close() { s.codec.close() }

// Config returns the repository's config.
func (s *Store) Config() Config { return s.cfg }

// Backend returns the backend holding the repository's objects. In an
// encrypted repository it seals and opens every object but packs, the
// config and key slots as they pass (see sealedBackend).
func (s *Store) Backend() Backend { return s.backend }

// RawBackend returns the backend as the caller passed it, which stores
// objects as they are: for moving damaged objects aside byte for byte.
func (s *Store) RawBackend() Backend { return s.raw }

// Cipher returns what seals the repository's blobs and objects: nil if it
// is not encrypted.
func (s *Store) Cipher() *Cipher { return s.cipher }

// NewChunker returns the repository's chunker over r; see ChunkerParams.NewChunker.
func (s *Store) NewChunker(r io.Reader, buf []byte) (Chunker, error) {
	return s.cfg.Chunker.NewChunker(r, buf)
}

// Hash returns a chunk's ID: the keyed BLAKE3-256 of its plain bytes.
func (s *Store) Hash(plain []byte) ID {
	h := s.hashers.Get().(*blake3.Hasher)
	h.Reset()
	h.Write(plain)
	var id ID
	h.Sum(id[:0])
	s.hashers.Put(h)
	return id
}

// EncodedChunk is a chunk in its stored form, ready for PackBuilder.Add.
type EncodedChunk struct {
	ID          ID
	Data        []byte // sealed in an encrypted repository
	PlainLength int
	Codec       Codec
	Features    []uint64 // a whole chunk's features, when the repository makes deltas
	Bases       []ID     // a delta's bases
}

// Encode compresses plain (whose ID the caller computed with Hash) into dst's
// spare capacity, whole. In a repository that makes deltas the caller sets
// the chunk's Features (see Features), which it needs first to look for a
// base: a chunk stored whole without them is never a base.
func (s *Store) Encode(dst []byte, id ID, plain []byte) EncodedChunk {
	data, c := s.codec.encode(s.cipher.begin(dst), plain)
	return EncodedChunk{ID: id, Data: s.cipher.sealInPlace(data, blobAD(id, c)), PlainLength: len(plain), Codec: c}
}

// EncodeDelta compresses plain (chunk id) into dst's spare capacity with
// enc against bases, the chunks baseIDs stored whole, given in plain.
func (s *Store) EncodeDelta(enc *DeltaEncoder, dst []byte, id ID, plain []byte, baseIDs []ID, bases [][]byte) (EncodedChunk, error) {
	if len(baseIDs) == 0 || len(baseIDs) > MaxDeltaBases || len(baseIDs) != len(bases) {
		return EncodedChunk{}, fmt.Errorf("chunkstore: a delta needs 1 to %d bases, got %d", MaxDeltaBases, len(baseIDs))
	}
	data := append(s.cipher.begin(dst), byte(len(baseIDs)))
	for _, b := range baseIDs {
		data = append(data, b[:]...)
	}
	data, err := enc.Encode(data, plain, bases...)
	if err != nil {
		return EncodedChunk{}, err
	}
	return EncodedChunk{ID: id, Data: s.cipher.sealInPlace(data, blobAD(id, CodecDelta)), PlainLength: len(plain), Codec: CodecDelta, Bases: slices.Clone(baseIDs)}, nil
}

// WritePack finishes p and stores it under a new ID (see NewPackID). When it returns
// nil the pack is durable under PackName(id) and its entries may be indexed.
func (s *Store) WritePack(ctx context.Context, p *PackBuilder) (id ID, entries []PackEntry, size int64, err error) {
	data, entries := p.Finish(s.cipher)
	if id, err = NewPackID(time.Now()); err != nil {
		return ID{}, nil, 0, err
	}
	if err := s.backend.Put(ctx, PackName(id), bytes.NewReader(data)); err != nil {
		return ID{}, nil, 0, fmt.Errorf("chunkstore: write pack %s: %w", id, err)
	}
	return id, entries, int64(len(data)), nil
}

// LoadChunk reads chunk id from loc, decompresses it into dst's capacity
// and checks its hash. It never returns bytes that do not hash to
// id: a mismatch, an undecodable blob or a missing or short pack all give an
// error wrapping ErrCorrupt that names the chunk and the pack; any other
// failure to read (a refused permission, a network error) does not wrap
// it. scratch is space for the stored bytes.
func (s *Store) LoadChunk(ctx context.Context, id ID, loc Location, scratch, dst []byte) ([]byte, error) {
	plain, err := s.LoadChunks(ctx, []ID{id}, []Location{loc}, scratch, dst)
	if err != nil {
		return nil, err
	}
	return plain[0], nil
}

// Follows reports whether next is stored right after prev in one pack,
// behind only its own header: LoadChunks reads such runs in one request.
func Follows(prev, next Location) bool {
	return next.Pack == prev.Pack && next.Offset == prev.Offset+prev.Length+headerSize
}

// LoadChunks loads chunks stored back to back in one pack with a single
// read: each of locs must follow the one before (see Follows). Each chunk
// is decompressed into dst's capacity after the one before, and checked as
// LoadChunk checks it.
func (s *Store) LoadChunks(ctx context.Context, ids []ID, locs []Location, scratch, dst []byte) ([][]byte, error) {
	first := locs[0]
	for i := 1; i < len(locs); i++ {
		if !Follows(locs[i-1], locs[i]) {
			return nil, fmt.Errorf("chunkstore: LoadChunks: chunks not stored back to back")
		}
	}
	end := locs[len(locs)-1].Offset + locs[len(locs)-1].Length
	stored, err := s.readStored(ctx, ids[0], Location{Pack: first.Pack, Blob: Blob{Offset: first.Offset, Length: end - first.Offset}}, scratch)
	if err != nil {
		return nil, err
	}
	plain := make([][]byte, len(ids))
	rest := dst[:0]
	for i, l := range locs {
		off := l.Offset - first.Offset
		if plain[i], err = s.verify(ctx, ids[i], l, stored[off:off+l.Length], rest); err != nil {
			return nil, err
		}
		rest = rest[:cap(rest)]
		rest = rest[min(len(plain[i]), len(rest)):][:0]
	}
	return plain, nil
}

// CopyChunk reads chunk id from loc and checks it as LoadChunk does, and
// returns it in its stored form, ready to be added to another pack without
// compressing it again.
func (s *Store) CopyChunk(ctx context.Context, id ID, loc Location, scratch, plainScratch []byte) (EncodedChunk, error) {
	stored, err := s.readStored(ctx, id, loc, scratch)
	if err != nil {
		return EncodedChunk{}, err
	}
	plain, err := s.verify(ctx, id, loc, stored, plainScratch)
	if err != nil {
		return EncodedChunk{}, err
	}
	e := EncodedChunk{ID: id, Data: stored, PlainLength: int(loc.PlainLength), Codec: loc.Codec}
	if loc.Codec == CodecDelta {
		e.Bases, err = s.deltaBases(id, loc, stored)
	} else if s.cfg.Deltas {
		e.Features = Features(plain, DeltaFeatures)
	}
	return e, err
}

// Salvage returns, of candidates, the blobs of the pack whose bytes are
// data that decode and hash to their IDs, one per ID, and counts the IDs
// none of whose candidates is intact as lost. Candidates come from
// ScanPack, for a pack whose trailer or tail is damaged, and from its
// trailer where that still parses.
func (s *Store) Salvage(ctx context.Context, data []byte, candidates []PackEntry) (intact []PackEntry, lost int) {
	var plain []byte
	found := map[ID]bool{}
	for _, e := range candidates {
		if found[e.ID] || int64(e.Offset)+int64(e.Length) > int64(len(data)) {
			continue
		}
		var err error
		loc, stored := Location{Blob: e.Blob}, data[e.Offset:e.Offset+e.Length]
		if plain, err = s.verify(ctx, e.ID, loc, stored, plain); err == nil && e.Codec == CodecDelta {
			e.Bases, err = s.deltaBases(e.ID, loc, stored)
		}
		if err == nil {
			found[e.ID] = true
			intact = append(intact, e)
		}
	}
	missing := map[ID]bool{}
	for _, e := range candidates {
		if !found[e.ID] {
			missing[e.ID] = true
		}
	}
	return intact, len(missing)
}

func corruptChunk(id ID, loc Location, what string, err error) error {
	return fmt.Errorf("chunkstore: chunk %s in pack %s: %s: %w: %w", id, loc.Pack, what, ErrCorrupt, err)
}

func (s *Store) readStored(ctx context.Context, id ID, loc Location, scratch []byte) ([]byte, error) {
	rc, err := s.backend.Get(ctx, PackName(loc.Pack), int64(loc.Offset), int64(loc.Length))
	if err != nil {
		return nil, readErr(ctx, id, loc, err)
	}
	stored := slices.Grow(scratch[:0], int(loc.Length))[:loc.Length]
	_, err = io.ReadFull(rc, stored)
	rc.Close()
	if err != nil {
		return nil, readErr(ctx, id, loc, err)
	}
	return stored, nil
}

// readErr describes a failed read of a chunk. A missing or short pack is
// damage, ErrCorrupt; any other error, such as a refused permission or a
// network failure, is not, and is returned naming the chunk.
func readErr(ctx context.Context, id ID, loc Location, err error) error {
	switch {
	case ctx.Err() != nil:
		return err
	case errors.Is(err, ErrNotExist), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return corruptChunk(id, loc, "read", err)
	}
	return fmt.Errorf("chunkstore: chunk %s in pack %s: read: %w", id, loc.Pack, err)
}

// verify decodes a chunk's stored bytes into dst's capacity and checks
// them against id. A delta's bases are checked too, each against its own
// ID, although the delta's check would catch a wrong one: a delta whose
// base is damaged must not read back, or check would pass it and a repair
// that drops the damaged base would then lose it unannounced.
func (s *Store) verify(ctx context.Context, id ID, loc Location, stored, dst []byte) ([]byte, error) {
	var plain []byte
	var err error
	switch {
	case s.cipher != nil && loc.Codec == CodecRaw:
		// The plaintext is the chunk: opened straight into dst.
		if plain, err = s.cipher.open(dst[:0], stored, blobAD(id, loc.Codec)); err != nil {
			return nil, corruptChunk(id, loc, "open", err)
		}
	default:
		if s.cipher != nil {
			buf := s.bufs.Get().(*[]byte)
			defer s.bufs.Put(buf)
			if *buf, err = s.cipher.open((*buf)[:0], stored, blobAD(id, loc.Codec)); err != nil {
				return nil, corruptChunk(id, loc, "open", err)
			}
			stored = *buf
		}
		if loc.Codec == CodecDelta {
			plain, err = s.decodeDelta(ctx, dst[:0], stored)
			if be := (baseError{}); errors.As(err, &be) {
				// Not this chunk's damage: the base's own error says what it is.
				return nil, fmt.Errorf("chunkstore: chunk %s in pack %s: %w", id, loc.Pack, err)
			}
		} else {
			plain, err = s.codec.decode(dst[:0], stored, loc.Codec)
		}
		if err != nil {
			return nil, corruptChunk(id, loc, "decode", err)
		}
	}
	if len(plain) != int(loc.PlainLength) || s.Hash(plain) != id {
		return nil, corruptChunk(id, loc, "verify", errors.New("content does not match its ID"))
	}
	return plain, nil
}

// deltaBases returns the bases a delta's stored bytes name.
func (s *Store) deltaBases(id ID, loc Location, stored []byte) ([]ID, error) {
	inner, err := s.cipher.open(nil, stored, blobAD(id, CodecDelta))
	if err != nil {
		return nil, corruptChunk(id, loc, "open", err)
	}
	bases, _, err := splitDelta(inner)
	if err != nil {
		return nil, corruptChunk(id, loc, "decode", err)
	}
	return bases, nil
}

// decodeDelta appends a delta's plain bytes to dst, loading its bases into
// buffers of s.bufs.
func (s *Store) decodeDelta(ctx context.Context, dst, stored []byte) ([]byte, error) {
	baseIDs, frame, err := splitDelta(stored)
	if err != nil {
		return nil, err
	}
	bases := make([][]byte, len(baseIDs))
	for i, b := range baseIDs {
		buf := s.bufs.Get().(*[]byte)
		defer s.bufs.Put(buf)
		if bases[i], err = s.LoadBase(ctx, b, *buf); err != nil {
			return nil, baseError{fmt.Errorf("load base %s: %w", b, err)}
		}
	}
	return s.deltas.Decode(dst, frame, bases...)
}

// LoadBase loads chunk id, a chunk stored whole that is the base of a delta
// or is to be, decompressed into dst's capacity and checked as LoadChunk
// checks a chunk. It finds the chunk with the BaseLocator, and reads it as
// SetBaseLocator says.
func (s *Store) LoadBase(ctx context.Context, id ID, dst []byte) ([]byte, error) {
	if s.locate == nil {
		return nil, errors.New("chunkstore: no locator for the bases of deltas")
	}
	loc, packSize, err := s.locate(ctx, id)
	if err != nil {
		return nil, err
	}
	if loc.Codec == CodecDelta {
		return nil, corruptChunk(id, loc, "base", errors.New("a delta's base is itself a delta"))
	}
	scratch := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(scratch)
	stored, err := s.readBase(ctx, id, loc, packSize, *scratch)
	if err != nil {
		return nil, err
	}
	return s.verify(ctx, id, loc, stored, dst)
}

// baseRuns keeps the last few runs of pack bytes read for the bases of
// deltas. A stream's consecutive deltas mostly have bases stored one after
// the other (the chunks at about the same place of the stream's previous
// version), so one read of a base and the bytes after it serves the bases
// of the deltas that follow: on object storage, where every read is a
// request, this is what keeps deltas from slowing backups and restores.
type baseRuns struct {
	bytes int64 // 0: none kept, each base read alone
	mu    sync.Mutex
	runs  [baseRunsKept]baseRun // runs[next] is replaced next
	next  int
}

type baseRun struct {
	pack ID
	off  int64
	data []byte // never modified once kept
}

const baseRunsKept = 4

// readBase returns the stored bytes of base id at loc, in a pack of
// packSize bytes: from a kept run or a new one, or read alone into
// scratch. The bytes must not be modified.
func (s *Store) readBase(ctx context.Context, id ID, loc Location, packSize int64, scratch []byte) ([]byte, error) {
	if s.runs.bytes == 0 {
		return s.readStored(ctx, id, loc, scratch)
	}
	off, n := int64(loc.Offset), int64(loc.Length)
	s.runs.mu.Lock()
	for _, r := range s.runs.runs {
		if r.pack == loc.Pack && off >= r.off && off+n <= r.off+int64(len(r.data)) {
			s.runs.mu.Unlock()
			return r.data[off-r.off:][:n], nil
		}
	}
	s.runs.mu.Unlock()
	run := loc
	run.Length = uint32(max(n, min(s.runs.bytes, packSize-off)))
	data, err := s.readStored(ctx, id, run, nil)
	if err != nil && run.Length > loc.Length && ctx.Err() == nil {
		data, err = s.readStored(ctx, id, loc, nil) // the pack may be shorter than the index says
	}
	if err != nil {
		return nil, err
	}
	s.runs.mu.Lock()
	s.runs.runs[s.runs.next] = baseRun{loc.Pack, off, data}
	s.runs.next = (s.runs.next + 1) % baseRunsKept
	s.runs.mu.Unlock()
	return data[:n], nil
}

// baseError is a failure to load a delta's base.
type baseError struct{ error }

func (e baseError) Unwrap() error { return e.error }
