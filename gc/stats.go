package gc

import (
	"context"
	"fmt"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
)

// Stats describe what a repository holds and what its backups cost.
type Stats struct {
	// Encryption is the repository's (chunkstore.EncryptionNone or
	// EncryptionAESGCM); ComputeStats leaves it to its caller.
	Encryption   string
	Backups      int
	LogicalBytes int64 // sum of the sizes of all backups' files
	UniqueBytes  int64 // plain bytes of the distinct chunks those files use
	StoredBytes  int64 // bytes of all indexed packs
	// DeadBytes is the stored bytes of indexed chunks no committed file
	// uses, and of second copies of chunks (which processes writing one
	// repository at once leave): what a collection would free, less pack
	// trailers. Chunks of files still being written count here until their
	// writers close.
	DeadBytes int64
	// DuplicateChunks and DuplicateBytes count the second copies of
	// chunks, part of DeadBytes: processes of one repository that stored
	// the same new data at the same moment (neither could see the other's
	// pack yet), or a copy a collection made of a chunk a writer claimed
	// meanwhile. A collection reclaims them.
	DuplicateChunks int
	DuplicateBytes  int64
	// DeltaChunks, DeltaPlainBytes and DeltaStoredBytes count the chunks in
	// use stored as deltas; DeltaSavedBytes is about what storing them
	// whole would have cost more: their plain bytes at the compression
	// ratio of the chunks in use stored whole, less their stored bytes.
	DeltaChunks      int
	DeltaPlainBytes  int64
	DeltaStoredBytes int64
	DeltaSavedBytes  int64
	Chunks           int
	Packs            int
	// Partials and PartialBytes count the writes that never completed
	// (see chunkstore.Backend.ListPartial), which a collection removes
	// once they are old; ComputeStats leaves them to its caller.
	Partials     int
	PartialBytes int64
	// DedupRatio is LogicalBytes / UniqueBytes; CompressionRatio is
	// UniqueBytes / the stored bytes of the chunks in use.
	DedupRatio       float64
	CompressionRatio float64
	PerBackup        []BackupStats // sorted by directory, then name
}

// BackupStats describe one backup.
type BackupStats struct {
	Dir, Name    string
	State        index.State
	Started      time.Time
	Ended        time.Time
	Files        int
	LogicalBytes int64
	// ExclusiveBytes is the stored bytes of chunks no other backup uses:
	// about what removing this backup and collecting would free.
	ExclusiveBytes int64
}

// ComputeStats reads the whole index once, in short transactions. Its memory
// is about 24 bytes per chunk in use (the owner of each chunk), whatever the
// number of backups. c is the repository's cipher (nil if unencrypted),
// which decides how much of each pack is not chunks.
func ComputeStats(ctx context.Context, idx *index.DB, c *chunkstore.Cipher) (Stats, error) {
	backups, err := idx.Backups("", true)
	if err != nil {
		return Stats{}, err
	}
	const shared = -1
	owner := map[uint64]int32{} // chunk key → index of the only backup using it, or shared
	st := Stats{Backups: len(backups), PerBackup: make([]BackupStats, len(backups))}
	for i, b := range backups {
		bs := &st.PerBackup[i]
		*bs = BackupStats{Dir: b.Dir, Name: b.Name, State: b.State, Started: b.Started, Ended: b.Ended}
		files, _, err := idx.Files(b.Dir, b.Name)
		if err != nil {
			return Stats{}, err
		}
		for _, f := range files {
			bs.Files++
			bs.LogicalBytes += f.Size
		}
		err = forEachRef(ctx, idx, b.Dir, b.Name, func(_ index.File, r index.Ref) {
			k := key(r.ID)
			if o, ok := owner[k]; !ok {
				owner[k] = int32(i)
			} else if o != int32(i) {
				owner[k] = shared
			}
		})
		if err != nil {
			return Stats{}, fmt.Errorf("gc: stats: %w", err)
		}
		st.LogicalBytes += bs.LogicalBytes
	}
	// A delta in use keeps its bases in use, for the backups using it.
	err = idx.ForEachDelta(func(id chunkstore.ID, bases []chunkstore.ID) error {
		o, ok := owner[key(id)]
		if !ok {
			return ctx.Err()
		}
		for _, b := range bases {
			if ob, ok := owner[key(b)]; !ok {
				owner[key(b)] = o
			} else if ob != o {
				owner[key(b)] = shared
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return Stats{}, fmt.Errorf("gc: stats: %w", err)
	}
	var inUse int64
	err = idx.ForEachChunk(func(id chunkstore.ID, loc chunkstore.Location) error {
		st.Chunks++
		if o, ok := owner[key(id)]; ok {
			st.UniqueBytes += int64(loc.PlainLength)
			inUse += int64(loc.Length)
			if loc.Codec == chunkstore.CodecDelta {
				st.DeltaChunks++
				st.DeltaPlainBytes += int64(loc.PlainLength)
				st.DeltaStoredBytes += int64(loc.Length)
			}
			if o != shared {
				st.PerBackup[o].ExclusiveBytes += int64(loc.Length)
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return Stats{}, fmt.Errorf("gc: stats: %w", err)
	}
	err = idx.ForEachCopy(func(_ chunkstore.ID, loc chunkstore.Location) error {
		st.DuplicateChunks++
		st.DuplicateBytes += int64(loc.Length)
		return ctx.Err()
	})
	if err != nil {
		return Stats{}, fmt.Errorf("gc: stats: %w", err)
	}
	packs, err := idx.Packs()
	if err != nil {
		return Stats{}, fmt.Errorf("gc: stats: %w", err)
	}
	st.DeadBytes = -inUse
	for _, p := range packs {
		st.StoredBytes += p.Size
		st.DeadBytes += p.Size - chunkstore.PackOverhead(p.Chunks, c)
	}
	st.Packs = len(packs)
	if st.UniqueBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.UniqueBytes)
	}
	if inUse > 0 {
		st.CompressionRatio = float64(st.UniqueBytes) / float64(inUse)
	}
	if whole := inUse - st.DeltaStoredBytes; whole > 0 {
		ratio := float64(st.UniqueBytes-st.DeltaPlainBytes) / float64(whole)
		st.DeltaSavedBytes = int64(float64(st.DeltaPlainBytes)/ratio) - st.DeltaStoredBytes
	}
	return st, nil
}
