package gc

import (
	"context"
	"fmt"

	"github.com/dedupstore/dedupstore/index"
)

// FileStats describe one file of a backup.
type FileStats struct {
	Name   string
	Size   int64
	Chunks int64
	// StoredBytes is the stored size of the file's distinct chunks.
	StoredBytes int64
	// ExclusiveBytes is the part of StoredBytes no other backup uses: what
	// this file cost the repository beyond what was already there.
	ExclusiveBytes int64
}

// BackupFiles describes the files of one backup; found is false if there is
// no such backup. Its memory is about 16 bytes per chunk of the repository.
func BackupFiles(ctx context.Context, idx *index.DB, dir, name string) (files []FileStats, found bool, err error) {
	records, found, err := idx.Files(dir, name)
	if err != nil || !found {
		return nil, found, err
	}
	backups, err := idx.Backups("", true)
	if err != nil {
		return nil, true, err
	}
	others := liveSet{}
	for _, b := range backups {
		if b.Dir == dir && b.Name == name {
			continue
		}
		err := forEachRef(ctx, idx, b.Dir, b.Name, func(_ index.File, r index.Ref) { others[key(r.ID)] = struct{}{} })
		if err != nil {
			return nil, true, err
		}
	}
	for _, f := range records {
		fs := FileStats{Name: f.Name, Size: f.Size, Chunks: f.Chunks}
		seen := liveSet{}
		err := idx.ListRefs(f.List, func(refs []index.Ref) error {
			for _, r := range refs {
				if seen.has(r.ID) {
					continue
				}
				seen[key(r.ID)] = struct{}{}
				loc, ok, err := idx.Lookup(r.ID)
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("gc: file %s: chunk %s is not indexed", f.Name, r.ID)
				}
				fs.StoredBytes += int64(loc.Length)
				if !others.has(r.ID) {
					fs.ExclusiveBytes += int64(loc.Length)
				}
			}
			return ctx.Err()
		})
		if err != nil {
			return nil, true, err
		}
		files = append(files, fs)
	}
	return files, true, nil
}

// forEachRef calls fn for every ref of every committed file of a backup.
func forEachRef(ctx context.Context, idx *index.DB, dir, name string, fn func(index.File, index.Ref)) error {
	files, _, err := idx.Files(dir, name)
	if err != nil {
		return err
	}
	for _, f := range files {
		err := idx.ListRefs(f.List, func(refs []index.Ref) error {
			for _, r := range refs {
				fn(f, r)
			}
			return ctx.Err()
		})
		if err != nil {
			return fmt.Errorf("gc: %s/%s: %w", dir, name, err)
		}
	}
	return nil
}
