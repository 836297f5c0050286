// Package backendtest is the conformance suite every chunkstore.Backend must
// pass. Wiring a new backend is one call:
//
//	func TestMyBackend(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) chunkstore.Backend { return newMyBackend(t) })
//	}
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
)

// Run runs every property as its own subtest, each on a fresh, empty backend
// from newBackend.
func Run(t *testing.T, newBackend func(t *testing.T) chunkstore.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b chunkstore.Backend)
	}{
		{"PutGet", testPutGet},
		{"Ranges", testRanges},
		{"Replace", testReplace},
		{"Create", testCreate},
		{"ConcurrentCreates", testConcurrentCreates},
		{"Missing", testMissing},
		{"List", testList},
		{"Delete", testDelete},
		{"BadNames", testBadNames},
		{"ConcurrentPuts", testConcurrentPuts},
		{"PutsBesideDeletes", testPutsBesideDeletes},
		{"CancelledPut", testCancelledPut},
		{"NoPartialWrites", testNoPartialWrites},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBackend(t)) })
	}
}

func put(t *testing.T, b chunkstore.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(context.Background(), name, bytes.NewReader(data)); err != nil {
		t.Fatalf("Put(%s): %v", name, err)
	}
}

func get(t *testing.T, b chunkstore.Backend, name string, off, n int64) []byte {
	t.Helper()
	rc, err := b.Get(context.Background(), name, off, n)
	if err != nil {
		t.Fatalf("Get(%s, %d, %d): %v", name, off, n, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%s, %d, %d): read: %v", name, off, n, err)
	}
	return data
}

func list(t *testing.T, b chunkstore.Backend, prefix string) map[string]int64 {
	t.Helper()
	return listAfter(t, b, prefix, "")
}

func listAfter(t *testing.T, b chunkstore.Backend, prefix, after string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	var mu sync.Mutex
	err := b.List(context.Background(), prefix, after, func(o chunkstore.ObjectInfo) error {
		mu.Lock()
		defer mu.Unlock()
		got[o.Name] = o.Size
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q, %q): %v", prefix, after, err)
	}
	return got
}

func pattern(n int, seed byte) []byte {
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7) + seed
	}
	return data
}

func testPutGet(t *testing.T, b chunkstore.Backend) {
	for _, n := range []int{0, 1, 4095, 1 << 20} {
		name := fmt.Sprintf("data/ab/obj%d", n)
		want := pattern(n, 3)
		put(t, b, name, want)
		if got := get(t, b, name, 0, -1); !bytes.Equal(got, want) {
			t.Errorf("Get(%s) returned %d bytes, differing from the %d put", name, len(got), n)
		}
	}
}

func testRanges(t *testing.T, b chunkstore.Backend) {
	want := pattern(10000, 1)
	put(t, b, "obj", want)
	for _, r := range [][2]int64{{0, 1}, {0, 10000}, {9999, 1}, {1234, 5678}, {10000, 0}} {
		if got := get(t, b, "obj", r[0], r[1]); !bytes.Equal(got, want[r[0]:r[0]+r[1]]) {
			t.Errorf("Get(obj, %d, %d) = %d bytes, wrong content", r[0], r[1], len(got))
		}
	}
	if got := get(t, b, "obj", 9000, -1); !bytes.Equal(got, want[9000:]) {
		t.Errorf("Get(obj, 9000, -1) = %d bytes, wrong content", len(got))
	}
	rc, err := b.Get(context.Background(), "obj", 9990, 20)
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if err == nil {
		t.Error("Get of a range past the end of the object succeeded")
	}
}

func testReplace(t *testing.T, b chunkstore.Backend) {
	put(t, b, "manifests/x/y", []byte("first version, longer"))
	put(t, b, "manifests/x/y", []byte("second"))
	if got := get(t, b, "manifests/x/y", 0, -1); string(got) != "second" {
		t.Errorf("after replacing, Get = %q, want %q", got, "second")
	}
	if got := list(t, b, ""); len(got) != 1 || got["manifests/x/y"] != 6 {
		t.Errorf("after replacing, List = %v, want one object of 6 bytes", got)
	}
}

