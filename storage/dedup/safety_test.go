package dedup_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/protocol"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// Tests that guard safety lines no other test breaks on: each fails, by
// data leaked or lost, when its line is removed.

// The chunk lists of writers a crashed process left open are dropped when
// the repository opens; without it their chunks stay live for ever.
func TestRecoveryDropsOpenLists(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	backup(t, s, "d", "x", map[string][]byte{"f": dataset.Random(150, 1<<20)})
	files, _, err := dedup.IndexOf(s).Files("d", "x")
	if err != nil {
		t.Fatal(err)
	}
	var refs []index.Ref
	dedup.IndexOf(s).ListRefs(files[0].List, func(r []index.Ref) error { refs = append(refs, r...); return nil })
	// A writer's segment stored and never committed, as a crash leaves it.
	if _, err := dedup.IndexOf(s).PutSegment(0, index.Segment{Refs: refs}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveBackup(ctx, "d", "x"); err != nil {
		t.Fatal(err)
	}
	s.Close() // reopened by the next call, as after the crash
	collect(t, s, everything)
	if st := stats(t, s); st.Packs != 0 || st.StoredBytes != 0 {
		t.Errorf("after removing the only backup and collecting: %d packs, %d bytes stored; a crashed writer's list kept them", st.Packs, st.StoredBytes)
	}
}

// failLeases fails every rewrite of a lease object while armed, as a
// network partition would.
type failLeases struct {
	chunkstore.Backend
	mu    sync.Mutex
	armed bool
}

func (b *failLeases) Put(ctx context.Context, name string, r io.Reader) error {
	b.mu.Lock()
	armed := b.armed
	b.mu.Unlock()
	if armed && strings.HasPrefix(name, protocol.LeasePrefix) {
		return errors.New("partitioned")
	}
	return b.Backend.Put(ctx, name, r)
}

// An agent whose lease was lost must not write a manifest: a collection
// may already have swept the packs its chunk references depend on.
func TestLostLeaseEndsNoBackup(t *testing.T) {
	objects := local.New(t.TempDir())
	fb := &failLeases{Backend: objects}
	ttl := 400 * time.Millisecond
	a := dedup.New(t.TempDir(), dedup.Options{Backend: fb, LeaseTTL: ttl})
	defer a.Close()
	bh, err := a.StartBackup(ctx, "d", "n")
	if err != nil {
		t.Fatal(err)
	}
	if err := addFiles(bh, map[string][]byte{"f": dataset.Random(151, 100<<10)}); err != nil {
		t.Fatal(err)
	}
	fb.mu.Lock()
	fb.armed = true
	fb.mu.Unlock()
	time.Sleep(2 * ttl)
	if err := bh.EndBackup(ctx); !errors.Is(err, storage.ErrAborted) {
		t.Fatalf("EndBackup with its lease lost: %v, want ErrAborted", err)
	}
	if exists, _ := objectExists(objects, "manifests/d/n"); exists {
		t.Error("a manifest was written after the lease was lost")
	}
}

func objectExists(b chunkstore.Backend, name string) (bool, error) {
	rc, err := b.Get(ctx, name, 0, -1)
	if errors.Is(err, chunkstore.ErrNotExist) {
		return false, nil
	}
	if err == nil {
		rc.Close()
	}
	return err == nil, err
}

// hookLeases runs hook once, at the first listing of leases after it is
// set, before the listing itself.
type hookLeases struct {
	chunkstore.Backend
	mu   sync.Mutex
	hook func()
}

func (b *hookLeases) List(ctx context.Context, prefix, after string, fn func(chunkstore.ObjectInfo) error) error {
	b.mu.Lock()
	hook := b.hook
	if prefix == protocol.LeasePrefix {
		b.hook = nil
	} else {
		hook = nil
	}
	b.mu.Unlock()
	if hook != nil {
		hook()
	}
	return b.Backend.List(ctx, prefix, after, fn)
}

// Phase 2 settles which condemnations are due before it syncs its index:
// a writer that ends its backup (manifest, then lease deleted) while the
// collector decides is then among the manifests the sync reads. Decided
// after the sync, the condemnation would be due without that manifest,
// and the sweep would delete packs the ended backup uses.
func TestSweepDecidesBeforeSyncing(t *testing.T) {
	objects := local.New(t.TempDir())
	hb := &hookLeases{Backend: objects}
	opts := smallPacks
	a := dedup.New(t.TempDir(), withBackend(opts, objects))
	b := dedup.New(t.TempDir(), withBackend(opts, hb))
	defer a.Close()
	defer b.Close()
	data := dataset.Random(152, 2<<20)
	backup(t, a, "d", "old", map[string][]byte{"f": data})
	// a starts a backup that deduplicates against old's packs.
	bh, err := a.StartBackup(ctx, "d", "new")
	if err != nil {
		t.Fatal(err)
	}
	if err := addFiles(bh, map[string][]byte{"f": data}); err != nil {
		t.Fatal(err)
	}
	// old is removed, and b condemns its packs, recording a's lease.
	if err := b.RemoveBackup(ctx, "d", "old"); err != nil {
		t.Fatal(err)
	}
	noGrace := gc.Options{GracePeriod: time.Nanosecond}
	if p, _ := collect(t, b, noGrace); len(p.Delete) == 0 {
		t.Fatal("phase 1 condemned nothing")
	}
	// a ends its backup while phase 2 lists the leases.
	hb.mu.Lock()
	hb.hook = func() {
		if err := bh.EndBackup(ctx); err != nil {
			t.Error(err)
		}
	}
	hb.mu.Unlock()
	collect(t, b, noGrace)
	wantContent(t, a, "d", "new", data)
	wantContent(t, b, "d", "new", data)
}

func withBackend(o dedup.Options, b chunkstore.Backend) dedup.Options {
	o.Backend = b
	return o
}
