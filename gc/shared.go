package gc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
)

// The protocol of a repository that many processes, on one host or many,
// write into at once, each with its own index, which is a cache of the
// objects. Another process's writers may deduplicate against any chunk
// their index holds, and a collection cannot see what they hold, so
// nothing is deleted before they could have heard of it. The protocol:
//
//   - Every agent holds a lease object, leases/<random>, while it has a
//     backup running, and rewrites it every LeaseTTL/4. Just after writing a
//     new lease it brings its index up to date, condemned packs included
//     (later syncs only make it fresher). It never deduplicates against a
//     chunk in a condemned pack. It refuses
//     to write a manifest when its lease was last rewritten LeaseTTL/2 ago
//     or more, and once a rewrite comes that late the lease is lost for good.
//   - A collection holds the exclusive lock object locks/<random>, written,
//     then checked against every other lock younger than LeaseTTL.
//   - Phase 1 (condemn): a collection marks, copies the live chunks of the
//     packs it would rewrite into new packs, then writes a condemnation
//     object, condemned/<random>, listing the packs to delete; then it
//     lists the leases and records their names in the condemnation.
//   - Phase 2 (sweep), in a later collection: a condemnation is carried
//     out once it is older than the grace period and none of the leases it
//     records is alive (rewritten within LeaseTTL, by the server's clock).
//     Which are due is settled first; then the collection syncs its index,
//     marks again, deletes the condemned packs that hold no live chunk, and
//     spares the rest. It rewrites the condemnation as swept, listing only
//     the packs it deleted, and a collection deletes it once it is
//     CondemnedKeep old: until then it tells every agent's sync which packs
//     are gone.
//   - An agent's index may list only the packs written since its last sync
//     (see chunkstore.PacksAfter) if that sync began less than MaxSyncGap
//     ago; otherwise it lists every pack. Every sync lists every
//     condemnation, swept or not, and a sync that did not list every pack
//     keeps the packs it knew condemned as condemned.
//
// Why it is safe. A writer can deduplicate against a chunk of a condemned
// pack P only if its index did not know P was condemned, that is, if it
// synced before the condemnation was written, under a lease written before
// that too. Such a lease was listed after the condemnation was written, so
// it is recorded; phase 2 waits until it is gone or expired. A writer
// deletes its lease only after its manifests are stored, and stops
// writing manifests before its lease can expire, so by phase 2 every
// manifest that could refer to P is stored and the second mark sees it.
// Pack names are random, so a pack can never be deleted under a writer
// that stored the same bytes again. A sync that lists only new packs
// learns of every deleted pack from its condemnation: one written after
// the previous sync began is still listed, since MaxSyncGap is shorter
// than CondemnedKeep, and one written before was listed then. Clocks: the lease and condemnation ages
// are measured by the server's object times only; the agents' clocks only
// time their own lease rewrites.

// Object name prefixes of the protocol.
const (
	LeasePrefix     = "leases/"
	LockPrefix      = "locks/"
	CondemnedPrefix = "condemned/"
)

// DefaultLeaseTTL is how long a lease or lock lives without being rewritten.
const DefaultLeaseTTL = 10 * time.Minute

// RemovedKeep is how long the record of a removed backup
// (index.RemovedName) is kept, by the server's clock. A process whose
// index was last synced more than half of it ago forgets backups whose
// manifests are gone without asking for the record.
const RemovedKeep = 30 * 24 * time.Hour

// CondemnedKeep is how long a swept condemnation stays listed, by the
// server's clock, for a repository whose leases live ttl.
func CondemnedKeep(ttl time.Duration) time.Duration { return 6 * ttl }

// MaxSyncGap is the longest time, by an agent's own clock, from the start
// of one sync of its index to the start of the next for the next to list
// only the packs written since: CondemnedKeep less a margin for clocks
// that run at different rates.
func MaxSyncGap(ttl time.Duration) time.Duration { return 4 * ttl }

