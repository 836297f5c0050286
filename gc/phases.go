package gc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/protocol"
)

// The two phases of a collection, by the protocol of package protocol.

func (c *Collector) ttl() time.Duration {
	if c.LeaseTTL <= 0 {
		return protocol.DefaultLeaseTTL
	}
	return c.LeaseTTL
}

// dueCondemnations reads the condemnations and picks those phase 2 carries
// out now: with every lease they record gone or expired, and older than
// the grace period if they record any. It sets p.SweepNow if no lease is
// alive, and returns the packs that stay condemned whatever this plan does:
// those of the condemnations not due (and of the swept ones). A pack of a
// due condemnation is either swept now or spared, and a spared pack is
// free for this plan to repack.
func (c *Collector) dueCondemnations(ctx context.Context, p *Plan, opts Options) (map[chunkstore.ID]bool, error) {
	b := c.Store.Backend()
	conds, err := protocol.Condemnations(ctx, b)
	if err != nil {
		return nil, err
	}
	leases, err := protocol.List(ctx, b, protocol.LeasePrefix)
	if err != nil {
		return nil, fmt.Errorf("gc: list leases: %w", err)
	}
	p.SweepNow = len(c.alive(p, leases)) == 0
	condemned := map[chunkstore.ID]bool{}
	for _, cd := range conds {
		due := !cd.Swept && cd.Leases != nil && (len(cd.Leases) == 0 || p.now.Sub(cd.Time) >= opts.GracePeriod)
		for _, name := range cd.Leases {
			if t, ok := leases[name]; ok && p.now.Sub(t) < c.ttl() {
				due = false
			}
		}
		if !due {
			for _, id := range cd.Packs {
				condemned[id] = true
			}
		}
		switch {
		case cd.Swept:
			p.swept = append(p.swept, cd)
		case due:
			p.due = append(p.due, cd)
		case cd.Leases == nil:
			p.unrec = append(p.unrec, cd)
			p.Waiting++
		default:
			p.Waiting++
		}
	}
	return condemned, nil
}

// planSweep picks, from the due condemnations, the packs to delete: those
// holding no live chunk. The others are spared.
func (c *Collector) planSweep(p *Plan, actions map[chunkstore.ID]*PackAction, objects map[chunkstore.ID]chunkstore.ObjectInfo) {
	seen := map[chunkstore.ID]bool{}
	for _, cd := range p.due {
		for _, id := range cd.Packs {
			if seen[id] {
				continue
			}
			seen[id] = true
			a, o := actions[id], objects[id]
			switch {
			case a != nil && a.LiveChunks > 0:
				p.Spared++
			case a != nil:
				p.Sweep = append(p.Sweep, *a)
			case o.Name != "": // a pack the index cannot read
				p.Sweep = append(p.Sweep, PackAction{Pack: id, Size: o.Size})
			}
		}
	}
}

// sweep is phase 2: it deletes the packs of the due condemnations, then
// rewrites each as swept, listing only the packs deleted; spared packs are
// no longer condemned. A condemnation whose packs were all spared is
// deleted.
func (c *Collector) sweep(ctx context.Context, p *Plan, res *Result) error {
	if len(p.due) == 0 {
		return nil
	}
	if err := p.heldBy.Valid(); err != nil {
		return err
	}
	b := c.Store.Backend()
	ids := make([]chunkstore.ID, len(p.Sweep))
	for i, a := range p.Sweep {
		if err := b.Delete(ctx, chunkstore.PackName(a.Pack)); err != nil {
			return fmt.Errorf("gc: sweep: %w", err)
		}
		ids[i] = a.Pack
		res.Deleted++
		res.FreedBytes += a.Size
	}
	if err := c.Index.DropPacks(ids); err != nil {
		return fmt.Errorf("gc: sweep: %w", err)
	}
	deleted := map[chunkstore.ID]bool{}
	for _, id := range ids {
		deleted[id] = true
	}
	for _, cd := range p.due {
		cd.Packs = slices.DeleteFunc(cd.Packs, func(id chunkstore.ID) bool { return !deleted[id] })
		cd.Swept = true
		var err error
		if len(cd.Packs) == 0 {
			err = b.Delete(ctx, cd.Name)
		} else {
			err = protocol.PutCondemnation(ctx, b, cd)
		}
		if err != nil {
			return fmt.Errorf("gc: sweep: %w", err)
		}
	}
	return nil
}

