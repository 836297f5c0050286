package dedup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// Closed files are staged and committed at the backup's end (stage.go).

// Many small files fill packs to their size: they used to seal one pack
// each.
func TestSmallFilesSharePacks(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	files := map[string][]byte{}
	for i := range 500 {
		files[fmt.Sprintf("f%d", i)] = dataset.Random(uint64(1000+i), 2<<10+i*16)
	}
	backup(t, s, "d", "many", files)
	if st := stats(t, s); st.Packs != 1 {
		t.Errorf("500 small files made %d packs, want 1", st.Packs)
	}
	backups{"many": files}.verify(t, s, "")
	checkClean(t, s, root)
}

// A file closed in a running backup reads back before the backup ends.
func TestStagedFileReadable(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	bh, err := s.StartBackup(ctx, "d", "running")
	if err != nil {
		t.Fatal(err)
	}
	data := dataset.Random(1, 100<<10)
	write(t, bh, "f", data)
	got, err := readBack(t, s, "d", "running", "f")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading a closed file of a running backup: %d bytes, %v", len(got), err)
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	wantContent(t, s, "d", "running", data)
}

// A collection while files are staged spares their chunks, although their
// pack is indexed and no committed list refers to them.
func TestCollectionSparesStagedFiles(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	bh, err := s.StartBackup(ctx, "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for i := range 20 {
		name := fmt.Sprintf("f%d", i)
		files[name] = dataset.Random(uint64(300+i), 20<<10)
		write(t, bh, name, files[name])
	}
	// Another backup's end seals the pack holding b's chunks too.
	backup(t, s, "d", "other", map[string][]byte{"f": dataset.Random(399, 1<<10)})
	if st := stats(t, s); st.Packs != 1 {
		t.Fatalf("%d packs, want the one holding both backups", st.Packs)
	}
	collect(t, s, gc.Options{GracePeriod: time.Nanosecond})
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	backups{"b": files}.verify(t, s, "after a collection while staged")
	// The collection found b's chunks claimed and left their pack; the
	// copy it had made of other's chunk goes at the next one.
	collect(t, s, gc.Options{GracePeriod: time.Nanosecond})
	backups{"b": files}.verify(t, s, "after the next collection")
	checkClean(t, s, root)
}

// failPacks fails every pack write while fail is set.
type failPacks struct {
	chunkstore.Backend
	fail atomic.Bool
}

func (b *failPacks) Put(ctx context.Context, name string, r io.Reader) error {
	if b.fail.Load() && strings.HasPrefix(name, chunkstore.PackPrefix) {
		return errors.New("injected: pack write refused")
	}
	return b.Backend.Put(ctx, name, r)
}

// A pack a staged file needs fails: the backup cannot end, however often
// EndBackup is called, and nothing of it is listed as ended.
func TestFailedPackFailsEveryEnd(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	b := &failPacks{Backend: local.New(root)}
	s := dedup.New(root, dedup.Options{Backend: b})
	t.Cleanup(func() { s.Close() })
	bh, err := s.StartBackup(ctx, "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	b.fail.Store(true)
	write(t, bh, "f", dataset.Random(2, 50<<10))
	for i := range 2 {
		if err := bh.EndBackup(ctx); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("EndBackup %d with a failed pack: %v", i+1, err)
		}
	}
	b.fail.Store(false)
	if err := bh.EndBackup(ctx); err == nil {
		t.Fatal("EndBackup succeeded without the file whose pack failed")
	}
	if err := bh.AbortBackup(ctx); err != nil {
		t.Fatal(err)
	}
	backup(t, s, "d", "after", map[string][]byte{"f": dataset.Random(2, 50<<10)})
	wantContent(t, s, "d", "after", dataset.Random(2, 50<<10))
}

var smallChunks = dedup.Options{Chunker: chunkstore.ChunkerParams{Kind: chunkstore.ChunkerFastCDC, MinSize: 2 << 10, AvgSize: 4 << 10, MaxSize: 16 << 10}}

// CopyFile adds a file by reference: it reads back exactly, outlives its
// source, and spans several list segments.
func TestCopyFile(t *testing.T) {
	s, root := newStorage(t, smallChunks)
	files := map[string][]byte{"big": dataset.Random(5, 6<<20), "small": []byte("small"), "empty": nil}
	backup(t, s, "d", "a", files)
	if fs, err := s.Files(ctx, "d", "a"); err != nil || fs[0].Name != "big" || fs[0].Chunks <= index.SegmentRefs {
		t.Fatalf("the big file (%+v, %v) needs more than one list segment", fs, err)
	}
	bh, err := s.StartBackup(ctx, "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	for f := range files {
		if err := s.CopyFile(ctx, "d", "b", f+"-copy", dedup.FileRef{Dir: "d", Name: "a", File: f}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CopyFile(ctx, "d", "b", "x", dedup.FileRef{Dir: "d", Name: "a", File: "nope"}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("CopyFile of a missing file: %v", err)
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.CopyFile(ctx, "d", "b", "late", dedup.FileRef{Dir: "d", Name: "a", File: "small"}); !errors.Is(err, storage.ErrAborted) {
		t.Errorf("CopyFile into an ended backup: %v", err)
	}
	if err := s.RemoveBackup(ctx, "d", "a"); err != nil {
		t.Fatal(err)
	}
	collect(t, s, gc.Options{GracePeriod: time.Nanosecond})
	copies := map[string][]byte{}
	for f, data := range files {
		copies[f+"-copy"] = data
	}
	backups{"b": copies}.verify(t, s, "after the source was removed and collected")
	checkClean(t, s, root)
}

// CopyFile checks that every chunk is there: a source whose pack is lost
// is refused, so that the caller writes the file instead.
func TestCopyFileChecksChunks(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "a", map[string][]byte{"f": dataset.Random(6, 100<<10)})
	packs, _ := filepath.Glob(filepath.Join(root, "data", "*", "*"))
	for _, p := range packs {
		os.Remove(p)
	}
	if _, err := s.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	bh, err := s.StartBackup(ctx, "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CopyFile(ctx, "d", "b", "f", dedup.FileRef{Dir: "d", Name: "a", File: "f"}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("CopyFile of a file whose chunks are lost: %v", err)
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
}
