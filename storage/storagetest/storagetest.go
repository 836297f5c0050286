// Package storagetest is the conformance suite every storage.BackupStorage
// must pass: the seed's contract, the semantics of Vitess's reference file
// storage and its tests, and what newer callers do (EndBackup twice, AddFile
// after EndBackup, re-adding a file). Wiring an implementation is one call:
//
//	func TestConformance(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T, root string) storage.BackupStorage { return mystorage.New(root) })
//	}
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
)

// Factory opens a storage on root, an empty directory on the first call of a
// subtest. A second call on the same root (after the first storage is
// closed) must see what the first one stored.
type Factory func(t *testing.T, root string) storage.BackupStorage

// Sizes are the file sizes the parallel-writer property writes: empty, one
// byte, around common chunk sizes (16, 64, 256 KiB) and pack sizes (1 and
// 16 MiB), and one file of tens of MiB.
var Sizes = []int{0, 1, 4095, 16<<10 - 1, 16 << 10, 64<<10 + 1, 256 << 10, 1<<20 - 1, 1<<20 + 7, 3 << 20, 16<<20 - 1, 16 << 20, 16<<20 + 1, 40 << 20}

// Run runs every property of the contract as its own subtest, each on a new
// storage over a fresh root from newStorage.
func Run(t *testing.T, newStorage Factory) { run(t, newStorage, false) }

// RunApart is Run for a storage whose calls go to many processes of one
// repository in turn (as a test wires them): a backup in progress in one
// is listed by the others, but the files it has closed are readable only
// in the process writing it until it ends.
func RunApart(t *testing.T, newStorage Factory) { run(t, newStorage, true) }

func run(t *testing.T, newStorage Factory, apart bool) {
	props := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"ListMissingDir", testListMissingDir},
		{"ListSorted", testListSorted},
		{"ZeroFileBackupListed", testZeroFileBackupListed},
		{"InProgressListed", testInProgressListed},
		{"AbortedInvisible", testAbortedInvisible},
		{"RemovedNameReusable", testRemovedNameReusable},
		{"DuplicateStart", testDuplicateStart},
		{"ReadOnlyMisuse", testReadOnlyMisuse},
		{"SmallFileOneRead", testSmallFileOneRead},
		{"MissingFile", testMissingFile},
		{"Copy", testCopy},
		{"ParallelWritersAndReaders", testParallelWritersAndReaders},
		{"EndBackupTwice", testEndBackupTwice},
		{"AddFileAfterEnd", testAddFileAfterEnd},
		{"ReAddReplaces", testReAddReplaces},
		{"ReuseAfterClose", testReuseAfterClose},
		{"Reopen", testReopen},
		{"BadNames", testBadNames},
		{"CancelledWriter", testCancelledWriter},
		{"CloseAgain", testCloseAgain},
		{"HandlesOutliveClose", testHandlesOutliveClose},
	}
	for _, p := range props {
		t.Run(p.name, func(t *testing.T) {
			parent := t.TempDir()
			e := &env{t: t, parent: parent, root: filepath.Join(parent, "repo"), factory: newStorage, apart: apart}
			if err := os.Mkdir(e.root, 0o755); err != nil {
				t.Fatal(err)
			}
			e.bs = newStorage(t, e.root)
			t.Cleanup(func() { e.bs.Close() })
			p.fn(t, e)
		})
	}
}

type env struct {
	t            *testing.T
	parent, root string
	factory      Factory
	bs           storage.BackupStorage
	apart        bool // see RunApart
}

var ctx = context.Background()

// content is the deterministic content of a test file.
func content(seed, n int) []byte {
	if seed%2 == 0 {
		return dataset.Random(uint64(seed), n)
	}
	pages := dataset.Pages(uint64(seed), n/dataset.PageSize+1)
	return pages[:n]
}

func (e *env) start(dir, name string) storage.BackupHandle {
	e.t.Helper()
	bh, err := e.bs.StartBackup(ctx, dir, name)
	if err != nil {
		e.t.Fatalf("StartBackup(%s, %s): %v", dir, name, err)
	}
	if bh.Directory() != dir || bh.Name() != name {
		e.t.Fatalf("StartBackup(%s, %s) returned a handle for %s/%s", dir, name, bh.Directory(), bh.Name())
	}
	return bh
}

