package dedup

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
)

// Backups in progress are published as running/<dir>/<name>
// (index.RunningName): created at StartBackup only if absent, so that two
// processes never run backups of one name at once (the second manifest
// would replace the first), naming the lease of the process that runs it,
// and deleted once the backup ends or is aborted. Other processes list it
// as in progress. A marker whose lease is gone was left by a process that
// died: listings leave it out, StartBackup takes its name over once the
// lease has expired, and a collection deletes it.

// publishStart creates the marker of backup dir/name, run under lease l.
// It fails with storage.ErrExists if another process has ended a backup of
// that name (since this one's last sync) or runs one.
func (r *repo) publishStart(ctx context.Context, dir, name string, l *lease, started time.Time) error {
	b := r.store.Backend()
	if ended, err := objectExists(ctx, b, index.ManifestName(dir, name)); err != nil || ended {
		if err == nil {
			err = fmt.Errorf("dedup: start %s/%s: ended by another process: %w", dir, name, storage.ErrExists)
		}
		return err
	}
	obj := index.RunningName(dir, name)
	body, err := json.Marshal(index.Running{Lease: l.hb.Name(), Started: started})
	if err != nil {
		return err
	}
	err = b.Create(ctx, obj, bytes.NewReader(body))
	if !errors.Is(err, chunkstore.ErrExist) {
		return err
	}
	// Another process's, or one a process that died left.
	m, err := index.ReadRunning(ctx, b, obj)
	if err != nil && !errors.Is(err, chunkstore.ErrNotExist) {
		return err
	}
	if err == nil {
		leases, err := protocol.Leases(ctx, b)
		if err != nil {
			return err
		}
		// Now, by the server's clock: when our own lease was last written.
		now, ours := leases[l.hb.Name()]
		if then, alive := leases[m.Lease]; alive && (!ours || now.Sub(then) < r.opts.LeaseTTL) {
			return fmt.Errorf("dedup: start %s/%s: running in another process: %w", dir, name, storage.ErrExists)
		}
		if err := b.Delete(ctx, obj); err != nil {
			return err
		}
	}
	if err := b.Create(ctx, obj, bytes.NewReader(body)); errors.Is(err, chunkstore.ErrExist) {
		return fmt.Errorf("dedup: start %s/%s: started by another process at the same moment: %w", dir, name, storage.ErrExists)
	} else if err != nil {
		return err
	}
	return nil
}

// syncRunning lists the backups other processes have in progress: those
// with a marker whose lease exists, no manifest (listed), and no record in
// the index. It runs at the end of every sync, and reads only the markers
// it has not read before: a marker is written once (a new one, after a
// takeover, has a new time).
func (r *repo) syncRunning(ctx context.Context, manifests map[string]bool) error {
	b := r.store.Backend()
	var markers []chunkstore.ObjectInfo
	err := b.List(ctx, index.RunningPrefix, "", func(o chunkstore.ObjectInfo) error {
		markers = append(markers, o)
		return nil
	})
	if err != nil {
		return err
	}
	var foreign []index.Backup
	var leases map[string]time.Time
	read := map[markerKey]index.Running{}
	for _, o := range markers {
		dir, name, err := index.ParseRunningName(o.Name)
		if err != nil || manifests[index.ManifestName(dir, name)] {
			continue // not ours to judge; or ended
		}
		if _, found, err := r.idx.Backup(dir, name); err != nil {
			return err
		} else if found {
			continue // this process's
		}
		key := markerKey{o.Name, o.ModTime.UnixNano()}
		m, known := r.markers[key]
		if !known {
			m, err = index.ReadRunning(ctx, b, o.Name)
		}
		if errors.Is(err, chunkstore.ErrNotExist) {
			continue // ended or aborted since it was listed
		}
		if err != nil {
			r.opts.Logf("dedup: %s does not parse (%v): passed over", o.Name, err)
			continue
		}
		read[key] = m
		if leases == nil {
			if leases, err = protocol.Leases(ctx, b); err != nil {
				return err
			}
		}
		if _, alive := leases[m.Lease]; alive {
			foreign = append(foreign, index.Backup{Dir: dir, Name: name, State: index.InProgress, Started: m.Started})
		}
	}
	r.markers = read
	r.foreignMu.Lock()
	r.foreign = foreign
	r.foreignMu.Unlock()
	return nil
}

// markerKey tells one marker from another of the same name written later.
type markerKey struct {
	name    string
	written int64 // ns
}

// backups returns the backups in dir, or every backup with all, as the
// index holds them with those other processes have in progress, sorted by
// directory and name.
func (r *repo) backups(dir string, all bool) ([]index.Backup, error) {
	out, err := r.idx.Backups(dir, all)
	if err != nil {
		return nil, err
	}
	r.foreignMu.Lock()
	for _, b := range r.foreign {
		if all || b.Dir == dir {
			out = append(out, b)
		}
	}
	r.foreignMu.Unlock()
	slices.SortFunc(out, func(a, b index.Backup) int { return cmp.Or(cmp.Compare(a.Dir, b.Dir), cmp.Compare(a.Name, b.Name)) })
	return out, nil
}
