package chunkstore

import (
	"encoding/binary"
	"io"
	"math"
	"sync"

	"github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc"
	"github.com/zeebo/blake3"
)

// fastCDC cuts exactly where go-cdc-chunkers' "fastcdc-v1.0.0" cuts (its
// gear table, keyed the same way, its spaced masks and its loop), with a
// loop that rolls two bytes per step: the gear hash's chain of shifts and
// adds, which bounds the library's loop, is half as long. The tests check
// its cuts against the library's on random data and database pages, keyed
// and not.
type fastCDC struct {
	g                *[256]uint64
	maskS, maskL     uint64
	min, normal, max int
	r                io.Reader
	buf              []byte
	start, end       int // buf[start:end] is the stream from the next chunk on
	eof              bool
}

// keyedTables caches gear tables by key: deriving one hashes 2 KiB.
var keyedTables sync.Map // string(key) → *[256]uint64

// gearTable returns the library's gear table, keyed as the library keys
// it: the BLAKE3 keyed hash of the table's entries, read as 256 new ones.
func gearTable(key []byte) *[256]uint64 {
	if key == nil {
		return &fastcdc.G
	}
	if t, ok := keyedTables.Load(string(key)); ok {
		return t.(*[256]uint64)
	}
	h, err := blake3.NewKeyed(key)
	if err != nil {
		panic(err) // unreachable: Validate checked the key's length
	}
	var entry [8]byte
	for _, v := range fastcdc.G {
		binary.LittleEndian.PutUint64(entry[:], v)
		h.Write(entry[:])
	}
	var out [8 * 256]byte
	if _, err := io.ReadFull(h.Digest(), out[:]); err != nil {
		panic(err) // unreachable: a BLAKE3 digest reads on without end
	}
	t := new([256]uint64)
	for i := range t {
		t[i] = binary.LittleEndian.Uint64(out[8*i:])
	}
	keyedTables.Store(string(key), t)
	return t
}

// spacedMask is the library's mask of ones bits spread over 64.
func spacedMask(ones int) uint64 {
	if ones >= 64 {
		return math.MaxUint64
	}
	if ones <= 0 {
		return 0
	}
	var mask uint64
	for i := range ones {
		mask |= 1 << (63 - i*(64/ones))
	}
	return mask
}

func newFastCDC(p ChunkerParams, r io.Reader, buf []byte) *fastCDC {
	f := &fastCDC{g: gearTable(p.Key), min: p.MinSize, normal: p.AvgSize, max: p.MaxSize, r: r, buf: buf}
	if p.MinSize == 2<<10 && p.MaxSize == 64<<10 && p.AvgSize == 8<<10 {
		f.maskS, f.maskL = 0x0003590703530000, 0x0000d90003530000 // the library's masks for its defaults
	} else {
		bits := int(math.Log2(float64(p.AvgSize)))
		f.maskS, f.maskL = spacedMask(bits+2), spacedMask(bits-2) // normalization level 2
	}
	return f
}

func (f *fastCDC) Next() ([]byte, error) {
	if f.end-f.start < f.max && !f.eof {
		f.end = copy(f.buf, f.buf[f.start:f.end])
		f.start = 0
		for f.end < len(f.buf) && !f.eof {
			n, err := f.r.Read(f.buf[f.end:])
			f.end += n
			if err == io.EOF {
				f.eof = true
			} else if err != nil {
				return nil, err
			}
		}
	}
	if f.start == f.end {
		return nil, io.EOF
	}
	n := f.cut(f.buf[f.start:min(f.end, f.start+f.max)])
	chunk := f.buf[f.start : f.start+n]
	f.start += n
	return chunk, nil
}

// cut returns the length of the chunk at the start of data, as the
// library's Algorithm(data, len(data)) does.
func (f *fastCDC) cut(data []byte) int {
	n, normal := len(data), f.normal
	switch {
	case n <= f.min:
		return n
	case n <= normal:
		normal = n
	}
	i, fp, found := f.scan(data[:normal], f.min, 0, f.maskS)
	if found {
		return i
	}
	i, _, _ = f.scan(data, i, fp, f.maskL)
	return i
}

// scan rolls the gear hash fp over data from i on, and returns the first
// position whose hash has no bit of mask set, or len(data). Two bytes per
// step: fp<<2 + (g[a]<<1 + g[b]) keeps the chain to one shift and one add,
// and the hash after a alone is tested beside it.
func (f *fastCDC) scan(data []byte, i int, fp, mask uint64) (int, uint64, bool) {
	g := f.g
	for ; i+1 < len(data); i += 2 {
		a, b := g[data[i]], g[data[i+1]]
		fa := fp<<1 + a
		fp = fp<<2 + (a<<1 + b)
		if fa&mask == 0 {
			return i, fa, true
		}
		if fp&mask == 0 {
			return i + 1, fp, true
		}
	}
	if i < len(data) {
		fp = fp<<1 + g[data[i]]
		if fp&mask == 0 {
			return i, fp, true
		}
		i++
	}
	return i, fp, false
}
