// Package check verifies a repository: that the index, the packs and the
// chunk lists agree (always), and that every chunk's bytes still hash to its
// ID (with ReadData). It names every damaged pack and chunk and every backup
// file that uses one, and records the damaged packs and manifests in the
// index (index.DB.SetDamaged), so that no collection deletes anything until
// a repair has dealt with them.
package check

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
)

// Options selects how deep a check goes.
type Options struct {
	// ReadData reads, decompresses and re-hashes chunks.
	ReadData bool
	// Subset, with ReadData, is the fraction of chunks read, chosen by ID
	// (0 or 1: all).
	Subset float64
}

// Problem is one thing found wrong.
type Problem struct {
	Manifest string `json:"manifest,omitempty"`
	Pack     string `json:"pack,omitempty"`
	Chunk    string `json:"chunk,omitempty"`
	Detail   string `json:"detail"`
}

// File is a backup file that uses a damaged chunk.
type File struct {
	Dir  string `json:"dir"`
	Name string `json:"name"`
	File string `json:"file"`
}

// Report is the outcome of a check.
type Report struct {
	Backups    int       `json:"backups"`
	Packs      int       `json:"packs"`
	Chunks     int       `json:"chunks"`
	ChunksRead int       `json:"chunks_read"`
	Problems   []Problem `json:"problems"`
	Affected   []File    `json:"affected_files"`
}

// OK reports whether the check found nothing wrong.
func (r Report) OK() bool { return len(r.Problems) == 0 }

type checker struct {
	ctx      context.Context
	store    *chunkstore.Store
	idx      *index.DB
	report   Report
	damaged  map[chunkstore.ID]bool
	toRecord map[string]string // damaged object → what is wrong
}

// problem reports damage to a pack or a chunk, and records the pack as
// damaged.
func (c *checker) problem(pack, chunk *chunkstore.ID, format string, args ...any) {
	p := Problem{Detail: fmt.Sprintf(format, args...)}
	if pack != nil {
		p.Pack = pack.String()
		c.record(chunkstore.PackName(*pack), p.Detail)
	}
	if chunk != nil {
		p.Chunk = chunk.String()
		c.damaged[*chunk] = true
	}
	c.report.Problems = append(c.report.Problems, p)
}

// Run checks the repository. An error means the check itself could not go
// on; damage is reported in the Report.
func Run(ctx context.Context, store *chunkstore.Store, idx *index.DB, opts Options) (Report, error) {
	c := &checker{ctx: ctx, store: store, idx: idx, damaged: map[chunkstore.ID]bool{}, toRecord: map[string]string{}}
	if err := c.run(opts); err != nil {
		return Report{}, fmt.Errorf("check: %w", err)
	}
	for name, detail := range c.toRecord {
		if err := idx.SetDamaged(name, detail); err != nil {
			return Report{}, fmt.Errorf("check: %w", err)
		}
	}
	return c.report, nil
}

