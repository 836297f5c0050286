// Package gc reclaims the space of chunks that nothing references. It marks
// every chunk on a chunk list in the index, plans which packs to delete
// (nothing live) and which to rewrite (too much dead), and carries the plan
// out in the order that keeps the repository consistent at every step: new
// pack durable, then the index, then the old pack deleted.
//
// GC may run in the process that is taking backups: the Claims it is given
// let it spare every chunk a writer deduplicated against while it ran.
// Other processes, on this host or others, may be writing into the
// repository meanwhile, each with its own index, so collection is
// two-phase, with leases and a lock object: see shared.go, which also owns
// those objects. When no process holds a lease, both phases run at once.
package gc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/protocol"
)

// Options tunes a collection. The zero value selects the defaults.
type Options struct {
	// RepackThreshold is the fraction of a pack's bytes that must be dead
	// for the pack to be rewritten with only its live chunks; default 0.25.
	RepackThreshold float64
	// GracePeriod protects packs that the index does not know: they are
	// left by a crash between writing a pack and indexing it, or are being
	// written right now by another process. Only those older than this are
	// condemned. While any process holds a lease it also protects packs
	// younger than this, and a condemnation that recorded leases is carried
	// out only once it is this old, all by the server's clock. Default 24 h.
	GracePeriod time.Duration
}

func (o Options) withDefaults() Options {
	if o.RepackThreshold <= 0 {
		o.RepackThreshold = 0.25
	}
	if o.GracePeriod <= 0 {
		o.GracePeriod = 24 * time.Hour
	}
	return o
}

// Claims is how GC learns what writers in the same process are doing.
// A chunk is claimed when a writer decides to reference it (deduplicating
// against it or storing it) and stays claimed until the writer's chunk list
// holding it is in the index, where marking sees it.
type Claims interface {
	// Begin starts recording every chunk claimed or released from now on,
	// until the returned function is called.
	Begin() (end func())
	// Commit runs fn while no writer can claim a chunk. claimed reports
	// whether a chunk was claimed or released since Begin, or is claimed
	// now, or is in a pack a writer has written and not yet indexed. Index
	// changes fn makes are what writers see next.
	Commit(fn func(claimed func(chunkstore.ID) bool) error) error
}

// NoClaims is the Claims of a process with no writers, such as dedupctl gc
// holding the repository alone.
type NoClaims struct{}

func (NoClaims) Begin() func() { return func() {} }
func (NoClaims) Commit(fn func(func(chunkstore.ID) bool) error) error {
	return fn(func(chunkstore.ID) bool { return false })
}

// Collector plans and runs collections on one repository.
type Collector struct {
	Store  *chunkstore.Store
	Index  *index.DB
	Claims Claims
	Options
	// LeaseTTL is how long leases and locks live unrenewed; default
	// protocol.DefaultLeaseTTL. IMPORTANT: every process of a repository must use
	// the same.
	LeaseTTL time.Duration
	// Sync brings the index up to date with every object of the
	// repository (a full sync). Plan calls it once it holds the lock.
	Sync func(context.Context) error
}

// PackAction is what a plan does with one pack.
type PackAction struct {
	Pack       chunkstore.ID
	Size       int64 // bytes of the pack
	LiveChunks int
	DeadChunks int
	LiveBytes  int64 // stored bytes of its live chunks
}

// Plan is the outcome of marking: what a collection would delete and
// rewrite. Its memory is the mark set: about 20 bytes per live chunk.
// A pack's dead bytes are its bytes less its live chunks and its trailer.
type Plan struct {
	Delete []PackAction // packs with no live chunk
	// Repack lists packs whose live chunks are copied into new packs, as
	// many old ones into each as fill it: packs with at least
	// RepackThreshold dead, and packs under a quarter of the pack size
	// (sealed early by small files) when there are two or more.
	Repack  []PackAction
	Orphans []chunkstore.ObjectInfo // packs the index does not know, older than GracePeriod
	// Partials are writes that never completed (temporary files, incomplete
	// multipart uploads of processes that died), older than GracePeriod
	// and PartialMinAge.
	Partials []chunkstore.ObjectInfo
	Packs    int // packs in the index
	Live     int // live chunks
	Dead     int // dead chunks
	// Delete, Repack and Orphans are condemned (phase 1). FreedBytes is
	// what the run frees: the packs swept (phase 2), partial writes, and,
	// if SweepNow, what phase 1 frees (deleted packs and orphans whole,
	// the dead bytes of repacked packs).
	FreedBytes int64

	Sweep          []PackAction // condemned packs deleted now (phase 2)
	Spared         int          // condemned packs spared: they hold live chunks
	Waiting        int          // condemnations not yet due
	CondemnedBytes int64        // what phase 1 frees once its condemnation is carried out, if not SweepNow
	// SweepNow says no process held a lease when the plan was made: what
	// phase 1 condemns, the same run sweeps if still none does once the
	// condemnation is written.
	SweepNow bool

	live liveSet
	// deltasOf maps bases to their deltas, as the index had them when the
	// plan began to execute.
	deltasOf map[chunkstore.ID][]chunkstore.ID
	end      func() error
	due      []protocol.Condemnation // carried out by this plan
	swept    []protocol.Condemnation // carried out before
	unrec    []protocol.Condemnation // whose leases were never recorded
	condemn  []chunkstore.ID         // packs Execute condemns
	heldBy   *protocol.Heartbeat     // the collection lock
	now      time.Time               // server time the lock was taken
}

