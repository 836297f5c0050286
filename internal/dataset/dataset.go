// Package dataset generates deterministic test data shaped like what
// dedupstore stores: database pages (16 KiB, rows of compressible text, zero
// free space) and random bytes. Tests, benchmarks and the demo share it.
package dataset

import (
	"encoding/binary"
	"math/rand/v2"
)

// PageSize is the page size of generated database data (InnoDB's default).
const PageSize = 16 << 10

var words = []string{
	"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
	"india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
	"quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
	"xray", "yankee", "zulu", "order", "customer", "invoice", "shipped",
	"pending", "2026-11-25", "EUR", "USD", "null", "true", "false",
}

// Random returns n pseudo-random bytes determined by seed.
func Random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Pages returns n database-like pages determined by seed: a header with the
// page number and a log sequence number, rows of text and numbers filling 30
// to 90 % of the page, zeros after them, and a checksum trailer. It
// compresses about 3-4x with zstd and is full of zero runs, the input that
// trips Rabin chunkers.
func Pages(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0xda7a))
	b := make([]byte, n*PageSize)
	for p := range n {
		fillPage(r, b[p*PageSize:(p+1)*PageSize], uint32(p))
	}
	return b
}

// Mutate returns a copy of pages (from Pages) in which a fraction frac of the
// pages, picked by seed, have been rewritten, as a database does between two
// backups.
func Mutate(pages []byte, seed uint64, frac float64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x3a7e))
	out := append([]byte(nil), pages...)
	n := len(out) / PageSize
	for range int(float64(n) * frac) {
		p := r.IntN(n)
		fillPage(r, out[p*PageSize:(p+1)*PageSize], uint32(p))
	}
	return out
}

// Update returns a copy of pages (from Pages) in which a fraction frac of
// the pages, picked by seed, have a row of 100 bytes, the first 16 bytes of
// their header and their 8-byte trailer rewritten in place, as a database
// updates a row: a few hundred bytes of the page change, the rest stays.
func Update(pages []byte, seed uint64, frac float64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	out := append([]byte(nil), pages...)
	n := len(out) / PageSize
	for range int(float64(n) * frac) {
		page := out[r.IntN(n)*PageSize:][:PageSize]
		for _, span := range [][2]int{{0, 16}, {100 + r.IntN(PageSize-300), 100}, {PageSize - 8, 8}} {
			for i := range span[1] {
				page[span[0]+i] = byte(r.Uint32())
			}
		}
	}
	return out
}

// Insert returns a copy of data with extra inserted at offset.
func Insert(data []byte, offset int, extra []byte) []byte {
	out := make([]byte, 0, len(data)+len(extra))
	out = append(out, data[:offset]...)
	out = append(out, extra...)
	return append(out, data[offset:]...)
}

func fillPage(r *rand.Rand, page []byte, no uint32) {
	clear(page)
	binary.BigEndian.PutUint32(page[0:], no)
	binary.BigEndian.PutUint64(page[16:], r.Uint64()) // LSN
	used := PageSize * (30 + r.IntN(61)) / 100
	off := 38
	for off < used {
		row := page[off:used]
		n := binary.BigEndian.AppendUint32(row[:0], r.Uint32()%100000)
		i := len(n)
		for i < len(row) && i < 120 {
			w := words[r.IntN(len(words))]
			i += copy(row[i:], w)
			if i < len(row) {
				row[i] = ','
				i++
			}
		}
		off += i
	}
	binary.BigEndian.PutUint64(page[PageSize-8:], r.Uint64())
}