// end ends a backup, failing the test if EndBackup does.
func (e *env) end(bh storage.BackupHandle) {
	e.t.Helper()
	if err := bh.EndBackup(ctx); err != nil {
		e.t.Fatalf("EndBackup(%s/%s): %v", bh.Directory(), bh.Name(), err)
	}
}

// write adds a file to bh in Write calls of odd sizes.
func write(t *testing.T, bh storage.BackupHandle, file string, data []byte) {
	t.Helper()
	if err := tryWrite(bh, file, data); err != nil {
		t.Fatal(err)
	}
}

func tryWrite(bh storage.BackupHandle, file string, data []byte) error {
	w, err := bh.AddFile(ctx, file)
	if err != nil {
		return fmt.Errorf("AddFile(%s): %w", file, err)
	}
	step := 1
	for off := 0; off < len(data); {
		n := min(step, len(data)-off)
		if _, err := w.Write(data[off : off+n]); err != nil {
			w.Close()
			return fmt.Errorf("Write(%s): %w", file, err)
		}
		off += n
		step = step*3 + 7 // 1, 10, 37, 118, ... up to multi-MiB writes
		if step > 5<<20 {
			step = 4093
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("Close(%s): %w", file, err)
	}
	return nil
}

func (e *env) list(dir string) []storage.BackupHandle {
	e.t.Helper()
	bhs, err := e.bs.ListBackups(ctx, dir)
	if err != nil {
		e.t.Fatalf("ListBackups(%s): %v", dir, err)
	}
	return bhs
}

func names(bhs []storage.BackupHandle) []string {
	var out []string
	for _, bh := range bhs {
		out = append(out, bh.Name())
	}
	return out
}

// find lists dir and returns the read-only handle of name.
func (e *env) find(dir, name string) storage.BackupHandle {
	e.t.Helper()
	for _, bh := range e.list(dir) {
		if bh.Name() == name {
			return bh
		}
	}
	e.t.Fatalf("backup %s/%s not listed", dir, name)
	return nil
}

func read(t *testing.T, bh storage.BackupHandle, file string) ([]byte, error) {
	rc, err := bh.ReadFile(ctx, file)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func expectFile(t *testing.T, bh storage.BackupHandle, file string, want []byte) {
	t.Helper()
	got, err := read(t, bh, file)
	if err != nil {
		t.Fatalf("ReadFile(%s/%s, %s): %v", bh.Directory(), bh.Name(), file, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("ReadFile(%s/%s, %s): %d bytes differ from the %d written", bh.Directory(), bh.Name(), file, len(got), len(want))
	}
}

func testListMissingDir(t *testing.T, e *env) {
	if bhs := e.list("no/such"); len(bhs) != 0 {
		t.Errorf("ListBackups of a missing directory = %v", names(bhs))
	}
}

// testListSorted is the reference implementation's listing test.
func testListSorted(t *testing.T, e *env) {
	for _, n := range []string{"b", "c", "a", "a1"} {
		bh := e.start("ks/0", n)
		write(t, bh, "file", []byte(n))
		if err := bh.EndBackup(ctx); err != nil {
			t.Fatal(err)
		}
	}
	e.end(e.start("ks", "other"))
	e.end(e.start("ks/00", "other"))
	bhs := e.list("ks/0")
	if got := fmt.Sprint(names(bhs)); got != "[a a1 b c]" {
		t.Fatalf("ListBackups(ks/0) = %s, want [a a1 b c]", got)
	}
	for _, bh := range bhs {
		if bh.Directory() != "ks/0" {
			t.Errorf("listed handle has directory %q", bh.Directory())
		}
		expectFile(t, bh, "file", []byte(bh.Name()))
	}
	if got := fmt.Sprint(names(e.list("ks"))); got != "[other]" {
		t.Errorf("ListBackups(ks) = %s, want [other]", got)
	}
}

func testZeroFileBackupListed(t *testing.T, e *env) {
	if err := e.start("d", "empty").EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(names(e.list("d"))); got != "[empty]" {
		t.Errorf("ListBackups = %s, want [empty]", got)
	}
}

func testInProgressListed(t *testing.T, e *env) {
	bh := e.start("d", "running")
	write(t, bh, "closed", []byte("done"))
	w, err := bh.AddFile(ctx, "open")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	ro := e.find("d", "running")
	if got, err := read(t, ro, "closed"); !e.apart || !errors.Is(err, storage.ErrNotFound) {
		if err != nil || !bytes.Equal(got, []byte("done")) {
			t.Errorf("ReadFile of a closed file of a backup in progress: %q, %v", got, err)
		}
	}
	if _, err := read(t, ro, "open"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ReadFile of a file still being written: %v, want ErrNotFound", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !e.apart {
		expectFile(t, ro, "open", []byte("partial"))
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	ro = e.find("d", "running")
	expectFile(t, ro, "closed", []byte("done"))
	expectFile(t, ro, "open", []byte("partial"))
}

func testAbortedInvisible(t *testing.T, e *env) {
	bh := e.start("d", "aborted")
	write(t, bh, "f", content(1, 100000))
	if err := bh.AbortBackup(ctx); err != nil {
		t.Fatal(err)
	}
	if bhs := e.list("d"); len(bhs) != 0 {
		t.Errorf("aborted backup listed: %v", names(bhs))
	}
	bh = e.start("d", "aborted") // the name is free again
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
}

func testRemovedNameReusable(t *testing.T, e *env) {
	bh := e.start("d", "n")
	write(t, bh, "f", []byte("first"))
	e.end(bh)
	if err := e.bs.RemoveBackup(ctx, "d", "n"); err != nil {
		t.Fatal(err)
	}
	if bhs := e.list("d"); len(bhs) != 0 {
		t.Fatalf("removed backup listed: %v", names(bhs))
	}
	bh = e.start("d", "n")
	write(t, bh, "g", []byte("second"))
	e.end(bh)
	ro := e.find("d", "n")
	expectFile(t, ro, "g", []byte("second"))
	if _, err := read(t, ro, "f"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("file of the removed backup: %v, want ErrNotFound", err)
	}
	if err := e.bs.RemoveBackup(ctx, "d", "never"); err != nil {
		t.Errorf("RemoveBackup of a missing backup: %v, want nil", err)
	}
}

func testDuplicateStart(t *testing.T, e *env) {
	e.start("d", "n")
	if _, err := e.bs.StartBackup(ctx, "d", "n"); !errors.Is(err, storage.ErrExists) {
		t.Errorf("second StartBackup of a running backup: %v, want ErrExists", err)
	}
	e.end(e.start("d", "m"))
	if _, err := e.bs.StartBackup(ctx, "d", "m"); !errors.Is(err, storage.ErrExists) {
		t.Errorf("StartBackup of an ended backup: %v, want ErrExists", err)
	}
}

func testReadOnlyMisuse(t *testing.T, e *env) {
	bh := e.start("d", "n")
	write(t, bh, "f", []byte("x"))
	if _, err := bh.ReadFile(ctx, "f"); !errors.Is(err, storage.ErrWriteOnly) {
		t.Errorf("ReadFile on a read-write handle: %v, want ErrWriteOnly", err)
	}
	e.end(bh)
	ro := e.find("d", "n")
	if _, err := ro.AddFile(ctx, "g"); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("AddFile on a listed handle: %v, want ErrReadOnly", err)
	}
	if err := ro.EndBackup(ctx); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("EndBackup on a listed handle: %v, want ErrReadOnly", err)
	}
	if err := ro.AbortBackup(ctx); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("AbortBackup on a listed handle: %v, want ErrReadOnly", err)
	}
	expectFile(t, ro, "f", []byte("x")) // the failed calls changed nothing
}

// testSmallFileOneRead is the reference implementation's read test: a small
// file comes back whole from one Read into a large enough buffer.
func testParallelWritersAndReaders(t *testing.T, e *env) {
	bh := e.start("ks/0", "big")
	sums := make([][32]byte, len(Sizes))
	var wg sync.WaitGroup
	errs := make(chan error, len(Sizes))
	for i, n := range Sizes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := content(i, n)
			sums[i] = sha256.Sum256(data)
			errs <- tryWrite(bh, fmt.Sprintf("file-%d", i), data)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	ro := e.find("ks/0", "big")
	errs = make(chan error, 2*len(Sizes))
	for range 2 { // two readers of every file at once
		for i, n := range Sizes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := read(t, ro, fmt.Sprintf("file-%d", i))
				if err == nil && (len(got) != n || sha256.Sum256(got) != sums[i]) {
					err = fmt.Errorf("file-%d: read back %d bytes that differ from the %d written", i, len(got), n)
				}
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func testEndBackupTwice(t *testing.T, e *env) {
	bh := e.start("d", "n")
	write(t, bh, "f", []byte("x"))
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Errorf("second EndBackup: %v", err)
	}
	expectFile(t, e.find("d", "n"), "f", []byte("x"))
}

func testAddFileAfterEnd(t *testing.T, e *env) {
	bh := e.start("d", "n")
	write(t, bh, "first", []byte("1"))
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	write(t, bh, "late", content(3, 300000))
	ro := e.find("d", "n")
	expectFile(t, ro, "first", []byte("1"))
	expectFile(t, ro, "late", content(3, 300000))
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
}

func testReAddReplaces(t *testing.T, e *env) {
	bh := e.start("d", "n")
	write(t, bh, "f", content(4, 500000))
	write(t, bh, "f", content(5, 1000))
	e.end(bh)
	expectFile(t, e.find("d", "n"), "f", content(5, 1000))
}

func testReuseAfterClose(t *testing.T, e *env) {
	bh := e.start("d", "a")
	write(t, bh, "f", []byte("a"))
	e.end(bh)
	if err := e.bs.Close(); err != nil {
		t.Fatal(err)
	}
	expectFile(t, e.find("d", "a"), "f", []byte("a"))
	bh = e.start("d", "b")
	write(t, bh, "f", []byte("b"))
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.bs.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.bs.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := fmt.Sprint(names(e.list("d"))); got != "[a b]" {
		t.Errorf("after reuse, ListBackups = %s", got)
	}
}

func testReopen(t *testing.T, e *env) {
	bh := e.start("ks/0", "n")
	write(t, bh, "f", content(7, 2<<20))
	write(t, bh, "empty", nil)
	e.end(bh)
	e.end(e.start("ks/0", "m"))
	if err := e.bs.Close(); err != nil {
		t.Fatal(err)
	}
	e.bs = e.factory(t, e.root)
	if got := fmt.Sprint(names(e.list("ks/0"))); got != "[m n]" {
		t.Fatalf("after reopen, ListBackups = %s", got)
	}
	ro := e.find("ks/0", "n")
	expectFile(t, ro, "f", content(7, 2<<20))
	expectFile(t, ro, "empty", nil)
}

func testBadNames(t *testing.T, e *env) {
	badDirs := []string{"", "..", "../x", "/abs", "a//b", "a/./b", "a/", "a/../..", "a\\b"}
	badNames := []string{"", ".", "..", "a/b", "../x", "/abs", "a\\b"}
	for _, dir := range badDirs {
		if _, err := e.bs.StartBackup(ctx, dir, "n"); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("StartBackup(%q, n): %v, want ErrInvalidName", dir, err)
		}
		if err := e.bs.RemoveBackup(ctx, dir, "n"); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("RemoveBackup(%q, n): %v, want ErrInvalidName", dir, err)
		}
		if _, err := e.bs.ListBackups(ctx, dir); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ListBackups(%q): %v, want ErrInvalidName", dir, err)
		}
	}
	for _, name := range badNames {
		if _, err := e.bs.StartBackup(ctx, "d", name); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("StartBackup(d, %q): %v, want ErrInvalidName", name, err)
		}
		if err := e.bs.RemoveBackup(ctx, "d", name); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("RemoveBackup(d, %q): %v, want ErrInvalidName", name, err)
		}
	}
	bh := e.start("d", "n")
	for _, file := range []string{"", ".", "..", "../x", "a/b", "/abs", "a\\b", "a b"} {
		if _, err := bh.AddFile(ctx, file); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("AddFile(%q): %v, want ErrInvalidName", file, err)
		}
	}
	// What Vitess's engines write: builtin "0", "1", ... and "MANIFEST";
	// XtraBackup "backup.xbstream.gz" and its stripes "...-000".
	good := []string{"ok-File-1", "MANIFEST", "backup.xbstream.gz", "backup.xbstream.gz-000", "a_b", ".x"}
	for i, file := range good {
		write(t, bh, file, content(20+i, 100))
	}
	e.end(bh)
	ro := e.find("d", "n")
	for i, file := range good {
		expectFile(t, ro, file, content(20+i, 100))
	}
	for _, file := range []string{"", "..", "../x", "a/b"} {
		if _, err := ro.ReadFile(ctx, file); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ReadFile(%q): %v, want ErrInvalidName", file, err)
		}
	}
	entries, _ := os.ReadDir(e.parent)
	if len(entries) != 1 || entries[0].Name() != "repo" {
		var got []string
		for _, en := range entries {
			got = append(got, en.Name())
		}
		t.Errorf("bad names wrote outside the root: %v", got)
	}
}