// liveSet holds the first 8 bytes of every live chunk ID. Two IDs sharing
// them (odds about n²/2⁶⁵) make a dead chunk look live for one more
// collection, never the reverse.
type liveSet map[uint64]struct{}

func key(id chunkstore.ID) uint64 { return binary.LittleEndian.Uint64(id[:8]) }

func (s liveSet) has(id chunkstore.ID) bool { _, ok := s[key(id)]; return ok }

// Plan marks and plans. Claims are recorded from its start until the plan is
// executed or closed.
//
// IMPORTANT: call Execute or Close on the returned plan.
func (c *Collector) Plan(ctx context.Context) (*Plan, error) {
	opts := c.Options.withDefaults()
	h, now, err := protocol.Lock(ctx, c.Store.Backend(), c.ttl())
	if err != nil {
		return nil, err
	}
	p := &Plan{live: liveSet{}, now: now, heldBy: h}
	endClaims := c.Claims.Begin()
	p.end = func() error {
		endClaims()
		if err := p.heldBy.Stop(context.Background()); err != nil {
			return fmt.Errorf("gc: release the lock (the next collection waits until it expires): %w", err)
		}
		return nil
	}
	if err := c.plan(ctx, p, opts); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

func (c *Collector) plan(ctx context.Context, p *Plan, opts Options) error {
	// Which condemnations are due is settled before the index is synced,
	// so that the manifests of every lease judged gone are among those the
	// sync reads.
	condemned, err := c.dueCondemnations(ctx, p, opts)
	if err != nil {
		return err
	}
	if err := c.Sync(ctx); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	if err := c.refuseDamaged(); err != nil {
		return err
	}
	err = c.Index.ForEachListRef(func(r index.Ref) error {
		p.live[key(r.ID)] = struct{}{}
		return ctx.Err()
	})
	if err == nil { // a live delta keeps its bases alive
		err = c.Index.ForEachDelta(func(id chunkstore.ID, bases []chunkstore.ID) error {
			if p.live.has(id) {
				for _, b := range bases {
					p.live[key(b)] = struct{}{}
				}
			}
			return ctx.Err()
		})
	}
	if err != nil {
		return fmt.Errorf("gc: mark: %w", err)
	}
	packs, err := c.Index.Packs()
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	actions := make(map[chunkstore.ID]*PackAction, len(packs))
	trailers := map[chunkstore.ID]int64{}
	for _, pk := range packs {
		actions[pk.ID] = &PackAction{Pack: pk.ID, Size: pk.Size}
		trailers[pk.ID] = chunkstore.PackOverhead(pk.Chunks, c.Store.Cipher())
	}
	p.Packs = len(packs)
	err = c.Index.ForEachChunk(func(id chunkstore.ID, loc chunkstore.Location) error {
		a := actions[loc.Pack]
		if a == nil {
			return nil // indexed after Packs was read: new, not this plan's business
		}
		if p.live.has(id) {
			a.LiveChunks++
			a.LiveBytes += int64(loc.Length)
			p.Live++
		} else {
			a.DeadChunks++
			p.Dead++
		}
		return ctx.Err()
	})
	if err != nil {
		return fmt.Errorf("gc: sweep: %w", err)
	}
	objects := map[chunkstore.ID]chunkstore.ObjectInfo{}
	err = c.Store.Backend().List(ctx, chunkstore.PackPrefix, "", func(o chunkstore.ObjectInfo) error {
		if id, err := chunkstore.ParsePackName(o.Name); err == nil {
			objects[id] = o
		} // else not ours to judge
		return nil
	})
	if err != nil {
		return fmt.Errorf("gc: list packs: %w", err)
	}
	cutoff := p.now.Add(-opts.GracePeriod)
	// Condemned packs are phase 2's; while leases are held, young ones may
	// be another process's, for a backup whose manifest is not written yet.
	c.planSweep(p, actions, objects)
	for _, a := range p.Sweep {
		condemned[a.Pack] = true
	}
	for id, o := range objects {
		if condemned[id] || !p.SweepNow && o.ModTime.After(cutoff) {
			delete(actions, id)
		}
	}
	for id := range condemned {
		delete(objects, id)
	}
	var small []PackAction
	packSize := int64(c.Store.Config().PackSize)
	for _, a := range actions {
		dead := a.Size - a.LiveBytes - trailers[a.Pack]
		switch {
		case a.LiveChunks == 0:
			p.Delete = append(p.Delete, *a)
			p.FreedBytes += a.Size
		case dead > 0 && float64(dead) >= opts.RepackThreshold*float64(a.Size):
			p.Repack = append(p.Repack, *a)
		case a.Size < packSize/4:
			small = append(small, *a)
		}
	}
	// Packs sealed early by small files are merged when there are two, or
	// when anything is repacked at all: a lone small pack left out would
	// meet the last group's new pack, small too, in the next collection.
	if len(small) >= 2 || len(small) == 1 && len(p.Repack) > 0 {
		p.Repack = append(p.Repack, small...)
	}
	byID := func(a, b PackAction) int { return slices.Compare(a.Pack[:], b.Pack[:]) }
	slices.SortFunc(p.Delete, byID)
	slices.SortFunc(p.Repack, byID)
	for _, g := range repackGroups(p.Repack, packSize) {
		var live, chunks int64
		for _, a := range g {
			p.FreedBytes += a.Size
			live += a.LiveBytes
			chunks += int64(a.LiveChunks)
		}
		p.FreedBytes -= live + chunkstore.PackOverhead(int(chunks), c.Store.Cipher())
	}

	for id, o := range objects {
		if _, known := trailers[id]; !known && o.ModTime.Before(cutoff) {
			p.Orphans = append(p.Orphans, o)
			p.FreedBytes += o.Size
		}
	}
	slices.SortFunc(p.Orphans, func(a, b chunkstore.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	partialCutoff := p.now.Add(-max(opts.GracePeriod, PartialMinAge))
	err = c.Store.Backend().ListPartial(ctx, func(o chunkstore.ObjectInfo) error {
		if o.ModTime.Before(partialCutoff) {
			p.Partials = append(p.Partials, o)
			p.FreedBytes += o.Size
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	slices.SortFunc(p.Partials, func(a, b chunkstore.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	p.CondemnedBytes = p.FreedBytes
	p.FreedBytes = 0
	for _, a := range p.Sweep {
		p.FreedBytes += a.Size
	}
	for _, o := range p.Partials { // deleted now, not condemned
		p.CondemnedBytes -= o.Size
		p.FreedBytes += o.Size
	}
	if p.SweepNow {
		p.FreedBytes += p.CondemnedBytes
		p.CondemnedBytes = 0
	}
	return nil
}

// PartialMinAge is the least age of a partial write that a collection
// removes, whatever the grace period, so that no upload in progress is
// ever cut off.
const PartialMinAge = time.Hour

// ErrDamaged is wrapped by the error of a collection that found damaged
// objects in the repository: a plan refuses to delete anything while the
// index records any (see index.DB.Damaged), and Execute skips, records and
// reports the packs it finds damaged and collects the rest.
var ErrDamaged = errors.New("gc: the repository has damaged objects")

// refuseDamaged fails while the index records damaged objects: nothing is
// provably unreferenced while a manifest cannot be read, and a damaged
// pack is the repair's to deal with.
func (c *Collector) refuseDamaged() error {
	damaged, err := c.Index.Damaged()
	if err != nil || len(damaged) == 0 {
		return err
	}
	names := slices.Sorted(maps.Keys(damaged))
	return fmt.Errorf("%w: %d, such as %s (%s); nothing is deleted until they are repaired (dedupctl repair)", ErrDamaged, len(names), names[0], damaged[names[0]])
}

// Close ends the plan without carrying it out: it stops recording claims
// and releases the collection lock.
func (p *Plan) Close() error {
	if p.end == nil {
		return nil
	}
	err := p.end()
	p.end = nil
	return err
}

// Result is what Execute did.
type Result struct {
	Deleted    int   // packs deleted whole (orphans included)
	Repacked   int   // packs rewritten
	Skipped    int   // packs left alone because a writer claimed one of their chunks meanwhile
	FreedBytes int64 // bytes removed from the backend, less bytes written
	// Deleted counts the packs swept, Repacked the packs copied and
	// condemned, and Condemned all packs condemned.
	Condemned int
	// Partials counts the partial writes removed.
	Partials int
	// Damaged names the packs left alone because they turned out to be
	// damaged; they are recorded in the index, and Execute's error wraps
	// ErrDamaged.
	Damaged []string
}

// ErrClosed is returned by Execute on a plan already executed or closed.
var ErrClosed = errors.New("gc: plan already executed or closed")

// Execute carries a plan out: phase 2 (the due condemnations swept), then
// phase 1, pack by pack, each in the order new pack durable, index, old
// pack condemned, then the condemnation written; and if the plan says
// SweepNow, phase 2 again for that condemnation. A crash between any two
// steps leaves at most a pack the index does not know, which a later
// collection deletes once it is older than the grace period. It closes the
// plan.
func (c *Collector) Execute(ctx context.Context, p *Plan) (res Result, err error) {
	if p.end == nil {
		return Result{}, ErrClosed
	}
	defer func() {
		if cerr := p.Close(); err == nil {
			err = cerr
		}
	}()
	return c.execute(ctx, p)
}

func (c *Collector) execute(ctx context.Context, p *Plan) (res Result, err error) {
	defer func() {
		if err == nil && len(res.Damaged) > 0 {
			err = fmt.Errorf("%w: skipped %d damaged packs, such as %s (dedupctl check --read-data names what they affect)", ErrDamaged, len(res.Damaged), res.Damaged[0])
		}
	}()
	if err := c.sweep(ctx, p, &res); err != nil {
		return res, err
	}
	if p.deltasOf, err = c.deltasOf(); err != nil {
		return res, err
	}
	for _, a := range p.Delete {
		if err := c.retire(ctx, p, []PackAction{a}, false, &res); err != nil {
			return res, err
		}
	}
	for _, g := range repackGroups(p.Repack, int64(c.Store.Config().PackSize)) {
		if err := c.retire(ctx, p, g, true, &res); err != nil {
			return res, err
		}
	}
	for _, o := range p.Orphans {
		id, _ := chunkstore.ParsePackName(o.Name)
		p.condemn = append(p.condemn, id)
		res.Condemned++
	}
	for _, o := range p.Partials {
		if err := c.Store.Backend().DeletePartial(ctx, o.Name); err != nil {
			return res, fmt.Errorf("gc: %w", err)
		}
		res.Partials++
		res.FreedBytes += o.Size
	}
	sweepNow, err := c.condemn(ctx, p)
	if err != nil || !sweepNow {
		return res, err
	}
	// No lease was alive when the condemnation was written: phase 2 is due
	// at once, with its own sync and mark.
	now := &Plan{live: liveSet{}, now: p.now, heldBy: p.heldBy}
	if err := c.plan(ctx, now, c.Options.withDefaults()); err != nil {
		return res, err
	}
	if err := c.sweep(ctx, now, &res); err != nil {
		return res, err
	}
	return res, protocol.SyncCondemned(ctx, c.Store.Backend(), c.Index, false)
}

// repackGroups splits the packs to repack, in order, into groups whose live
// bytes fill one new pack each.
func repackGroups(packs []PackAction, packSize int64) [][]PackAction {
	var groups [][]PackAction
	var cur []PackAction
	var bytes int64
	for _, a := range packs {
		cur = append(cur, a)
		if bytes += a.LiveBytes; bytes >= packSize {
			groups = append(groups, cur)
			cur, bytes = nil, 0
		}
	}
	if len(cur) > 0 {
		groups = append(groups, cur)
	}
	return groups
}

// retire removes the packs of a group from the repository, first copying
// their live chunks into one new pack when repack is set. Each old pack is
// retired on its own: index repointed, then the pack deleted.
func (c *Collector) retire(ctx context.Context, p *Plan, group []PackAction, repack bool, res *Result) error {
	type old struct {
		PackAction
		ids []chunkstore.ID
	}
	var (
		olds    []old
		copied  = map[chunkstore.ID]bool{}
		builder *chunkstore.PackBuilder
		scratch []byte
		plain   []byte
	)
	if repack {
		var live int64
		var chunks int
		for _, a := range group {
			live += a.LiveBytes
			chunks += a.LiveChunks
		}
		builder = chunkstore.NewPackBuilder(int(live + chunkstore.PackOverhead(chunks, c.Store.Cipher())))
	}
	for _, a := range group {
		entries, err := chunkstore.ReadPackTrailer(ctx, c.Store.Backend(), chunkstore.PackName(a.Pack), a.Size, c.Store.Cipher())
		o := old{PackAction: a, ids: make([]chunkstore.ID, len(entries))}
		for i, e := range entries {
			o.ids[i] = e.ID
			loc := chunkstore.Location{Pack: a.Pack, Blob: e.Blob}
			if err != nil || !repack || !p.live.has(e.ID) || !c.indexedAt(e.ID, loc) || copied[e.ID] {
				continue
			}
			var enc chunkstore.EncodedChunk
			if enc, err = c.Store.CopyChunk(ctx, e.ID, loc, scratch, plain); err == nil {
				builder.Add(enc)
				copied[e.ID] = true
				scratch = enc.Data
			}
		}
		if err != nil {
			if skipped, err := c.skipDamaged(a.Pack, err, res); !skipped {
				return fmt.Errorf("gc: %s: %w", a.Pack, err)
			}
			continue
		}
		olds = append(olds, o)
	}
	var (
		newPack *index.Pack
		moved   []chunkstore.PackEntry
	)
	if builder != nil && builder.Count() > 0 {
		n := builder.Count()
		id, entries, size, err := c.Store.WritePack(ctx, builder)
		if err != nil {
			return fmt.Errorf("gc: repack: %w", err)
		}
		newPack, moved = &index.Pack{ID: id, Size: size, Chunks: n, Created: time.Now()}, entries
		res.FreedBytes -= size
	}
	for _, o := range olds {
		skipped := false
		err := c.Claims.Commit(func(claimed func(chunkstore.ID) bool) error {
			for _, id := range o.ids {
				// A base stays while a delta of it is claimed.
				if !copied[id] && (claimed(id) || slices.ContainsFunc(p.deltasOf[id], claimed)) {
					// Left as it is; copies of its chunks in the new
					// pack stay unused until a later collection.
					skipped = true
					return nil
				}
			}
			return c.dispose(p, o.Pack, newPack, moved)
		})
		switch {
		case err != nil:
			return err
		case skipped:
			res.Skipped++
		default:
			res.Condemned++
			if repack {
				res.Repacked++
			}
		}
	}
	return nil
}

// deltasOf maps each base to the deltas the index has of it.
func (c *Collector) deltasOf() (map[chunkstore.ID][]chunkstore.ID, error) {
	out := map[chunkstore.ID][]chunkstore.ID{}
	err := c.Index.ForEachDelta(func(id chunkstore.ID, bases []chunkstore.ID) error {
		for _, b := range bases {
			out[b] = append(out[b], id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	return out, nil
}

// skipDamaged records pack as damaged and counts it when err reports
// damage, so that the collection leaves it alone and goes on; any other
// error is returned.
func (c *Collector) skipDamaged(pack chunkstore.ID, err error, res *Result) (bool, error) {
	if !errors.Is(err, chunkstore.ErrCorrupt) && !errors.Is(err, chunkstore.ErrUnsupportedVersion) {
		return false, err
	}
	name := chunkstore.PackName(pack)
	if serr := c.Index.SetDamaged(name, err.Error()); serr != nil {
		return false, serr
	}
	res.Damaged = append(res.Damaged, name)
	return true, nil
}

// dispose retires pack old once its live chunks are in newPack, if any:
// newPack is indexed, and old condemned.
func (c *Collector) dispose(p *Plan, old chunkstore.ID, newPack *index.Pack, moved []chunkstore.PackEntry) error {
	if newPack != nil {
		if err := c.Index.AddPack(*newPack, moved); err != nil {
			return fmt.Errorf("gc: index: %w", err)
		}
	}
	p.condemn = append(p.condemn, old)
	return nil
}

// indexedAt reports whether the index locates chunk id at loc: a pack can
// hold a second copy of a chunk that the index finds elsewhere.
func (c *Collector) indexedAt(id chunkstore.ID, loc chunkstore.Location) bool {
	got, found, err := c.Index.Lookup(id)
	return err == nil && found && got == loc
}
