package chunkstore

import (
	"fmt"
	"io"
	"math/bits"

	"github.com/restic/chunker"
)

// Chunker kinds a repository can be configured with.
const (
	// ChunkerFastCDC is normalized FastCDC over a gear hash: the cut points
	// of go-cdc-chunkers' versioned variant, pinned so that they never move
	// under a library upgrade, cut by our own loop (fastcdc.go). It resynchronises within a chunk after an
	// insert, also in zero-padded database pages.
	ChunkerFastCDC = "fastcdc-v1.0.0"
	// ChunkerRestic is restic's Rabin fingerprint chunker. Kept for
	// comparison: on long zero runs it cuts at the minimum size and degrades
	// into a fixed grid that does not resynchronise after an insert.
	ChunkerRestic = "restic"
)

// MaxChunkSize bounds every chunker's maximum, and so every buffer that holds
// a chunk.
const MaxChunkSize = 8 << 20

// ChunkerParams selects a chunker and its cut sizes. AvgSize must be a power
// of two strictly between MinSize and MaxSize.
type ChunkerParams struct {
	Kind    string `json:"kind"`
	MinSize int    `json:"min_size"`
	AvgSize int    `json:"avg_size"`
	MaxSize int    `json:"max_size"`
	// Polynomial is the irreducible polynomial of the restic chunker, chosen
	// at random when a repository is created; zero for other kinds.
	Polynomial uint64 `json:"polynomial,omitempty"`
	// Key keys FastCDC's gear table, so that cut points (and so chunk
	// sizes, which stay visible) say nothing of known contents; set, at
	// random, in encrypted repositories only.
	Key []byte `json:"key,omitempty"`
}

// DefaultChunkerParams is FastCDC with 16 KiB / 64 KiB / 256 KiB, the setting
// that deduplicated repeated database backups best per byte of index
// (design brief §4) and resynchronises after inserts into zero-padded pages.
func DefaultChunkerParams() ChunkerParams {
	return ChunkerParams{Kind: ChunkerFastCDC, MinSize: 16 << 10, AvgSize: 64 << 10, MaxSize: 256 << 10}
}

// Validate reports whether the parameters are usable.
func (p ChunkerParams) Validate() error {
	if p.Kind != ChunkerFastCDC && p.Kind != ChunkerRestic {
		return fmt.Errorf("chunkstore: unknown chunker %q (want %q or %q)", p.Kind, ChunkerFastCDC, ChunkerRestic)
	}
	if p.MinSize < 64 || p.MaxSize > MaxChunkSize || !(p.MinSize < p.AvgSize && p.AvgSize < p.MaxSize) {
		return fmt.Errorf("chunkstore: chunk sizes %d/%d/%d: want 64 <= min < avg < max <= %d", p.MinSize, p.AvgSize, p.MaxSize, MaxChunkSize)
	}
	if bits.OnesCount(uint(p.AvgSize)) != 1 {
		return fmt.Errorf("chunkstore: average chunk size %d is not a power of two", p.AvgSize)
	}
	if p.Key != nil && (p.Kind != ChunkerFastCDC || len(p.Key) != 32) {
		return fmt.Errorf("chunkstore: a chunker key of %d bytes for %s: want 32, for %s only", len(p.Key), p.Kind, ChunkerFastCDC)
	}
	if p.Kind == ChunkerRestic && !chunker.Pol(p.Polynomial).Irreducible() {
		return fmt.Errorf("chunkstore: restic chunker polynomial %#x is not irreducible", p.Polynomial)
	}
	return nil
}

// Chunker cuts a stream into content-defined chunks.
type Chunker interface {
	// Next returns the next chunk, or io.EOF once the stream is exhausted.
	// The slice is only valid until the next call. An empty stream yields
	// io.EOF at once; no chunk is ever empty.
	Next() ([]byte, error)
}

// NewChunker returns a chunker over r with these parameters. buf is scratch
// space of at least BufferSize() bytes that the chunker owns until the stream
// ends; callers pool it to bound memory.
func (p ChunkerParams) NewChunker(r io.Reader, buf []byte) (Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(buf) < p.BufferSize() {
		return nil, fmt.Errorf("chunkstore: chunker buffer of %d bytes, want %d", len(buf), p.BufferSize())
	}
	switch p.Kind {
	case ChunkerRestic:
		c := chunker.NewWithBoundaries(r, chunker.Pol(p.Polynomial), uint(p.MinSize), uint(p.MaxSize))
		c.SetAverageBits(bits.TrailingZeros(uint(p.AvgSize)))
		return &resticChunker{c: c, buf: buf}, nil
	default:
		return newFastCDC(p, r, buf[:p.BufferSize()]), nil
	}
}

// BufferSize is the scratch space NewChunker needs: twice the maximum chunk,
// which lets the chunker refill in large strides.
func (p ChunkerParams) BufferSize() int { return 2 * p.MaxSize }

type resticChunker struct {
	c   *chunker.Chunker
	buf []byte
}

func (r *resticChunker) Next() ([]byte, error) {
	c, err := r.c.Next(r.buf[:0])
	if err != nil {
		return nil, err
	}
	return c.Data, nil
}
