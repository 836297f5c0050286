package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// catalogFile is the backup file in which dedupctl records the paths of the
// files it backed up: backup file names are alphanumerics and hyphens, so
// file i of a backup is stored as "i" and the catalog maps it to its path.
// Backups written by agents (Vitess) have no catalog; their stored names are
// their paths.
const catalogFile = "CATALOG"

// Catalog is the JSON content of catalogFile.
type Catalog struct {
	Version int            `json:"version"`
	Files   []CatalogEntry `json:"files"`
}

// CatalogEntry is one backed-up file.
type CatalogEntry struct {
	Path  string      `json:"path"` // slash-separated, relative
	File  string      `json:"file"` // its name in the backup
	Size  int64       `json:"size"`
	Mode  fs.FileMode `json:"mode"`
	MTime time.Time   `json:"mtime"`
}

// findBackup returns the read-only handle of DIR/NAME.
func findBackup(ctx context.Context, s *dedup.Storage, dir, name string) (storage.BackupHandle, error) {
	bhs, err := s.ListBackups(ctx, dir)
	if err != nil {
		return nil, err
	}
	for _, bh := range bhs {
		if bh.Name() == name {
			return bh, nil
		}
	}
	return nil, fmt.Errorf("no backup %s/%s: %w", dir, name, storage.ErrNotFound)
}

// withBackup opens the repository, finds the backup DIR/NAME named by arg,
// lists its files, and runs fn on them.
func (a *app) withBackup(ctx context.Context, arg string, fn func(s *dedup.Storage, bh storage.BackupHandle, files []CatalogEntry) error) error {
	dir, name, err := splitBackup(arg)
	if err != nil {
		return err
	}
	return a.withStorage(func(s *dedup.Storage) error {
		bh, err := findBackup(ctx, s, dir, name)
		if err != nil {
			return err
		}
		files, err := entries(ctx, s, bh)
		if err != nil {
			return err
		}
		return fn(s, bh, files)
	})
}

// entries lists a backup's files: from its catalog, or, for a backup
// without one, its stored files under their own names.
func entries(ctx context.Context, s *dedup.Storage, bh storage.BackupHandle) ([]CatalogEntry, error) {
	rc, err := bh.ReadFile(ctx, catalogFile)
	if errors.Is(err, storage.ErrNotFound) {
		files, err := s.Files(ctx, bh.Directory(), bh.Name())
		if err != nil {
			return nil, err
		}
		out := make([]CatalogEntry, len(files))
		for i, f := range files {
			out[i] = CatalogEntry{Path: f.Name, File: f.Name, Size: f.Size, Mode: 0o644}
		}
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var c Catalog
	data, err := io.ReadAll(io.LimitReader(rc, 256<<20))
	if err == nil {
		err = json.Unmarshal(data, &c)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s/%s: catalog: %w", bh.Directory(), bh.Name(), err)
	}
	for _, e := range c.Files {
		if !safePath(e.Path) {
			return nil, fmt.Errorf("backup %s/%s: catalog path %q reaches outside the target: %w", bh.Directory(), bh.Name(), e.Path, storage.ErrCorrupt)
		}
	}
	return c.Files, nil
}

// safePath reports whether p stays inside the directory it is joined to.
func safePath(p string) bool {
	return p != "" && !path.IsAbs(p) && path.Clean(p) == p && p != ".." && !strings.HasPrefix(p, "../") && !strings.Contains(p, "\\")
}

// selectEntries keeps the entries named by paths (a file's path, a
// directory prefix of it, or its stored name); all of them if paths is empty.
func selectEntries(all []CatalogEntry, paths []string) ([]CatalogEntry, error) {
	if len(paths) == 0 {
		return all, nil
	}
	var out []CatalogEntry
	for _, p := range paths {
		p = strings.TrimSuffix(p, "/")
		n := len(out)
		for _, e := range all {
			if e.Path == p || e.File == p || strings.HasPrefix(e.Path, p+"/") {
				out = append(out, e)
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("no file %s in the backup: %w", p, storage.ErrNotFound)
		}
	}
	return out, nil
}
