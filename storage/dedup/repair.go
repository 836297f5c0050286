package dedup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/protocol"
)

// QuarantinePrefix is where Repair moves damaged objects: a damaged pack or
// manifest named N is kept as QuarantinePrefix + N, out of every listing
// of packs and manifests, for an operator to inspect or delete by hand.
const QuarantinePrefix = "quarantine/"

// RepairReport is what Repair did, or with DryRun would do, and what it
// could not bring back.
type RepairReport struct {
	Packs     []PackRepair     `json:"packs"`
	Manifests []ManifestRepair `json:"manifests"`
	// Lost lists every file of a backup with chunks stored nowhere in the
	// repository after the repair: those bytes cannot be restored.
	Lost []LostFile `json:"lost_files"`
}

// PackRepair is one damaged pack.
type PackRepair struct {
	Pack    string `json:"pack"`
	Problem string `json:"problem"`
	// Copied counts the intact chunks stored nowhere else, copied into a
	// new pack; Kept those with an intact copy elsewhere; Lost the chunks
	// found damaged.
	Copied int `json:"copied_chunks"`
	Kept   int `json:"kept_chunks"`
	Lost   int `json:"lost_chunks"`
}

// ManifestRepair is one damaged or missing manifest.
type ManifestRepair struct {
	Manifest string `json:"manifest"`
	Problem  string `json:"problem"`
	// FromIndex says the manifest was written again from the index, which
	// still held the whole backup: nothing is lost. Otherwise the backup
	// keeps the files salvaged from the damaged manifest whose chunks are
	// all stored, and LostFiles names the others decoded (files after
	// damage that stops decoding are not known).
	FromIndex bool     `json:"from_index"`
	Files     int      `json:"salvaged_files"`
	LostFiles []string `json:"lost_files"`
}

// LostFile is a backup file some of whose chunks are stored nowhere.
type LostFile struct {
	Dir           string `json:"dir"`
	Name          string `json:"name"`
	File          string `json:"file"`
	MissingChunks int    `json:"missing_chunks"`
}

// Damaged reports whether the repair found anything it could not bring
// back.
func (r RepairReport) Damaged() bool {
	for _, p := range r.Packs {
		if p.Lost > 0 {
			return true
		}
	}
	for _, m := range r.Manifests {
		if !m.FromIndex {
			return true
		}
	}
	return len(r.Lost) > 0
}

// Repair deals with the damage the index records (found by a sync, a
// rebuild, a collection or Check) so that collections can run again, and
// reports what is lost. It first brings the index up to date with the
// repository. Then, for each damaged pack, it copies the intact chunks
// that no other pack holds into a new pack, and moves the damaged pack to
// QuarantinePrefix. For each damaged or missing manifest, it writes the
// manifest again from the index if the index holds the backup; otherwise
// it keeps the files it can salvage from the damaged manifest and moves
// the original to QuarantinePrefix. Nothing is deleted. With dryRun it
// changes nothing and reports what it would do.
//
// IMPORTANT: no backup may be running in the repository meanwhile, in
// this process or another.
func (s *Storage) Repair(ctx context.Context, dryRun bool) (RepairReport, error) {
	open := s.openWritable
	if dryRun {
		open = s.open
	}
	r, err := open(ctx)
	if err != nil {
		return RepairReport{}, err
	}
	rep, err := r.repair(ctx, dryRun)
	return rep, asStorageErr(err)
}

func (r *repo) repair(ctx context.Context, dryRun bool) (RepairReport, error) {
	var rep RepairReport
	if _, err := r.sync(ctx, true); err != nil {
		return rep, err
	}
	damaged, err := r.idx.Damaged()
	if err != nil {
		return rep, err
	}
	for _, name := range slices.Sorted(maps.Keys(damaged)) {
		if id, perr := chunkstore.ParsePackName(name); perr == nil {
			pr, err := r.repairPack(ctx, id, damaged, dryRun)
			if err != nil {
				return rep, fmt.Errorf("dedup: repair %s: %w", name, err)
			}
			rep.Packs = append(rep.Packs, pr)
		} else {
			mr, err := r.repairManifest(ctx, name, dryRun)
			if err != nil {
				return rep, fmt.Errorf("dedup: repair %s: %w", name, err)
			}
			rep.Manifests = append(rep.Manifests, mr)
		}
	}
	rep.Lost, err = r.lostFiles(ctx)
	return rep, err
}

