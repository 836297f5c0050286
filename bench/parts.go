package bench

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
)

// Parts is how long each step of the pipeline took on one core over some
// files, as an encrypted repository of dedupctl init's defaults runs it:
// what bounds a backup and a restore, and the speeds they can reach.
type Parts struct {
	Bytes    int64 `json:"bytes"`     // the files' bytes, all chunked and hashed
	NewBytes int64 `json:"new_bytes"` // of those, the chunks seen first: given features and compressed, then loaded
	Chunks   int   `json:"chunks"`
	// Seconds of each step, on one core.
	Chunk    float64 `json:"chunk_seconds"`    // FastCDC over Bytes, reads excluded
	Hash     float64 `json:"hash_seconds"`     // keyed BLAKE3 of Bytes
	Features float64 `json:"features_seconds"` // the features of NewBytes, for deltas
	Compress float64 `json:"compress_seconds"` // zstd and AES-GCM of NewBytes
	Load     float64 `json:"load_seconds"`     // read, open, decompress and verify NewBytes
}

// Speed is n bytes over s seconds, in bytes per second (0 if s is 0).
func Speed(n int64, s float64) float64 {
	if s <= 0 {
		return 0
	}
	return float64(n) / s
}

// FirstBackup is the speed, in bytes per second, that the parts allow a
// backup of new data on cores cores: all the work of each byte shared by
// the cores, but chunking, which runs on one core per stream. Finding
// bases for deltas, packing and writing are left out: it is a limit.
func (p Parts) FirstBackup(cores int) float64 {
	perByte := (p.Chunk+p.Hash)/float64(p.Bytes) + (p.Features+p.Compress)/float64(p.NewBytes)
	return min(Speed(p.Bytes, p.Chunk), float64(cores)/perByte)
}

// Repeat is the limit of a backup of data the repository holds: chunking
// and hashing, and nothing else.
func (p Parts) Repeat(cores int) float64 {
	return min(Speed(p.Bytes, p.Chunk), float64(cores)*Speed(p.Bytes, p.Chunk+p.Hash))
}

// Restore is the limit of a restore: each chunk loaded on any core.
func (p Parts) Restore(cores int) float64 {
	return float64(cores) * Speed(p.NewBytes, p.Load)
}

// MeasureParts runs each step of the pipeline over files, one step at a
// time on one goroutine, in a temporary encrypted repository under dir
// holding each distinct chunk once (about what the files compress to).
func MeasureParts(ctx context.Context, files []string, dir string) (Parts, error) {
	var p Parts
	cfg, err := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{Level: chunkstore.LevelFastest}, 0)
	if err != nil {
		return p, err
	}
	cfg.Encryption = chunkstore.EncryptionAESGCM
	s, err := chunkstore.Create(ctx, local.New(dir), cfg, chunkstore.Secret{KeyFile: chunkstore.NewKeyFile()})
	if err != nil {
		return p, err
	}
	defer s.Close()
	cfg = s.Config()
	type stored struct {
		id  chunkstore.ID
		loc chunkstore.Location
	}
	var chunks []stored
	seen := map[chunkstore.ID]bool{}
	pack := chunkstore.NewPackBuilder(cfg.PackSize + cfg.Chunker.MaxSize + int(chunkstore.PackOverhead(cfg.PackSize/cfg.Chunker.MinSize+1, s.Cipher())))
	flush := func() error {
		if pack.Count() == 0 {
			return nil
		}
		packID, entries, _, err := s.WritePack(ctx, pack)
		for _, e := range entries {
			chunks = append(chunks, stored{e.ID, chunkstore.Location{Pack: packID, Blob: e.Blob}})
		}
		pack.Reset()
		return err
	}
	clock := func(total *float64, step func()) {
		start := time.Now()
		step()
		*total += time.Since(start).Seconds()
	}
	scratch := make([]byte, 0, cfg.Chunker.MaxSize+cfg.Chunker.MaxSize/8+1024)
	buf := make([]byte, cfg.Chunker.BufferSize())
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return p, err
		}
		r := &timedReader{r: f}
		c, err := s.NewChunker(r, buf)
		if err != nil {
			f.Close()
			return p, err
		}
		for err == nil {
			var data []byte
			clock(&p.Chunk, func() { data, err = c.Next() })
			if err != nil {
				break
			}
			p.Bytes += int64(len(data))
			p.Chunks++
			var id chunkstore.ID
			clock(&p.Hash, func() { id = s.Hash(data) })
			if seen[id] {
				continue
			}
			seen[id] = true
			p.NewBytes += int64(len(data))
			var e chunkstore.EncodedChunk
			clock(&p.Features, func() { chunkstore.Features(data, chunkstore.DeltaFeatures) })
			clock(&p.Compress, func() { e = s.Encode(scratch, id, data) })
			pack.Add(e)
			if pack.Len() >= cfg.PackSize {
				err = flush()
			}
		}
		f.Close()
		p.Chunk -= r.seconds
		if !errors.Is(err, io.EOF) {
			return p, err
		}
		if err := ctx.Err(); err != nil {
			return p, err
		}
	}
	if err := flush(); err != nil {
		return p, err
	}
	dst := make([]byte, 0, cfg.Chunker.MaxSize)
	for _, c := range chunks {
		var err error
		clock(&p.Load, func() { _, err = s.LoadChunk(ctx, c.id, c.loc, scratch, dst) })
		if err != nil {
			return p, err
		}
	}
	return p, nil
}

// timedReader counts the time spent reading, so that chunking's time
// leaves it out.
type timedReader struct {
	r       io.Reader
	seconds float64
}

func (t *timedReader) Read(b []byte) (int, error) {
	start := time.Now()
	n, err := t.r.Read(b)
	t.seconds += time.Since(start).Seconds()
	return n, err
}
