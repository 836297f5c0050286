// Package faulty wraps a chunkstore.Backend to fail one chosen call, so
// tests can show that a fault at any step loses nothing.
package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"syscall"

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

// Fault is how an armed call fails.
type Fault int

const (
	// Refuse: the call fails before doing anything, as with ENOSPC.
	Refuse Fault = iota
	// ShortWrite: a put reads half its object, then fails with ENOSPC;
	// nothing is stored. Other calls refuse.
	ShortWrite
	// AfterStore: a put stores its object, then reports failure, as when
	// the fsync of the directory fails. Other calls refuse.
	AfterStore
)

// Backend passes calls through to the wrapped backend, counting those of
// the armed operations, and fails the one whose count reaches the armed
// number.
type Backend struct {
	chunkstore.Backend

	mu     sync.Mutex
	ops    []string
	fault  Fault
	calls  int
	failAt int // 0: disarmed
	failed bool
	name   string // of the object whose call failed
}

// New wraps b, disarmed.
func New(b chunkstore.Backend) *Backend { return &Backend{Backend: b} }

// Arm makes the k-th call (from 1, counted from now) of the given operations
// fail in the given way, and resets the count.
func (f *Backend) Arm(k int, fault Fault, ops ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops, f.fault, f.calls, f.failAt, f.failed, f.name = ops, fault, 0, k, false, ""
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

// FailedName is the object name (or listed prefix) of the call that
// failed, if one did since Arm.
func (f *Backend) FailedName() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.name
}

// trip counts a call and reports whether it is the one to fail, and how.
func (f *Backend) trip(op, name string) (Fault, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.ops, op) {
		return Refuse, nil
	}
	f.calls++
	if f.calls != f.failAt {
		return Refuse, nil
	}
	f.failed, f.name = true, name
	return f.fault, fmt.Errorf("%s %s (call %d): %w: %w", op, name, f.calls, ErrInjected, syscall.ENOSPC)
}

func (f *Backend) refuse(op, name string) error {
	_, err := f.trip(op, name)
	return err
}

func (f *Backend) Put(ctx context.Context, name string, r io.Reader) error {
	fault, err := f.trip(Put, name)
	switch {
	case err == nil:
		return f.Backend.Put(ctx, name, r)
	case fault == ShortWrite:
		data, _ := io.ReadAll(r)
		return errors.Join(f.Backend.Put(ctx, name, failingReader{bytes.NewReader(data[:len(data)/2]), err}), err)
	case fault == AfterStore:
		if perr := f.Backend.Put(ctx, name, r); perr != nil {
			return perr
		}
	}
	return err
}

// failingReader returns its reader's bytes, then err instead of EOF.
type failingReader struct {
	r   io.Reader
	err error
}

func (f failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		err = f.err
	}
	return n, err
}

func (f *Backend) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	if err := f.refuse(Get, name); err != nil {
		return nil, err
	}
	return f.Backend.Get(ctx, name, off, n)
}

func (f *Backend) List(ctx context.Context, prefix, after string, fn func(chunkstore.ObjectInfo) error) error {
	if err := f.refuse(List, prefix); err != nil {
		return err
	}
	return f.Backend.List(ctx, prefix, after, fn)
}

func (f *Backend) Delete(ctx context.Context, name string) error {
	if err := f.refuse(Delete, name); err != nil {
		return err
	}
	return f.Backend.Delete(ctx, name)
}
