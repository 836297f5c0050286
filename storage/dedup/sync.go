package dedup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/protocol"
)

// Sync: how this process's index cache catches up with what every process
// wrote, by the rules of package protocol.

// sync brings the index up to date with the repository's objects: it
// indexes packs it does not know, takes the condemned packs from the
// condemnations and forgets the packs they say are deleted, imports
// backups whose manifests it does not know and forgets ended backups whose
// manifests are gone.
//
// A full sync lists every pack and also forgets the packs gone from the
// listing (deleted by a collection, or moved aside by a repair); from an
// empty index it is a rebuild. Otherwise it lists only the packs named
// since the last sync, as protocol.PacksAfter says: a sync that costs what
// changed, whatever the size of the repository (see package protocol for
// why that is safe). A sync that must know every pack (a collection, a
// check, a repair, a read that missed) asks for a full one.
func (r *repo) sync(ctx context.Context, full bool) (RebuildResult, error) {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	defer r.syncs.Add(1)
	var res RebuildResult
	b := r.store.Backend()
	started := time.Now()
	recorded, synced, err := r.idx.SyncedAt()
	if err != nil {
		return res, err
	}
	last := recorded
	if !r.synced.IsZero() && synced {
		last = r.synced
	}
	after := protocol.PacksAfter(last, synced, started, r.opts.LeaseTTL, full)
	full = after == ""
	// Condemnations first: a pack deleted since, if listed below, was
	// listed here as condemned.
	if err := protocol.SyncCondemned(ctx, b, r.idx, !full); err != nil {
		return res, fmt.Errorf("dedup: sync index: %w", err)
	}
	var known []index.Pack
	if full { // before listing: any of these not listed is gone
		if known, err = r.idx.Packs(); err != nil {
			return res, err
		}
	}
	listed := map[chunkstore.ID]chunkstore.ObjectInfo{}
	err = b.List(ctx, chunkstore.PackPrefix, after, func(o chunkstore.ObjectInfo) error {
		if id, err := chunkstore.ParsePackName(o.Name); err == nil {
			listed[id] = o
		}
		return nil
	})
	var manifests []string
	if err == nil {
		err = b.List(ctx, index.ManifestPrefix, "", func(o chunkstore.ObjectInfo) error {
			manifests = append(manifests, o.Name)
			return nil
		})
	}
	if err != nil {
		return res, fmt.Errorf("dedup: sync index: %w", err)
	}
	if err := r.syncPacks(ctx, listed, &res); err != nil {
		return res, fmt.Errorf("dedup: sync index: %w", err)
	}
	if full {
		var gone []chunkstore.ID
		for _, p := range known {
			if _, ok := listed[p.ID]; !ok {
				gone = append(gone, p.ID)
			}
		}
		if len(gone) > 0 {
			if err := r.idx.DropPacks(gone); err != nil {
				return res, err
			}
			res.DroppedPacks = len(gone)
		}
		if err := r.forgetGoneDamage(listed, manifests); err != nil {
			return res, err
		}
	}
	if err := r.syncManifests(ctx, manifests, protocol.TrustRecords(last, synced, started), &res); err != nil {
		return res, fmt.Errorf("dedup: sync index: %w", err)
	}
	ended := map[string]bool{}
	for _, m := range manifests {
		ended[m] = true
	}
	if err := r.syncRunning(ctx, ended); err != nil {
		return res, fmt.Errorf("dedup: sync index: %w", err)
	}
	if !synced || started.Sub(recorded) >= time.Minute || started.Before(recorded) {
		if err := r.idx.SetSyncedAt(started); err != nil {
			return res, err
		}
	}
	r.synced = started
	if !full {
		return res, nil
	}
	st, err := r.idx.Stats()
	res.Chunks = st.Chunks
	return res, err
}