// repairPack saves what can be saved of a damaged pack, then quarantines
// it: its intact chunks with no other intact copy go into a new pack,
// which is durable and indexed before the pack leaves the index and the
// repository.
func (r *repo) repairPack(ctx context.Context, id chunkstore.ID, damaged map[string]string, dryRun bool) (PackRepair, error) {
	name := chunkstore.PackName(id)
	pr := PackRepair{Pack: name, Problem: damaged[name]}
	b := r.store.Backend()
	data, err := chunkstore.ReadObject(ctx, b, name, 0)
	if errors.Is(err, chunkstore.ErrNotExist) {
		pr.Problem = "pack is missing"
		if dryRun {
			return pr, nil
		}
		if err := r.idx.DropPacks([]chunkstore.ID{id}); err != nil {
			return pr, err
		}
		return pr, r.idx.ClearDamaged(name)
	}
	if err != nil {
		return pr, err
	}
	// The chunks its headers show and those its trailer lists, if it
	// parses: a damaged header can hide an intact chunk the trailer finds.
	candidates := chunkstore.ScanPack(data)
	if entries, err := chunkstore.ReadPackTrailer(ctx, b, name, int64(len(data)), r.store.Cipher()); err == nil {
		candidates = append(candidates, entries...)
	}
	intact, lost := r.store.Salvage(ctx, data, candidates)
	pr.Lost = lost
	builder := chunkstore.NewPackBuilder(len(data))
	for _, e := range intact {
		elsewhere, err := r.storedElsewhere(e.ID, id, damaged)
		if err != nil {
			return pr, err
		}
		if elsewhere {
			pr.Kept++
			continue
		}
		builder.Add(chunkstore.EncodedChunk{ID: e.ID, Data: data[e.Offset : e.Offset+e.Length], PlainLength: int(e.PlainLength), Codec: e.Codec, Bases: e.Bases, Features: e.Features})
		pr.Copied++
	}
	if dryRun {
		return pr, nil
	}
	if builder.Count() > 0 {
		n := builder.Count()
		newID, entries, size, err := r.store.WritePack(ctx, builder)
		if err != nil {
			return pr, err
		}
		if err := r.idx.AddPack(index.Pack{ID: newID, Size: size, Chunks: n, Created: time.Now()}, entries); err != nil {
			return pr, err
		}
	}
	if err := r.quarantine(ctx, name, data); err != nil {
		return pr, err
	}
	// Other processes' indexes may list it: they forget it at their next
	// sync, and never deduplicate against a chunk it lost.
	if err := protocol.RecordDeleted(ctx, b, []chunkstore.ID{id}); err != nil {
		return pr, err
	}
	if err := r.idx.DropPacks([]chunkstore.ID{id}); err != nil {
		return pr, err
	}
	if err := b.Delete(ctx, name); err != nil {
		return pr, err
	}
	return pr, r.idx.ClearDamaged(name)
}

// storedElsewhere reports whether the index holds chunk id in a pack other
// than pack that is not damaged.
func (r *repo) storedElsewhere(id, pack chunkstore.ID, damaged map[string]string) (bool, error) {
	locs, err := r.idx.Locations(id)
	for _, l := range locs {
		if _, bad := damaged[chunkstore.PackName(l.Pack)]; l.Pack != pack && !bad {
			return true, err
		}
	}
	return false, err
}

