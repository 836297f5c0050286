package chunkstore

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Similar chunks. A database page whose rows, header and checksum changed
// makes every chunk holding it new, although the chunk differs from one
// already stored in a few hundred bytes. Such a chunk is found by its
// features, and can be compressed with the stored chunk (its base) as a
// zstd dictionary: a delta, tens of times smaller than the chunk
// compressed alone.
//
// Features: the chunk is split into n equal parts, and the feature of each
// part is the largest gear hash of the 64-byte windows ending in it on a
// byte other than zero (the zeros that pad pages hash alike everywhere). A
// change to a few bytes changes the features of the parts it touches only,
// so chunks that share most of their content share most of their features.

// gear is the table of the features' rolling hash. It is part of the
// repository format (features are stored): never change it.
var gear = func() (t [256]uint64) {
	r := rand.New(rand.NewPCG(0x64656475, 0x70666561)) // "dedu" "pfea"
	for i := range t {
		t[i] = r.Uint64()
	}
	return t
}()

// Features returns n features of plain (fewer if plain has fewer than n
// bytes): see above.
func Features(plain []byte, n int) []uint64 { return features(plain, n, rollPart) }

// features splits plain into n equal parts (fewer if plain is shorter) and
// returns the feature roll gives each, the hash rolling on from part to
// part.
func features(plain []byte, n int, roll func(h uint64, part []byte) (next, best uint64)) []uint64 {
	n = min(n, len(plain))
	out := make([]uint64, n)
	var h uint64
	start := 0
	for i := range n {
		end := (i + 1) * len(plain) / n
		h, out[i] = roll(h, plain[start:end])
		start = end
	}
	return out
}

// rollPart rolls the hash h over part and returns it with the largest hash
// after a byte other than zero. It rolls two bytes per step, as fastCDC's
// loop does: h<<2 + (g[a]<<1 + g[b]) halves the chain of shifts and adds,
// and the hash after a alone is taken beside it. A zero byte's hash is
// masked to 0, so that it never counts, without a branch.
func rollPart(h uint64, part []byte) (uint64, uint64) {
	var best uint64
	j := 0
	for ; j+1 < len(part); j += 2 {
		a, b := part[j], part[j+1]
		ga := gear[a]
		ha := h<<1 + ga
		h = h<<2 + (ga<<1 + gear[b])
		best = max(best, ha&nonZero[a], h&nonZero[b])
	}
	if j < len(part) {
		h = h<<1 + gear[part[j]]
		best = max(best, h&nonZero[part[j]])
	}
	return h, best
}

// nonZero masks the hash after a byte: all ones but for the byte 0.
var nonZero = func() (t [256]uint64) {
	for i := 1; i < len(t); i++ {
		t[i] = ^uint64(0)
	}
	return t
}()

// DeltaEncoder compresses chunks with bases as a dictionary. It is not safe
// for concurrent use; each goroutine encoding deltas keeps one.
type DeltaEncoder struct {
	enc  *zstd.Encoder
	dict []byte
}

// NewDeltaEncoder returns an encoder at zstd level (one of the Level
// constants but LevelNone) for chunks of up to maxChunk bytes against up
// to bases bases (1 to MaxDeltaBases): its window, and so its memory,
// spans that many chunks and one more.
func NewDeltaEncoder(level string, maxChunk, bases int) (*DeltaEncoder, error) {
	l, err := Compression{Level: level}.encoderLevel()
	if err != nil {
		return nil, err
	}
	if l == 0 {
		return nil, fmt.Errorf("chunkstore: deltas need a zstd level, not %q", level)
	}
	if bases < 1 || bases > MaxDeltaBases {
		return nil, fmt.Errorf("chunkstore: a delta needs 1 to %d bases, not %d", MaxDeltaBases, bases)
	}
	window := max(zstd.MinWindowSize, 1<<bits.Len(uint((bases+1)*maxChunk-1)))
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(l), zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(window), zstd.WithEncoderDictRaw(deltaDictID, []byte{0}))
	if err != nil {
		return nil, err
	}
	return &DeltaEncoder{enc: enc}, nil
}

// deltaDictID is the dictionary ID deltas' zstd frames carry.
const deltaDictID = 1

// Encode appends to dst plain compressed with bases (one or more chunks'
// plain bytes, in order) as its dictionary.
func (d *DeltaEncoder) Encode(dst, plain []byte, bases ...[]byte) ([]byte, error) {
	dict := bases[0]
	if len(bases) > 1 {
		d.dict = d.dict[:0]
		for _, b := range bases {
			d.dict = append(d.dict, b...)
		}
		dict = d.dict
	}
	// Resetting an encoder to a new dictionary costs a pass over the
	// dictionary; creating one costs ten times more.
	if err := d.enc.ResetWithOptions(nil, zstd.WithEncoderDictRaw(deltaDictID, dict)); err != nil {
		return nil, err
	}
	return d.enc.EncodeAll(plain, dst), nil
}

// Close releases the encoder.
func (d *DeltaEncoder) Close() { d.enc.Close() }

// DeltaDecoder decodes deltas. It is safe for concurrent use: it keeps
// zstd decoders for reuse, as setting a decoder's dictionary costs far
// less than making a decoder. The zero value is ready to use.
type DeltaDecoder struct{ decoders sync.Pool }

// Decode appends to dst the plain bytes of delta, made by
// DeltaEncoder.Encode with the same bases.
func (d *DeltaDecoder) Decode(dst, delta []byte, bases ...[]byte) ([]byte, error) {
	dict := bases[0]
	if len(bases) > 1 {
		dict = slices.Concat(bases...)
	}
	dec, _ := d.decoders.Get().(*zstd.Decoder)
	if dec == nil {
		var err error
		if dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxChunkSize)); err != nil {
			return nil, err
		}
	}
	defer d.decoders.Put(dec)
	if err := dec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(deltaDictID, dict)); err != nil {
		return nil, err
	}
	return dec.DecodeAll(delta, dst)
}

// splitDelta splits a delta's stored bytes into its bases and its zstd
// frame.
func splitDelta(stored []byte) (bases []ID, frame []byte, err error) {
	if len(stored) == 0 || stored[0] == 0 || int(stored[0]) > MaxDeltaBases || len(stored) < 1+32*int(stored[0]) {
		return nil, nil, errors.New("delta names no bases")
	}
	for i := range int(stored[0]) {
		bases = append(bases, ID(stored[1+32*i:][:32]))
	}
	return bases, stored[1+32*len(bases):], nil
}
