package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
)

// Packs read stay open, at most keptPackFiles of them; a pack deleted, or
// one whose read failed, is opened afresh by the next read; a reader open
// when its file is dropped still reads it, and the file closes after it.
func TestPackFilesKeptOpen(t *testing.T) {
	ctx := context.Background()
	l := New(t.TempDir())
	name := func(i int) string { return fmt.Sprintf("%sab/%064x", chunkstore.PackPrefix, i) }
	get := func(n string, off, length int64) ([]byte, error) {
		rc, err := l.Get(ctx, n, off, length)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	for i := range keptPackFiles + 4 {
		if err := l.Put(ctx, name(i), bytes.NewReader([]byte(fmt.Sprintf("pack %02d", i)))); err != nil {
			t.Fatal(err)
		}
		if got, err := get(name(i), 5, 2); err != nil || string(got) != fmt.Sprintf("%02d", i) {
			t.Fatalf("pack %d read %q, %v", i, got, err)
		}
	}
	if n := len(l.packs.files); n != keptPackFiles {
		t.Errorf("%d pack files open, want %d", n, keptPackFiles)
	}
	last := name(keptPackFiles + 3)
	rc, err := l.Get(ctx, last, 0, 4) // open across the Delete
	if err != nil {
		t.Fatal(err)
	}
	pf := l.packs.files[filepath.Join(l.root, filepath.FromSlash(last))]
	if err := l.Delete(ctx, last); err != nil {
		t.Fatal(err)
	}
	if _, err := get(last, 0, 4); !errors.Is(err, chunkstore.ErrNotExist) {
		t.Errorf("a deleted pack read %v, want ErrNotExist", err)
	}
	if got, err := io.ReadAll(rc); err != nil || string(got) != "pack" {
		t.Errorf("a reader open across the Delete read %q, %v", got, err)
	}
	rc.Close()
	rc.Close() // a second Close releases nothing more
	if pf.readers != 0 || pf.f.Close() == nil {
		t.Errorf("a dropped pack file has %d readers and was not closed", pf.readers)
	}
	// A read that fails drops the file: the pack, rewritten under its name
	// (which only damage does), is read afresh.
	first := name(keptPackFiles)
	if _, err := get(first, 0, 100); err == nil {
		t.Fatal("a read past the end of a pack succeeded")
	}
	p := filepath.Join(l.root, filepath.FromSlash(first))
	os.Remove(p)
	os.WriteFile(p, []byte("pack XY"), 0o644)
	if got, err := get(first, 5, 2); err != nil || string(got) != "XY" {
		t.Errorf("after a failed read, the pack read %q, %v; want it read afresh", got, err)
	}
}