// syncPacks indexes the listed packs the index does not know, reading
// their trailers a few at a time and indexing them in batches.
func (r *repo) syncPacks(ctx context.Context, listed map[chunkstore.ID]chunkstore.ObjectInfo, res *RebuildResult) error {
	g, gctx := errgroup.WithContext(ctx)
	todo := make(chan chunkstore.ObjectInfo)
	read := make(chan index.PackEntries)
	g.Go(func() error {
		defer close(todo)
		for id, o := range listed {
			_, known, err := r.idx.Pack(id)
			if err != nil {
				return err
			}
			if known {
				continue
			}
			select {
			case todo <- o:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var (
		readers sync.WaitGroup
		mu      sync.Mutex // guards res.DamagedPacks
	)
	for range 8 {
		readers.Add(1)
		g.Go(func() error {
			defer readers.Done()
			for o := range todo {
				p, damage, err := r.readPack(gctx, o)
				if errors.Is(err, chunkstore.ErrNotExist) {
					continue // deleted since it was listed
				}
				if err != nil {
					return err
				}
				if damage != nil {
					mu.Lock()
					res.DamagedPacks = append(res.DamagedPacks, *damage)
					mu.Unlock()
				}
				select {
				case read <- p:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	go func() { readers.Wait(); close(read) }()
	g.Go(func() error {
		var batch []index.PackEntries
		chunks := 0
		flush := func() error {
			err := r.idx.AddPacks(batch)
			res.Packs += len(batch)
			batch, chunks = batch[:0], 0
			return err
		}
		for p := range read {
			batch, chunks = append(batch, p), chunks+len(p.Entries)
			if chunks >= syncBatchChunks {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	})
	return g.Wait()
}

// syncBatchChunks is about how many chunks a sync indexes per transaction:
// 16 MiB packs of 64 KiB chunks, 256 at a time.
const syncBatchChunks = 64 << 10

// forgetGoneDamage forgets the damaged objects that are no longer in the
// repository: deleted, or moved aside by a repair. The missing manifest of
// a backup the index holds as ended stays damage, for a repair to write.
func (r *repo) forgetGoneDamage(packs map[chunkstore.ID]chunkstore.ObjectInfo, manifests []string) error {
	damaged, err := r.idx.Damaged()
	if err != nil {
		return err
	}
	for name := range damaged {
		id, perr := chunkstore.ParsePackName(name)
		_, present := packs[id]
		if perr != nil {
			present = slices.Contains(manifests, name)
			if dir, bname, err := index.ParseManifestName(name); !present && err == nil {
				b, found, err := r.idx.Backup(dir, bname)
				if err != nil {
					return err
				}
				present = found && b.State == index.Ended
			}
		}
		if !present {
			if err := r.idx.ClearDamaged(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// readPack reads a pack's trailer, for indexing. A pack whose trailer does
// not parse is salvaged: its intact chunks, found by their headers, are
// indexed, and it is recorded as damaged first, so that no collection
// deletes it or anything else meanwhile.
func (r *repo) readPack(ctx context.Context, o chunkstore.ObjectInfo) (index.PackEntries, *Damage, error) {
	id, _ := chunkstore.ParsePackName(o.Name)
	entries, err := chunkstore.ReadPackTrailer(ctx, r.store.Backend(), o.Name, o.Size, r.store.Cipher())
	var damage *Damage
	if errors.Is(err, chunkstore.ErrCorrupt) || errors.Is(err, chunkstore.ErrUnsupportedVersion) {
		damage = &Damage{Object: o.Name, Problem: err.Error()}
		if err := r.idx.SetDamaged(o.Name, damage.Problem); err != nil {
			return index.PackEntries{}, nil, err
		}
		var data []byte
		if data, err = chunkstore.ReadObject(ctx, r.store.Backend(), o.Name, 0); err == nil {
			entries, damage.Lost = r.store.Salvage(ctx, data, chunkstore.ScanPack(data))
			damage.Salvaged = len(entries)
		}
	}
	if err != nil {
		return index.PackEntries{}, nil, err
	}
	return index.PackEntries{Pack: index.Pack{ID: id, Size: o.Size, Chunks: len(entries), Created: o.ModTime}, Entries: entries}, damage, nil
}

// syncManifests imports the backups of manifests the index does not know,
// and forgets ended backups whose manifests are gone and whose removal is
// recorded (another process removed them); a manifest gone without that
// record is recorded as damage instead, unless trustRecords is false. Each change is made
// under the backup's lock, after checking the object again, so that a
// backup this process ends or removes meanwhile is left as it is.
func (r *repo) syncManifests(ctx context.Context, manifests []string, trustRecords bool, res *RebuildResult) error {
	b := r.store.Backend()
	backups, err := r.idx.Backups("", true)
	if err != nil {
		return err
	}
	local := map[string]index.Backup{}
	for _, bk := range backups {
		local[index.ManifestName(bk.Dir, bk.Name)] = bk
	}
	listed := map[string]bool{}
	for _, name := range manifests {
		listed[name] = true
		if _, ok := local[name]; ok {
			continue
		}
		rc, err := b.Get(ctx, name, 0, -1)
		if errors.Is(err, chunkstore.ErrNotExist) {
			continue // removed since it was listed
		}
		if err != nil {
			return err
		}
		m, err := index.DecodeManifest(rc)
		rc.Close()
		if err == nil && index.ManifestName(m.Backup.Dir, m.Backup.Name) != name {
			err = fmt.Errorf("manifest of %s/%s stored as %s", m.Backup.Dir, m.Backup.Name, name)
		}
		if err != nil {
			if err := r.idx.SetDamaged(name, err.Error()); err != nil {
				return err
			}
			res.DamagedManifests = append(res.DamagedManifests, Damage{Object: name, Problem: err.Error()})
			continue
		}
		if err := r.idx.ClearDamaged(name); err != nil { // replaced by a whole one
			return err
		}
		imported, err := r.underBackupLock(m.Backup.Dir, m.Backup.Name, func() (bool, error) {
			if _, found, err := r.idx.Backup(m.Backup.Dir, m.Backup.Name); err != nil || found {
				return false, err
			}
			if exists, err := objectExists(ctx, b, name); err != nil || !exists {
				return false, err
			}
			return true, r.idx.ImportBackup(m)
		})
		if err != nil {
			return err
		}
		if imported {
			res.Backups++
		}
	}
	for name, bk := range local {
		if listed[name] || bk.State != index.Ended {
			continue
		}
		var missing bool
		removed, err := r.underBackupLock(bk.Dir, bk.Name, func() (bool, error) {
			if exists, err := objectExists(ctx, b, name); err != nil || exists {
				return false, err
			}
			// Removed by another process, which recorded it first; or
			// lost, and damage, for a repair to write again.
			recorded, err := !trustRecords, error(nil)
			if trustRecords {
				recorded, err = objectExists(ctx, b, index.RemovedName(bk.Dir, bk.Name, bk.Started))
			}
			if err != nil || !recorded {
				missing = err == nil
				return false, err
			}
			return true, r.idx.DeleteBackup(bk.Dir, bk.Name)
		})
		if err != nil {
			return err
		}
		if removed {
			res.RemovedBackups++
		}
		if missing {
			if err := r.idx.SetDamaged(name, fmt.Sprintf("backup %s/%s has no manifest, and its removal is not recorded", bk.Dir, bk.Name)); err != nil {
				return err
			}
			res.DamagedManifests = append(res.DamagedManifests, Damage{Object: name, Problem: "missing"})
		}
	}
	return nil
}

func (r *repo) underBackupLock(dir, name string, fn func() (bool, error)) (bool, error) {
	l := r.backupLock(dir, name)
	l.Lock()
	defer l.Unlock()
	return fn()
}

// objectExists asks the backend whether an object exists now.
func objectExists(ctx context.Context, b chunkstore.Backend, name string) (bool, error) {
	rc, err := b.Get(ctx, name, 0, 0)
	if errors.Is(err, chunkstore.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	rc.Close()
	return true, nil
}
