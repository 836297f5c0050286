package local_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/backendtest"
	"github.com/dedupstore/dedupstore/chunkstore/local"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) chunkstore.Backend { return local.New(t.TempDir()) })
}

// A temporary file a killed Put left is listed by ListPartial only, and
// DeletePartial removes it; it removes nothing else.
func TestPartialWrites(t *testing.T) {
	dir := t.TempDir()
	b := local.New(dir)
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Join(dir, "data", "ab"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data", "ab", local.TempPrefix+"123"), make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	var partial []chunkstore.ObjectInfo
	b.ListPartial(ctx, func(o chunkstore.ObjectInfo) error { partial = append(partial, o); return nil })
	if len(partial) != 1 || partial[0].Name != "data/ab/"+local.TempPrefix+"123" || partial[0].Size != 100 {
		t.Fatalf("ListPartial = %+v", partial)
	}
	b.List(ctx, "", "", func(o chunkstore.ObjectInfo) error { t.Errorf("List lists %s", o.Name); return nil })
	if err := b.DeletePartial(ctx, "config"); err == nil {
		t.Error("DeletePartial of an object succeeded")
	}
	if err := b.DeletePartial(ctx, partial[0].Name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "ab", local.TempPrefix+"123")); !os.IsNotExist(err) {
		t.Errorf("the temporary file is still there: %v", err)
	}
}
