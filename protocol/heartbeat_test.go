package protocol_test

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/protocol"
)

// slowPuts delays every Put by delay once armed.
type slowPuts struct {
	chunkstore.Backend
	delay atomic.Int64
}

func (b *slowPuts) Put(ctx context.Context, name string, r io.Reader) error {
	time.Sleep(time.Duration(b.delay.Load()))
	return b.Backend.Put(ctx, name, r)
}

// A heartbeat whose rewrites come too slowly is lost for good, and stops
// rewriting its object, so no collection can see it alive again.
func TestHeartbeatLost(t *testing.T) {
	const ttl = 2 * time.Second
	ctx := context.Background()
	b := &slowPuts{Backend: local.New(t.TempDir())}
	h, err := protocol.StartHeartbeat(ctx, b, protocol.LeasePrefix, ttl)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop(ctx)
	time.Sleep(ttl) // several rewrites
	if err := h.Valid(); err != nil {
		t.Fatalf("heartbeat rewritten in time: %v", err)
	}
	b.delay.Store(int64(ttl / 3)) // longer than TTL/4 per rewrite
	deadline := time.Now().Add(10 * ttl)
	for h.Valid() == nil && time.Now().Before(deadline) {
		time.Sleep(ttl / 10)
	}
	if err := h.Valid(); !errors.Is(err, protocol.ErrLeaseLost) {
		t.Fatalf("Valid after slow rewrites = %v, want ErrLeaseLost", err)
	}
	b.delay.Store(0)
	var last time.Time
	mtime := func() time.Time {
		var m time.Time
		b.List(ctx, protocol.LeasePrefix, "", func(o chunkstore.ObjectInfo) error { m = o.ModTime; return nil })
		return m
	}
	time.Sleep(ttl / 2) // a write in flight when it was lost may still land
	last = mtime()
	time.Sleep(ttl)
	if got := mtime(); !got.Equal(last) {
		t.Errorf("a lost heartbeat rewrote its object at %v", got)
	}
	if err := h.Valid(); !errors.Is(err, protocol.ErrLeaseLost) {
		t.Errorf("a lost heartbeat became valid again: %v", err)
	}
}
