package protocol

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
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
		return fmt.Errorf("protocol: write %s: %w", h.name, err)
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
	return List(ctx, b, LeasePrefix)
}

// listHeartbeats returns the objects under prefix by name.
func List(ctx context.Context, b chunkstore.Backend, prefix string) (map[string]time.Time, error) {
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
func Lock(ctx context.Context, b chunkstore.Backend, ttl time.Duration) (*Heartbeat, time.Time, error) {
	h, err := StartHeartbeat(ctx, b, LockPrefix, ttl)
	if err != nil {
		return nil, time.Time{}, err
	}
	locks, err := List(ctx, b, LockPrefix)
	now, ok := locks[h.name]
	if err == nil && !ok {
		err = fmt.Errorf("protocol: lock %s not listed after it was written", h.name)
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
