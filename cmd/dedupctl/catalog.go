package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/tree"
)

// catalogFile is the backup file in which dedupctl records the tree it
// backed up (see package tree): backup file names are alphanumerics and
// hyphens, so the data of regular file i is stored as "i" and the catalog
// maps it to its path. Backups written by agents (Vitess) have no catalog;
// their stored names are their paths.
const catalogFile = "CATALOG"

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
// lists its entries, and runs fn on them.
func (a *app) withBackup(ctx context.Context, arg string, fn func(s *dedup.Storage, bh storage.BackupHandle, entries []tree.Entry) error) error {
	dir, name, err := splitBackup(arg)
	if err != nil {
		return err
	}
	return a.withStorage(func(s *dedup.Storage) error {
		bh, err := findBackup(ctx, s, dir, name)
		if err != nil {
			return err
		}
		entries, err := readCatalog(ctx, s, bh)
		if err != nil {
			return err
		}
		return fn(s, bh, entries)
	})
}

// readCatalog lists a backup's entries: from its catalog, or, for a backup
// without one, its stored files under their own names.
func readCatalog(ctx context.Context, s *dedup.Storage, bh storage.BackupHandle) ([]tree.Entry, error) {
	rc, err := bh.ReadFile(ctx, catalogFile)
	if errors.Is(err, storage.ErrNotFound) {
		files, err := s.Files(ctx, bh.Directory(), bh.Name())
		if err != nil {
			return nil, err
		}
		out := make([]tree.Entry, len(files))
		for i, f := range files {
			out[i] = tree.Entry{Path: tree.Name(f.Name), Type: tree.File, Stored: f.Name, Size: f.Size, Mode: 0o644, UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
		}
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	entries, err := tree.Read(rc)
	if errors.Is(err, tree.ErrCatalog) {
		err = fmt.Errorf("%w (%w)", err, storage.ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s/%s: catalog: %w", bh.Directory(), bh.Name(), err)
	}
	return entries, nil
}

// selectEntries keeps the entries named by paths (an entry's path, with or
// without a leading slash, and everything under it); all if paths is empty.
func selectEntries(all []tree.Entry, paths []string) ([]tree.Entry, error) {
	if len(paths) == 0 {
		return all, nil
	}
	var out []tree.Entry
	for _, p := range paths {
		p = strings.Trim(p, "/")
		n := len(out)
		for _, e := range all {
			if string(e.Path) == p || strings.HasPrefix(string(e.Path), p+"/") {
				out = append(out, e)
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("no file %s in the backup: %w", p, storage.ErrNotFound)
		}
	}
	return out, nil
}