// repairManifest writes a damaged or missing manifest again: from the
// index if it holds the backup, or else from what decodes of the damaged
// one, keeping the files whose chunks are all stored. The damaged object
// is quarantined first.
func (r *repo) repairManifest(ctx context.Context, name string, dryRun bool) (ManifestRepair, error) {
	damaged, err := r.idx.Damaged()
	if err != nil {
		return ManifestRepair{}, err
	}
	mr := ManifestRepair{Manifest: name, Problem: damaged[name], LostFiles: []string{}}
	dir, bname, err := index.ParseManifestName(name)
	if err != nil { // not a name this build writes: leave it for the operator
		return mr, nil
	}
	b := r.store.Backend()
	data, err := chunkstore.ReadObject(ctx, b, name, 0)
	raw := data // as stored, to quarantine
	if errors.Is(err, chunkstore.ErrCorrupt) {
		// Sealed, and it does not open: none of it decodes.
		if raw, err = chunkstore.ReadObject(ctx, r.store.RawBackend(), name, 0); err == nil {
			data = []byte{}
		}
	}
	if err != nil && !errors.Is(err, chunkstore.ErrNotExist) {
		return mr, err
	}
	if bk, found, err := r.idx.Backup(dir, bname); err != nil {
		return mr, err
	} else if found && bk.State == index.Ended {
		mr.FromIndex = true
		if dryRun {
			return mr, nil
		}
		if data != nil {
			if err := r.quarantine(ctx, name, raw); err != nil {
				return mr, err
			}
		}
		if err := r.putManifest(ctx, dir, bname, bk.Ended); err != nil {
			return mr, err
		}
		return mr, r.idx.ClearDamaged(name)
	}
	if data == nil { // gone, and the index does not have the backup either
		if dryRun {
			return mr, nil
		}
		return mr, r.idx.ClearDamaged(name)
	}
	m, derr := index.DecodeManifest(bytes.NewReader(data))
	if derr == nil {
		return mr, nil // whole again: a sync imports it
	}
	salvaged := index.Manifest{Backup: index.Backup{Dir: dir, Name: bname, State: index.Ended, Started: m.Backup.Started, Ended: m.Backup.Ended}}
	for _, f := range m.Files {
		stored, err := r.allStored(f.Refs)
		if err != nil {
			return mr, err
		}
		if stored {
			salvaged.Files = append(salvaged.Files, f)
		} else {
			mr.LostFiles = append(mr.LostFiles, f.Name)
		}
	}
	mr.Files = len(salvaged.Files)
	if dryRun {
		return mr, nil
	}
	if err := r.quarantine(ctx, name, raw); err != nil {
		return mr, err
	}
	var enc bytes.Buffer
	if err := index.EncodeManifest(&enc, salvaged); err != nil {
		return mr, err
	}
	if err := b.Put(ctx, name, &enc); err != nil {
		return mr, err
	}
	if err := r.idx.ClearDamaged(name); err != nil {
		return mr, err
	}
	_, err = r.underBackupLock(dir, bname, func() (bool, error) {
		if _, found, err := r.idx.Backup(dir, bname); err != nil || found {
			return false, err
		}
		return true, r.idx.ImportBackup(salvaged)
	})
	return mr, err
}

// allStored reports whether every chunk of refs is indexed.
func (r *repo) allStored(refs []index.Ref) (bool, error) {
	for _, ref := range refs {
		if _, found, err := r.idx.Lookup(ref.ID); err != nil || !found {
			return false, err
		}
	}
	return true, nil
}

// lostFiles lists the files of backups whose chunks are not all indexed,
// a delta's bases included.
func (r *repo) lostFiles(ctx context.Context) ([]LostFile, error) {
	lost := []LostFile{}
	backups, err := r.idx.Backups("", true)
	if err != nil {
		return nil, err
	}
	for _, bk := range backups {
		files, _, err := r.idx.Files(bk.Dir, bk.Name)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			missing := 0
			err := r.idx.ListRefs(f.List, func(refs []index.Ref) error {
				for _, ref := range refs {
					if ok, err := r.stored(ref.ID); err != nil {
						return err
					} else if !ok {
						missing++
					}
				}
				return ctx.Err()
			})
			if err != nil {
				return nil, err
			}
			if missing > 0 {
				lost = append(lost, LostFile{Dir: bk.Dir, Name: bk.Name, File: f.Name, MissingChunks: missing})
			}
		}
	}
	return lost, nil
}

// stored reports whether chunk id is indexed, with its bases if it is a
// delta.
func (r *repo) stored(id chunkstore.ID) (bool, error) {
	loc, found, err := r.idx.Lookup(id)
	if err != nil || !found || loc.Codec != chunkstore.CodecDelta {
		return found, err
	}
	bases, err := r.idx.Bases(id, loc.Pack)
	if err != nil {
		return false, err
	}
	for _, b := range bases {
		if _, found, err := r.idx.Lookup(b); err != nil || !found {
			return false, err
		}
	}
	return true, nil
}

// quarantine stores a damaged object's bytes, as they were stored, under
// QuarantinePrefix.
func (r *repo) quarantine(ctx context.Context, name string, raw []byte) error {
	return r.store.RawBackend().Put(ctx, QuarantinePrefix+name, bytes.NewReader(raw))
}