var (
	// ErrLocked is returned when another agent's collection holds the lock.
	ErrLocked = errors.New("gc: another collection is running on the repository")
	// ErrLeaseLost is returned by Heartbeat.Valid once the heartbeat could
	// not be rewritten in time: the agent must not rely on it any more.
	ErrLeaseLost = errors.New("gc: lease lost: it was not renewed in time")
)

// Heartbeat is an object an agent rewrites every TTL/4 while it works, so
// others can tell from the server's times whether it still does: a lease
// while backups run, the lock while a collection does.
type Heartbeat struct {
	b    chunkstore.Backend
	name string
	ttl  time.Duration

	mu   sync.Mutex
	last time.Time // when the last successful write was sent (monotonic)
	lost error

	stop context.CancelFunc
	done chan struct{}
}

// StartHeartbeat writes a new object under prefix and keeps rewriting it
// until Stop.
func StartHeartbeat(ctx context.Context, b chunkstore.Backend, prefix string, ttl time.Duration) (*Heartbeat, error) {
	var r [12]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, err
	}
	h := &Heartbeat{b: b, name: prefix + hex.EncodeToString(r[:]), ttl: ttl, done: make(chan struct{})}
	if err := h.write(ctx); err != nil {
		return nil, err
	}
	bg, stop := context.WithCancel(context.Background())
	h.stop = stop
	go h.run(bg)
	return h, nil
}

// Name is the heartbeat's object name.
func (h *Heartbeat) Name() string { return h.name }