// deleteDeadMarkers deletes the markers of backups in progress
// (index.RunningName) that processes which died left: older than twice the
// TTL, naming a lease that is gone.
func (c *Collector) deleteDeadMarkers(ctx context.Context, p *Plan) error {
	b := c.Store.Backend()
	markers, err := protocol.List(ctx, b, index.RunningPrefix)
	if err != nil || len(markers) == 0 {
		return err
	}
	leases, err := protocol.Leases(ctx, b)
	if err != nil {
		return err
	}
	for name, t := range markers {
		if p.now.Sub(t) <= 2*c.ttl() {
			continue
		}
		m, err := index.ReadRunning(ctx, b, name)
		if errors.Is(err, chunkstore.ErrNotExist) {
			continue
		}
		if _, alive := leases[m.Lease]; err == nil && alive {
			continue
		}
		if err := b.Delete(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// alive returns, sorted, the leases not expired when the plan's lock was
// taken: a lease expired by then belongs to a process that writes no
// manifest any more (see protocol.Heartbeat.Valid).
func (c *Collector) alive(p *Plan, leases map[string]time.Time) []string {
	names := []string{}
	for name, t := range leases {
		if p.now.Sub(t) < c.ttl() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// condemn is phase 1: it writes a condemnation of the packs the plan
// retired, then records in it (and in any condemnation a crash left
// without) the leases alive now. Then it removes leases and locks long
// expired, swept condemnations past protocol.CondemnedKeep and records of removed
// backups past protocol.RemovedKeep, and brings the
// index's condemned packs up to date. It reports whether it wrote a
// condemnation and found no lease alive: then phase 2 is due at once.
func (c *Collector) condemn(ctx context.Context, p *Plan) (sweepNow bool, err error) {
	b := c.Store.Backend()
	var todo []protocol.Condemnation
	if len(p.condemn) > 0 {
		var r [12]byte
		if _, err := rand.Read(r[:]); err != nil {
			return false, err
		}
		cd := protocol.Condemnation{Name: protocol.CondemnedPrefix + hex.EncodeToString(r[:]), Packs: p.condemn}
		if err := p.heldBy.Valid(); err != nil {
			return false, err
		}
		if err := protocol.PutCondemnation(ctx, b, cd); err != nil {
			return false, err
		}
		todo = append(todo, cd)
	}
	todo = append(todo, p.unrec...)
	if len(todo) > 0 {
		leases, err := protocol.List(ctx, b, protocol.LeasePrefix)
		if err != nil {
			return false, fmt.Errorf("gc: list leases: %w", err)
		}
		names := c.alive(p, leases)
		for _, cd := range todo {
			cd.Leases = names
			if err := protocol.PutCondemnation(ctx, b, cd); err != nil {
				return false, err
			}
		}
		sweepNow = len(p.condemn) > 0 && len(names) == 0
	}
	for _, prefix := range []string{protocol.LeasePrefix, protocol.LockPrefix} {
		objs, err := protocol.List(ctx, b, prefix)
		if err != nil {
			return false, err
		}
		for name, t := range objs {
			if p.now.Sub(t) > 2*c.ttl() {
				if err := b.Delete(ctx, name); err != nil {
					return false, err
				}
			}
		}
	}
	for _, cd := range p.swept {
		if p.now.Sub(cd.Time) >= protocol.CondemnedKeep(c.ttl()) {
			if err := b.Delete(ctx, cd.Name); err != nil {
				return false, err
			}
		}
	}
	if err := c.deleteDeadMarkers(ctx, p); err != nil {
		return false, err
	}
	removed, err := protocol.List(ctx, b, index.RemovedPrefix)
	if err != nil {
		return false, err
	}
	for name, t := range removed {
		if p.now.Sub(t) >= protocol.RemovedKeep {
			if err := b.Delete(ctx, name); err != nil {
				return false, err
			}
		}
	}
	return sweepNow, protocol.SyncCondemned(ctx, b, c.Index, false)
}
