package chunkstore

import (
	"fmt"
	"math/bits"

	"github.com/klauspost/compress/zstd"
)

// Codec says how a chunk's bytes are stored in a pack.
type Codec uint8

// Codecs. Their values are part of the pack format.
const (
	CodecRaw  Codec = 0
	CodecZstd Codec = 1
	// CodecDelta is zstd with the plain bytes of other chunks, its bases,
	// as a raw dictionary (see DeltaEncoder).
	CodecDelta Codec = 2
)

func (c Codec) String() string {
	switch c {
	case CodecRaw:
		return "raw"
	case CodecZstd:
		return "zstd"
	case CodecDelta:
		return "delta"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// Compression levels a repository can be configured with.
const (
	LevelNone    = "none"
	LevelFastest = "fastest"
	LevelDefault = "default"
	LevelBetter  = "better"
	LevelBest    = "best"
)

// Compression is the repository's compression setting. Chunks are compressed
// with zstd one by one; a chunk that compression shrinks by less than
// 1/minSavingDiv (about 3 %) is stored raw, which is also what
// incompressible data costs: one failed attempt.
type Compression struct {
	Level string `json:"level"`
}

const minSavingDiv = 32

// DeltaLevel is the zstd level of deltas: the repository's level, and the
// fastest when it compresses nothing else.
func (c Compression) DeltaLevel() string {
	if c.Level == LevelNone {
		return LevelFastest
	}
	return c.Level
}

func (c Compression) encoderLevel() (zstd.EncoderLevel, error) {
	switch c.Level {
	case LevelNone:
		return 0, nil
	case LevelFastest:
		return zstd.SpeedFastest, nil
	case LevelDefault:
		return zstd.SpeedDefault, nil
	case LevelBetter:
		return zstd.SpeedBetterCompression, nil
	case LevelBest:
		return zstd.SpeedBestCompression, nil
	}
	return 0, fmt.Errorf("chunkstore: unknown compression level %q (want none, fastest, default, better or best)", c.Level)
}

// codec compresses and decompresses chunks. Both zstd objects are safe for
// concurrent EncodeAll / DecodeAll calls.
type codec struct {
	enc *zstd.Encoder // nil for LevelNone
	dec *zstd.Decoder
}

// newCodec returns the codec for c. Chunks never exceed maxChunk bytes, so
// the encoder's window (and with it its history buffer) is no larger.
func newCodec(c Compression, maxChunk int) (*codec, error) {
	level, err := c.encoderLevel()
	if err != nil {
		return nil, err
	}
	cd := &codec{}
	if level != 0 {
		cd.enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(max(zstd.MinWindowSize, 1<<bits.Len(uint(maxChunk-1)))))
		if err != nil {
			return nil, err
		}
	}
	cd.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxChunkSize))
	if err != nil {
		return nil, err
	}
	return cd, nil
}

// encode appends the stored form of plain to dst.
func (cd *codec) encode(dst, plain []byte) ([]byte, Codec) {
	if cd.enc != nil {
		out := cd.enc.EncodeAll(plain, dst)
		if len(out)-len(dst) < len(plain)-len(plain)/minSavingDiv {
			return out, CodecZstd
		}
	}
	return append(dst, plain...), CodecRaw
}

// decode appends the plain form of stored to dst.
func (cd *codec) decode(dst, stored []byte, c Codec) ([]byte, error) {
	switch c {
	case CodecRaw:
		return append(dst, stored...), nil
	case CodecZstd:
		return cd.dec.DecodeAll(stored, dst)
	}
	return nil, fmt.Errorf("unknown codec %d", c)
}

func (cd *codec) close() {
	if cd.enc != nil {
		cd.enc.Close()
	}
	cd.dec.Close()
}