// write rewrites the object. A write sent TTL/2 or more after the last
// good one, or taking TTL/4 or more, loses the heartbeat for good: others
// may have judged it dead meanwhile. Either way, a write that counts
// reached the server before anyone could judge it dead.
func (h *Heartbeat) write(ctx context.Context) error {
	host, _ := os.Hostname()
	body := fmt.Sprintf(`{"host":%q,"pid":%d}`, host, os.Getpid())
	sent := time.Now()
	if err := h.Valid(); err != nil {
		return err
	}
	if err := h.b.Put(ctx, h.name, strings.NewReader(body)); err != nil {
		return fmt.Errorf("gc: write %s: %w", h.name, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(sent) >= h.ttl/4 {
		h.lost = ErrLeaseLost
	}
	if h.lost != nil {
		return fmt.Errorf("%s: %w", h.name, h.lost)
	}
	h.last = sent
	return nil
}

func (h *Heartbeat) run(ctx context.Context) {
	defer close(h.done)
	t := time.NewTicker(h.ttl / 4)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if errors.Is(h.write(ctx), ErrLeaseLost) {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// Valid returns nil while the object was rewritten less than TTL/2 ago, and
// an error wrapping ErrLeaseLost otherwise.
func (h *Heartbeat) Valid() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lost == nil && !h.last.IsZero() && time.Since(h.last) >= h.ttl/2 {
		h.lost = ErrLeaseLost
	}
	if h.lost != nil {
		return fmt.Errorf("%s: %w", h.name, h.lost)
	}
	return nil
}

// Stop ends the rewrites and deletes the object.
func (h *Heartbeat) Stop(ctx context.Context) error {
	h.stop()
	<-h.done
	return h.b.Delete(ctx, h.name)
}

// Leases returns the lease objects of the repository by name, with the
// server's time of their last rewrite.
func Leases(ctx context.Context, b chunkstore.Backend) (map[string]time.Time, error) {
	return listHeartbeats(ctx, b, LeasePrefix)
}

// listHeartbeats returns the objects under prefix by name.
func listHeartbeats(ctx context.Context, b chunkstore.Backend, prefix string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := b.List(ctx, prefix, "", func(o chunkstore.ObjectInfo) error {
		out[o.Name] = o.ModTime
		return nil
	})
	return out, err
}

// lock takes the collection lock: it writes a lock object, then gives up
// with ErrLocked if any other lock is alive. Two agents racing both give
// up; neither can think it holds the lock alone. It returns the server's
// time at which the lock was written.
func lock(ctx context.Context, b chunkstore.Backend, ttl time.Duration) (*Heartbeat, time.Time, error) {
	h, err := StartHeartbeat(ctx, b, LockPrefix, ttl)
	if err != nil {
		return nil, time.Time{}, err
	}
	locks, err := listHeartbeats(ctx, b, LockPrefix)
	now, ok := locks[h.name]
	if err == nil && !ok {
		err = fmt.Errorf("gc: lock %s not listed after it was written", h.name)
	}
	for name, t := range locks {
		if err != nil {
			break
		}
		if name != h.name && now.Sub(t) < ttl {
			err = fmt.Errorf("%w (lock %s, written %s before ours)", ErrLocked, name, now.Sub(t).Round(time.Second))
		}
	}
	if err != nil {
		h.Stop(context.WithoutCancel(ctx))
		return nil, time.Time{}, err
	}
	return h, now, nil
}

// Condemnation is a phase-1 decision: packs to delete once no agent can
// depend on them.
type Condemnation struct {
	Name  string          `json:"-"` // object name
	Time  time.Time       `json:"-"` // when the object was last written, by the server's clock
	Packs []chunkstore.ID `json:"packs"`
	// Leases alive when the condemnation was written; nil until recorded.
	Leases []string `json:"leases"`
	// Swept says phase 2 carried the condemnation out: Packs are deleted.
	Swept bool `json:"swept,omitempty"`
}

// Condemnations reads every condemnation in the repository.
func Condemnations(ctx context.Context, b chunkstore.Backend) ([]Condemnation, error) {
	var out []Condemnation
	err := b.List(ctx, CondemnedPrefix, "", func(o chunkstore.ObjectInfo) error {
		out = append(out, Condemnation{Name: o.Name, Time: o.ModTime})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gc: list condemnations: %w", err)
	}
	read := out[:0]
	for _, c := range out {
		rc, err := b.Get(ctx, c.Name, 0, -1)
		var data []byte
		if err == nil {
			data, err = io.ReadAll(rc)
			rc.Close()
		}
		if errors.Is(err, chunkstore.ErrNotExist) {
			continue // swept since it was listed
		}
		if err != nil {
			return nil, fmt.Errorf("gc: read condemnation: %w", err)
		}
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("gc: read condemnation %s: %w: %w", c.Name, chunkstore.ErrCorrupt, err)
		}
		read = append(read, c)
	}
	return read, nil
}

func putCondemnation(ctx context.Context, b chunkstore.Backend, c Condemnation) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := b.Put(ctx, c.Name, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("gc: write condemnation: %w", err)
	}
	return nil
}

// RecordDeleted records packs about to be deleted outside a collection (a
// repair moving damaged packs aside) as a swept condemnation, so that every
// process's sync forgets them as it forgets what a sweep deleted.
// IMPORTANT: call it before deleting them.
func RecordDeleted(ctx context.Context, b chunkstore.Backend, packs []chunkstore.ID) error {
	var r [12]byte
	if _, err := rand.Read(r[:]); err != nil {
		return err
	}
	return putCondemnation(ctx, b, Condemnation{Name: CondemnedPrefix + hex.EncodeToString(r[:]), Packs: packs, Leases: []string{}, Swept: true})
}

// SyncCondemned sets the index's condemned packs to those of the
// repository's condemnations and forgets the packs of swept ones. With
// add, as a sync that did not list every pack must, the packs it holds
// condemned stay so (see index.DB.SetCondemned).
func SyncCondemned(ctx context.Context, b chunkstore.Backend, idx *index.DB, add bool) error {
	cs, err := Condemnations(ctx, b)
	if err != nil {
		return err
	}
	var packs, swept []chunkstore.ID
	for _, c := range cs {
		if !c.Swept {
			packs = append(packs, c.Packs...)
			continue
		}
		for _, id := range c.Packs { // forgotten at an earlier sync, mostly
			if known, err := idx.HasPack(id); err != nil {
				return err
			} else if known {
				swept = append(swept, id)
			}
		}
	}
	if err := idx.DropPacks(swept); err != nil {
		return err
	}
	return idx.SetCondemned(packs, add)
}

func (c *Collector) ttl() time.Duration {
	if c.LeaseTTL <= 0 {
		return DefaultLeaseTTL
	}
	return c.LeaseTTL
}

// dueCondemnations reads the condemnations and picks those phase 2 carries
// out now: with every lease they record gone or expired, and older than
// the grace period if they record any. It sets p.SweepNow if no lease is
// alive, and returns every condemned pack.
func (c *Collector) dueCondemnations(ctx context.Context, p *Plan, opts Options) (map[chunkstore.ID]bool, error) {
	b := c.Store.Backend()
	conds, err := Condemnations(ctx, b)
	if err != nil {
		return nil, err
	}
	leases, err := listHeartbeats(ctx, b, LeasePrefix)
	if err != nil {
		return nil, fmt.Errorf("gc: list leases: %w", err)
	}
	p.SweepNow = len(c.alive(p, leases)) == 0
	condemned := map[chunkstore.ID]bool{}
	for _, cd := range conds {
		for _, id := range cd.Packs {
			condemned[id] = true
		}
		if cd.Swept {
			p.swept = append(p.swept, cd)
			continue
		}
		due := cd.Leases != nil && (len(cd.Leases) == 0 || p.now.Sub(cd.Time) >= opts.GracePeriod)
		for _, name := range cd.Leases {
			if t, ok := leases[name]; ok && p.now.Sub(t) < c.ttl() {
				due = false
			}
		}
		switch {
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
			err = putCondemnation(ctx, b, cd)
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
	markers, err := listHeartbeats(ctx, b, index.RunningPrefix)
	if err != nil || len(markers) == 0 {
		return err
	}
	leases, err := Leases(ctx, b)
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
// manifest any more (see Heartbeat.Valid).
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
// expired, swept condemnations past CondemnedKeep and records of removed
// backups past RemovedKeep, and brings the
// index's condemned packs up to date. It reports whether it wrote a
// condemnation and found no lease alive: then phase 2 is due at once.
func (c *Collector) condemn(ctx context.Context, p *Plan) (sweepNow bool, err error) {
	b := c.Store.Backend()
	var todo []Condemnation
	if len(p.condemn) > 0 {
		var r [12]byte
		if _, err := rand.Read(r[:]); err != nil {
			return false, err
		}
		cd := Condemnation{Name: CondemnedPrefix + hex.EncodeToString(r[:]), Packs: p.condemn}
		if err := p.heldBy.Valid(); err != nil {
			return false, err
		}
		if err := putCondemnation(ctx, b, cd); err != nil {
			return false, err
		}
		todo = append(todo, cd)
	}
	todo = append(todo, p.unrec...)
	if len(todo) > 0 {
		leases, err := listHeartbeats(ctx, b, LeasePrefix)
		if err != nil {
			return false, fmt.Errorf("gc: list leases: %w", err)
		}
		names := c.alive(p, leases)
		for _, cd := range todo {
			cd.Leases = names
			if err := putCondemnation(ctx, b, cd); err != nil {
				return false, err
			}
		}
		sweepNow = len(p.condemn) > 0 && len(names) == 0
	}
	for _, prefix := range []string{LeasePrefix, LockPrefix} {
		objs, err := listHeartbeats(ctx, b, prefix)
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
		if p.now.Sub(cd.Time) >= CondemnedKeep(c.ttl()) {
			if err := b.Delete(ctx, cd.Name); err != nil {
				return false, err
			}
		}
	}
	if err := c.deleteDeadMarkers(ctx, p); err != nil {
		return false, err
	}
	removed, err := listHeartbeats(ctx, b, index.RemovedPrefix)
	if err != nil {
		return false, err
	}
	for name, t := range removed {
		if p.now.Sub(t) >= RemovedKeep {
			if err := b.Delete(ctx, name); err != nil {
				return false, err
			}
		}
	}
	return sweepNow, SyncCondemned(ctx, b, c.Index, false)
}
