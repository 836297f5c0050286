package dedup

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
)

// RebuildResult is what an index rebuild found.
type RebuildResult struct {
	Packs            int      // packs indexed
	Chunks           int      // chunks indexed
	Backups          int      // backups imported from manifests
	DamagedPacks     []string // packs whose trailer does not parse: their chunks stay unindexed
	DamagedManifests []string // manifests that do not parse: their backups stay missing
}

// RebuildIndex throws index.db's contents away and rebuilds them from the
// repository alone: pack trailers and manifest objects. Damaged objects are
// skipped and reported. Until it completes the index is marked not ready,
// so an interrupted rebuild runs again at the next open.
//
// IMPORTANT: no backup may be running in this storage meanwhile.
func (s *Storage) RebuildIndex(ctx context.Context) (RebuildResult, error) {
	r, err := s.open(ctx)
	if err != nil {
		return RebuildResult{}, err
	}
	return r.rebuildIndex(ctx)
}

func (r *repo) rebuildIndex(ctx context.Context) (RebuildResult, error) {
	var res RebuildResult
	if err := r.idx.Reset(); err != nil {
		return res, err
	}
	b := r.store.Backend()
	var objects []chunkstore.ObjectInfo
	err := b.List(ctx, "", func(o chunkstore.ObjectInfo) error {
		objects = append(objects, o)
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("dedup: rebuild index: %w", err)
	}
	for _, o := range objects {
		id, err := chunkstore.ParsePackName(o.Name)
		if err != nil {
			continue
		}
		entries, err := chunkstore.ReadPackTrailer(ctx, b, o.Name, o.Size)
		if errors.Is(err, chunkstore.ErrCorrupt) || errors.Is(err, chunkstore.ErrUnsupportedVersion) {
			res.DamagedPacks = append(res.DamagedPacks, o.Name)
			continue
		}
		if err != nil {
			return res, fmt.Errorf("dedup: rebuild index: %w", err)
		}
		if err := r.idx.AddPack(index.Pack{ID: id, Size: o.Size, Chunks: len(entries), Created: o.ModTime}, entries); err != nil {
			return res, err
		}
		res.Packs++
	}
	for _, o := range objects {
		if !strings.HasPrefix(o.Name, index.ManifestPrefix) {
			continue
		}
		rc, err := b.Get(ctx, o.Name, 0, -1)
		if err != nil {
			return res, fmt.Errorf("dedup: rebuild index: %w", err)
		}
		m, err := index.DecodeManifest(rc)
		rc.Close()
		if err == nil && index.ManifestName(m.Backup.Dir, m.Backup.Name) != o.Name {
			err = fmt.Errorf("manifest of %s/%s stored as %s", m.Backup.Dir, m.Backup.Name, o.Name)
		}
		if err != nil {
			res.DamagedManifests = append(res.DamagedManifests, o.Name)
			continue
		}
		if err := r.idx.ImportBackup(m); err != nil {
			return res, err
		}
		res.Backups++
	}
	st, err := r.idx.Stats()
	if err != nil {
		return res, err
	}
	res.Chunks = st.Chunks
	return res, r.idx.SetReady(true)
}