func testCreate(t *testing.T, b chunkstore.Backend) {
	ctx := context.Background()
	if err := b.Create(ctx, "config", bytes.NewReader([]byte("first"))); err != nil {
		t.Fatalf("Create of a new object: %v", err)
	}
	if err := b.Create(ctx, "config", bytes.NewReader([]byte("second"))); !errors.Is(err, chunkstore.ErrExist) {
		t.Errorf("Create of an existing object: %v, want ErrExist", err)
	}
	if got := get(t, b, "config", 0, -1); string(got) != "first" {
		t.Errorf("after a refused Create, Get = %q, want %q", got, "first")
	}
	if got := list(t, b, ""); len(got) != 1 {
		t.Errorf("after a refused Create, List = %v, want one object", got)
	}
	if err := b.Create(ctx, "../config", bytes.NewReader(nil)); err == nil {
		t.Error("Create(../config) succeeded")
	}
}

// testConcurrentCreates: of many Creates of one name at once, exactly one
// succeeds, and the object is the winner's.
func testConcurrentCreates(t *testing.T, b chunkstore.Backend) {
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Create(context.Background(), "config", bytes.NewReader(pattern(1000, byte(i))))
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("Creates %d and %d of one name both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, chunkstore.ErrExist):
			t.Errorf("Create %d: %v, want nil or ErrExist", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no Create succeeded")
	}
	if got := get(t, b, "config", 0, -1); !bytes.Equal(got, pattern(1000, byte(winner))) {
		t.Error("the object is not the winning Create's")
	}
}

func testMissing(t *testing.T, b chunkstore.Backend) {
	_, err := b.Get(context.Background(), "data/00/nothing", 0, -1)
	if !errors.Is(err, chunkstore.ErrNotExist) {
		t.Errorf("Get of a missing object: %v, want ErrNotExist", err)
	}
	if got := list(t, b, "data/"); len(got) != 0 {
		t.Errorf("List of an empty backend = %v", got)
	}
}

func testList(t *testing.T, b chunkstore.Backend) {
	names := []string{"config", "data/00/a", "data/01/b", "manifests/d/n1", "manifests/d/n2", "manifests/d2/n1"}
	for i, name := range names {
		put(t, b, name, pattern(i+1, 0))
	}
	for prefix, want := range map[string][]string{
		"":             names,
		"data/":        names[1:3],
		"manifests/d/": names[3:5],
		"manifests/d":  names[3:6],
		"conf":         names[:1],
		"nothing/":     nil,
	} {
		got := list(t, b, prefix)
		var gotNames []string
		for name, size := range got {
			gotNames = append(gotNames, name)
			for i, n := range names {
				if n == name && size != int64(i+1) {
					t.Errorf("List(%q): %s has size %d, want %d", prefix, name, size, i+1)
				}
			}
		}
		sort.Strings(gotNames)
		if fmt.Sprint(gotNames) != fmt.Sprint(want) && !(len(gotNames) == 0 && len(want) == 0) {
			t.Errorf("List(%q) = %v, want %v", prefix, gotNames, want)
		}
	}
	// Resumed listings: only the names after the given one.
	for _, c := range []struct {
		prefix, after string
		want          []string
	}{
		{"", "data/00/a", names[2:]},
		{"data/", "data/00", names[1:3]},
		{"data/", "data/00/b", names[2:3]},
		{"data/", "data/01/b", nil},
		{"manifests/", "manifests/d/n1", names[4:]},
		{"manifests/d/", "a", names[3:5]},
		{"", "zzz", nil},
	} {
		var gotNames []string
		for name := range listAfter(t, b, c.prefix, c.after) {
			gotNames = append(gotNames, name)
		}
		sort.Strings(gotNames)
		if fmt.Sprint(gotNames) != fmt.Sprint(c.want) {
			t.Errorf("List(%q, after %q) = %v, want %v", c.prefix, c.after, gotNames, c.want)
		}
	}
	stop := errors.New("stop")
	if err := b.List(context.Background(), "", "", func(chunkstore.ObjectInfo) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("List did not return the callback's error: %v", err)
	}
}

func testDelete(t *testing.T, b chunkstore.Backend) {
	put(t, b, "data/aa/x", []byte("x"))
	if err := b.Delete(context.Background(), "data/aa/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(context.Background(), "data/aa/x", 0, -1); !errors.Is(err, chunkstore.ErrNotExist) {
		t.Errorf("Get after Delete: %v, want ErrNotExist", err)
	}
	if err := b.Delete(context.Background(), "data/aa/x"); err != nil {
		t.Errorf("Delete of a missing object: %v, want nil", err)
	}
}

func testBadNames(t *testing.T, b chunkstore.Backend) {
	for _, name := range []string{"", "/abs", "../up", "a/../../up", "a//b", "a/./b", "a/"} {
		if err := b.Put(context.Background(), name, bytes.NewReader([]byte("x"))); err == nil {
			t.Errorf("Put(%q) succeeded", name)
		}
		if _, err := b.Get(context.Background(), name, 0, -1); err == nil {
			t.Errorf("Get(%q) succeeded", name)
		}
		if err := b.Delete(context.Background(), name); err == nil {
			t.Errorf("Delete(%q) succeeded", name)
		}
	}
	if got := list(t, b, ""); len(got) != 0 {
		t.Errorf("bad names left objects behind: %v", got)
	}
}

func testConcurrentPuts(t *testing.T, b chunkstore.Backend) {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- b.Put(context.Background(), fmt.Sprintf("data/%02x/obj", i), bytes.NewReader(pattern(100000+i, byte(i))))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 16 {
		if got := get(t, b, fmt.Sprintf("data/%02x/obj", i), 0, -1); !bytes.Equal(got, pattern(100000+i, byte(i))) {
			t.Errorf("object %d differs after concurrent puts", i)
		}
	}
}

// testPutsBesideDeletes: puts and creates succeed while other objects
// under the same prefix are deleted, each leaving the prefix empty, as
// processes put and delete their leases and markers side by side. (The
// Versity gateway on a POSIX file system removes a directory emptied by a
// delete, racing with a put that has just made it.)
func testPutsBesideDeletes(t *testing.T, b chunkstore.Backend) {
	ctx := context.Background()
	const workers, rounds = 4, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*5)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				name := fmt.Sprintf("running/d/%d-%d", w, r)
				errs <- b.Put(ctx, name, bytes.NewReader([]byte(name)))
				errs <- b.Delete(ctx, name)
				errs <- b.Create(ctx, name, bytes.NewReader([]byte(name)))
				rc, err := b.Get(ctx, name, 0, -1)
				if err == nil {
					var got []byte
					got, err = io.ReadAll(rc)
					rc.Close()
					if err == nil && string(got) != name {
						err = fmt.Errorf("%s reads %q", name, got)
					}
				}
				errs <- err
				errs <- b.Delete(ctx, name)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func testCancelledPut(t *testing.T, b chunkstore.Backend) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Put(ctx, "data/00/cancelled", bytes.NewReader(pattern(1<<20, 0))); err == nil {
		t.Error("Put with a cancelled context succeeded")
	}
	if got := list(t, b, ""); len(got) != 0 {
		t.Errorf("cancelled Put left objects: %v", got)
	}
}

// testNoPartialWrites: writes that completed, failed or were refused leave
// nothing ListPartial lists.
func testNoPartialWrites(t *testing.T, b chunkstore.Backend) {
	ctx := context.Background()
	put(t, b, "data/00/a", pattern(1<<20, 1))
	b.Create(ctx, "config", bytes.NewReader([]byte("c")))
	b.Create(ctx, "config", bytes.NewReader([]byte("again")))
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	b.Put(cancelled, "data/00/b", bytes.NewReader(pattern(1<<20, 2)))
	err := b.ListPartial(ctx, func(o chunkstore.ObjectInfo) error {
		t.Errorf("ListPartial lists %+v", o)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
