package dedup

import (
	"context"
	"errors"

	"github.com/dedupstore/dedupstore/index"
)

// RebuildResult is what an index rebuild, or a sync of the index, found
// and changed.
type RebuildResult struct {
	Packs            int      // packs indexed
	DroppedPacks     int      // packs forgotten: gone from the repository
	Chunks           int      // chunks in the index afterwards (of a full sync only)
	Backups          int      // backups imported from manifests
	RemovedBackups   int      // backups forgotten: their manifests are gone
	DamagedPacks     []Damage // packs whose trailer does not parse: their intact chunks are indexed
	DamagedManifests []Damage // manifests that do not decode: their backups stay missing
}

// Damage is a damaged object that a sync found, and what it could save of
// it. Damaged objects stay where they are, recorded in the index, and no
// collection deletes anything until they are repaired (see Repair).
type Damage struct {
	Object   string `json:"object"`
	Problem  string `json:"problem"`
	Salvaged int    `json:"salvaged_chunks"` // chunks of a pack found intact by their headers, and indexed
	Lost     int    `json:"lost_chunks"`     // chunks of a pack whose bytes are damaged
}

// RebuildIndex throws index.db away and rebuilds it from the repository
// alone: pack trailers (the headers of packs whose trailer is damaged) and
// manifest objects. It closes the storage first, so handles obtained
// before fail with storage.ErrClosed. Damaged objects are recorded and
// reported, never skipped silently. Until the rebuild completes the index
// is marked not ready, so an interrupted rebuild runs again at the next
// open.
//
// IMPORTANT: no backup may be running in this storage meanwhile.
func (s *Storage) RebuildIndex(ctx context.Context) (RebuildResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.repo != nil {
		err := s.repo.close()
		s.repo = nil
		if err != nil && !errors.Is(err, index.ErrDamaged) {
			return RebuildResult{}, err
		}
	}
	r, err := s.openRepo(ctx, true)
	if err != nil {
		return RebuildResult{}, err
	}
	if r.rebuilt == nil { // a new repository: nothing to rebuild
		return RebuildResult{}, nil
	}
	return *r.rebuilt, nil
}

func (r *repo) rebuildIndex(ctx context.Context) (RebuildResult, error) {
	if err := r.idx.Reset(); err != nil {
		return RebuildResult{}, err
	}
	res, err := r.sync(ctx, true)
	if err != nil {
		return res, err
	}
	return res, r.idx.SetReady(true)
}