func (c *checker) run(opts Options) error {
	// Packs: present, of the recorded size, with a trailer that parses.
	packs, err := c.idx.Packs()
	if err != nil {
		return err
	}
	c.report.Packs = len(packs)
	sizes := map[string]int64{}
	err = c.store.Backend().List(c.ctx, chunkstore.PackPrefix, "", func(o chunkstore.ObjectInfo) error {
		sizes[o.Name] = o.Size
		return nil
	})
	if err != nil {
		return err
	}
	trailers := map[chunkstore.ID]map[chunkstore.ID]chunkstore.Blob{} // healthy packs only
	listed := map[chunkstore.ID]bool{}
	for _, p := range packs {
		listed[p.ID] = true
		name := chunkstore.PackName(p.ID)
		size, ok := sizes[name]
		switch {
		case !ok:
			c.problem(&p.ID, nil, "pack is missing")
			continue
		case size != p.Size:
			c.problem(&p.ID, nil, "pack has %d bytes, the index says %d", size, p.Size)
			continue
		}
		entries, err := chunkstore.ReadPackTrailer(c.ctx, c.store.Backend(), name, size, c.store.Cipher())
		if errors.Is(err, chunkstore.ErrCorrupt) || errors.Is(err, chunkstore.ErrUnsupportedVersion) {
			c.problem(&p.ID, nil, "pack trailer: %v", err)
			continue
		}
		if err != nil {
			return err
		}
		t := make(map[chunkstore.ID]chunkstore.Blob, len(entries))
		for _, e := range entries {
			t[e.ID] = e.Blob
		}
		trailers[p.ID] = t
	}

	// Chunks: each in a healthy pack whose trailer agrees, and readable.
	err = c.idx.ForEachChunk(func(id chunkstore.ID, loc chunkstore.Location) error {
		c.report.Chunks++
		t, ok := trailers[loc.Pack]
		switch {
		case !ok && listed[loc.Pack]:
			c.problem(&loc.Pack, &id, "chunk is in a missing or damaged pack")
			return nil
		case !ok:
			// Indexed after the packs were listed (a backup running in
			// this process): checked by the next check, unless the index
			// does not list the pack at all.
			if _, known, err := c.idx.Pack(loc.Pack); err != nil {
				return err
			} else if !known {
				c.problem(&loc.Pack, &id, "chunk is in a pack the index does not list")
			}
			return nil
		case t[id] != loc.Blob:
			c.problem(&loc.Pack, &id, "the pack's trailer does not list the chunk where the index says")
			return nil
		}
		if opts.ReadData && sampled(id, opts.Subset) {
			c.report.ChunksRead++
			if _, err := c.store.LoadChunk(c.ctx, id, loc, nil, nil); errors.Is(err, chunkstore.ErrCorrupt) {
				c.problem(&loc.Pack, &id, "%v", err)
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Deltas: every base indexed and stored whole.
	err = c.idx.ForEachDelta(func(id chunkstore.ID, bases []chunkstore.ID) error {
		for _, b := range bases {
			loc, found, err := c.idx.Lookup(b)
			switch {
			case err != nil:
				return err
			case !found:
				c.problem(nil, &id, "the delta's base %s is not in the index", b)
			case loc.Codec == chunkstore.CodecDelta:
				c.problem(nil, &id, "the delta's base %s is itself a delta", b)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}

	// Backups: none stuck in progress, every chunk of every file indexed.
	backups, err := c.idx.Backups("", true)
	if err != nil {
		return err
	}
	c.report.Backups = len(backups)
	for _, b := range backups {
		if b.State == index.InProgress {
			c.report.Problems = append(c.report.Problems, Problem{Detail: fmt.Sprintf("backup %s/%s is still in progress", b.Dir, b.Name)})
		}
		files, _, err := c.idx.Files(b.Dir, b.Name)
		if err != nil {
			return err
		}
		for _, f := range files {
			hit := false
			err := c.idx.ListRefs(f.List, func(refs []index.Ref) error {
				for _, r := range refs {
					if c.damaged[r.ID] {
						hit = true
						continue
					}
					if _, found, err := c.idx.Lookup(r.ID); err != nil {
						return err
					} else if !found {
						c.problem(nil, &r.ID, "backup %s/%s file %s uses a chunk that is not indexed", b.Dir, b.Name, f.Name)
						hit = true
					}
				}
				return c.ctx.Err()
			})
			if err != nil {
				return err
			}
			if hit {
				c.report.Affected = append(c.report.Affected, File{Dir: b.Dir, Name: b.Name, File: f.Name})
			}
		}
	}
	if err := c.checkManifests(backups); err != nil {
		return err
	}
	slices.SortFunc(c.report.Problems, func(a, b Problem) int {
		return strings.Compare(a.Manifest+a.Pack+a.Chunk+a.Detail, b.Manifest+b.Pack+b.Chunk+b.Detail)
	})
	return nil
}

// checkManifests checks that every ended backup has a manifest that decodes
// and agrees with the index, and that no manifest is left of a backup the
// index does not have: a rebuild would lose the one and revive the other.
func (c *checker) checkManifests(backups []index.Backup) error {
	stray := map[string]bool{}
	err := c.store.Backend().List(c.ctx, index.ManifestPrefix, "", func(o chunkstore.ObjectInfo) error {
		stray[o.Name] = true
		return nil
	})
	if err != nil {
		return err
	}
	for _, b := range backups {
		name := index.ManifestName(b.Dir, b.Name)
		present := stray[name]
		delete(stray, name)
		if b.State != index.Ended {
			continue
		}
		if !present {
			c.manifestProblem(name, "backup %s/%s has no manifest", b.Dir, b.Name)
			continue
		}
		rc, err := c.store.Backend().Get(c.ctx, name, 0, -1)
		if err != nil {
			return err
		}
		m, err := index.DecodeManifest(rc)
		rc.Close()
		if err != nil {
			c.manifestProblem(name, "%v", err)
			continue
		}
		files, _, err := c.idx.Files(b.Dir, b.Name)
		if err != nil {
			return err
		}
		if !sameFiles(m.Files, files) {
			c.manifestProblem(name, "manifest of %s/%s lists other files than the index", b.Dir, b.Name)
		}
	}
	for name := range stray {
		c.manifestProblem(name, "manifest of a backup the index does not have")
	}
	return nil
}

// manifestProblem reports damage to a manifest, and records it.
func (c *checker) manifestProblem(name, format string, args ...any) {
	p := Problem{Manifest: name, Detail: fmt.Sprintf(format, args...)}
	c.report.Problems = append(c.report.Problems, p)
	c.record(name, p.Detail)
}

// record notes a damaged object, to be recorded in the index once the
// scans (whose read transactions a write must not nest in) are done.
func (c *checker) record(name, detail string) {
	if _, ok := c.toRecord[name]; !ok {
		c.toRecord[name] = detail
	}
}

func sameFiles(m []index.ManifestFile, files []index.File) bool {
	if len(m) != len(files) {
		return false
	}
	for i := range m {
		if m[i].Name != files[i].Name || m[i].Size != files[i].Size || int64(len(m[i].Refs)) != files[i].Chunks {
			return false
		}
	}
	return true
}

// sampled picks a fraction of chunks by the first bytes of their ID, so the
// same subset is read each time.
func sampled(id chunkstore.ID, fraction float64) bool {
	if fraction <= 0 || fraction >= 1 {
		return true
	}
	return float64(uint16(id[0])<<8|uint16(id[1])) < fraction*65536
}
