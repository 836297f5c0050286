// Package faulty wraps a chunkstore.Backend to fail one chosen call, so
// tests can show that a fault at any step loses nothing.
package faulty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/dedupstore/dedupstore/chunkstore"
)

// ErrInjected is wrapped by every injected failure.
var ErrInjected = errors.New("injected fault")

// Operations a Backend can fail.
const (
	Put    = "put"
	Get    = "get"
	List   = "list"
	Delete = "delete"
)

// Backend passes calls through to the wrapped backend, counting those of
// the armed operations, and fails the one whose count reaches the armed
// number.
type Backend struct {
	chunkstore.Backend

	mu     sync.Mutex
	ops    []string
	calls  int
	failAt int // 0: disarmed
	failed bool
}

// New wraps b, disarmed.
func New(b chunkstore.Backend) *Backend { return &Backend{Backend: b} }

// Arm makes the k-th call (from 1, counted from now) of the given operations
// fail, and resets the count.
func (f *Backend) Arm(k int, ops ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops, f.calls, f.failAt, f.failed = ops, 0, k, false
}

// Disarm stops failing calls and returns how many armed calls were made and
// whether one failed.
func (f *Backend) Disarm() (calls int, failed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	calls, failed = f.calls, f.failed
	f.ops, f.failAt = nil, 0
	return calls, failed
}

func (f *Backend) fault(op, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.ops, op) {
		return nil
	}
	f.calls++
	if f.calls != f.failAt {
		return nil
	}
	f.failed = true
	return fmt.Errorf("%s %s (call %d): %w", op, name, f.calls, ErrInjected)
}

func (f *Backend) Put(ctx context.Context, name string, r io.Reader) error {
	if err := f.fault(Put, name); err != nil {
		return err
	}
	return f.Backend.Put(ctx, name, r)
}

func (f *Backend) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	if err := f.fault(Get, name); err != nil {
		return nil, err
	}
	return f.Backend.Get(ctx, name, off, n)
}

func (f *Backend) List(ctx context.Context, prefix string, fn func(chunkstore.ObjectInfo) error) error {
	if err := f.fault(List, prefix); err != nil {
		return err
	}
	return f.Backend.List(ctx, prefix, fn)
}

func (f *Backend) Delete(ctx context.Context, name string) error {
	if err := f.fault(Delete, name); err != nil {
		return err
	}
	return f.Backend.Delete(ctx, name)
}