func testCancelledWriter(t *testing.T, e *env) {
	bh := e.start("d", "n")
	write(t, bh, "kept", []byte("x"))
	wctx, cancel := context.WithCancel(ctx)
	w, err := bh.AddFile(wctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content(8, 1<<20)); err != nil {
		t.Fatal(err)
	}
	cancel()
	data := content(8, 1<<20)
	var werr error
	for i := 0; i < 8 && werr == nil; i++ {
		_, werr = w.Write(data)
	}
	cerr := w.Close()
	if werr == nil && cerr == nil {
		t.Fatal("writer kept working after its context was cancelled")
	}
	if _, err := read(t, e.find("d", "n"), "f"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the cancelled file is readable: %v", err)
	}
	if err := bh.AbortBackup(ctx); err != nil {
		t.Fatalf("AbortBackup after a cancelled writer: %v", err)
	}
	if bhs := e.list("d"); len(bhs) != 0 {
		t.Errorf("aborted backup listed: %v", names(bhs))
	}
}

// testCloseAgain: a second Close returns what the first returned, at once,
// so that a caller retrying a failed Close (as Vitess does, 20 times with
// backoff) fails fast, and never turns a failed file into a kept one.
func testCloseAgain(t *testing.T, e *env) {
	bh := e.start("d", "n")
	w, err := bh.AddFile(ctx, "ok")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content(9, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close of a closed file: %v, want nil as the first", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err = bh.AddFile(wctx, "failed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content(10, 1000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	first := w.Close()
	if first == nil {
		t.Fatal("Close after the writer's context was cancelled returned nil")
	}
	for range 3 {
		if again := w.Close(); again == nil || again.Error() != first.Error() {
			t.Fatalf("Close again after a failed Close: %v, want %v", again, first)
		}
	}
	e.end(bh)
	got := e.find("d", "n")
	expectFile(t, got, "ok", content(9, 1000))
	if _, err := read(t, got, "failed"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the failed file is readable: %v", err)
	}
}

// testHandlesOutliveClose: the handle of an ended backup, and a listed
// handle, keep working after BackupStorage.Close (Vitess closes the storage
// between a backup's EndBackup and its MANIFEST when a collection of the
// shard's backups runs in between, and reads with handles listed before).
func testHandlesOutliveClose(t *testing.T, e *env) {
	bh := e.start("d", "n")
	write(t, bh, "a", content(30, 5000))
	e.end(bh)
	ro := e.find("d", "n")
	if err := e.bs.Close(); err != nil {
		t.Fatal(err)
	}
	expectFile(t, ro, "a", content(30, 5000))
	if err := e.bs.Close(); err != nil {
		t.Fatal(err)
	}
	write(t, bh, "MANIFEST", content(31, 100))
	e.end(bh)
	got := e.find("d", "n")
	expectFile(t, got, "a", content(30, 5000))
	expectFile(t, got, "MANIFEST", content(31, 100))
}
