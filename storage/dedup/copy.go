package dedup

import (
	"context"
	"fmt"
	"slices"

	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/storage"
)

// FileRef names a file of a backup.
type FileRef struct {
	Dir, Name, File string
}

// CopyFile adds file to the running backup dir/name with the content of
// the file from, without reading or writing any data: the new file refers
// to the same chunks, each checked to be in the repository (indexed, in a
// pack no collection has condemned) and claimed, so that a collection
// spares it, as a writer's chunks are. This is what a files cache needs:
// a file unchanged since the previous backup costs a few index reads.
//
// Like a writer's Close, CopyFile stages the file: it is durable and part
// of the backup when the backup ends, and replaces any earlier file of its
// name. The error wraps storage.ErrNotFound if from, or one of its chunks,
// is not in the repository (write the file instead), and storage.ErrAborted
// if the backup is not running.
func (s *Storage) CopyFile(ctx context.Context, dir, name, file string, from FileRef) error {
	if err := storage.ValidateBackupName(dir, name); err != nil {
		return err
	}
	if err := storage.ValidateFileName(file); err != nil {
		return err
	}
	r, err := s.openWritable(ctx)
	if err != nil {
		return err
	}
	if err := r.copyFile(ctx, dir, name, file, from); err != nil {
		return fmt.Errorf("dedup: copy %s/%s/%s to %s/%s/%s: %w", from.Dir, from.Name, from.File, dir, name, file, asStorageErr(err))
	}
	return nil
}

func (r *repo) copyFile(ctx context.Context, dir, name, file string, from FileRef) error {
	src, found, err := r.idx.File(from.Dir, from.Name, from.File)
	if err != nil {
		return err
	}
	if !found {
		return storage.ErrNotFound
	}
	// The list is copied segment by segment, each checked and claimed;
	// every segment but the last is stored at once, on an open list.
	f := stagedFile{commit: index.Commit{File: index.File{Name: file, Size: src.Size, Chunks: src.Chunks}}}
	var last []index.Ref
	fail := func(err error) error {
		r.release(last)
		if f.commit.File.List != 0 {
			r.idx.DropList(f.commit.File.List)
		}
		return err
	}
	var refs []index.Ref
	for seg := uint32(0); int64(seg)*index.SegmentRefs < src.Chunks; seg++ {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		var found bool
		refs, found, err = r.idx.Segment(src.List, seg, refs[:0])
		if err == nil && !found {
			err = fmt.Errorf("index: file %s/%s/%s: segment %d of its list is missing: %w", from.Dir, from.Name, from.File, seg, index.ErrDamaged)
		}
		if err != nil {
			return fail(err)
		}
		if len(last) > 0 {
			list, err := r.idx.PutSegment(f.commit.File.List, index.Segment{Seq: f.commit.Last.Seq, Refs: last})
			if err != nil {
				return fail(err)
			}
			f.commit.File.List = list
			r.release(last)
			last = last[:0]
			f.commit.Last.Seq++
		}
		if err := r.claimUsable(refs); err != nil {
			return fail(err)
		}
		last = append(last, refs...)
	}
	f.commit.Last.Refs = last
	l := r.backupLock(dir, name)
	l.Lock()
	defer l.Unlock()
	b, found, err := r.idx.Backup(dir, name)
	if err == nil && (!found || b.State == index.Ended) {
		err = storage.ErrAborted
	}
	if err != nil {
		return fail(err)
	}
	r.stageFile(dir, name, f)
	return nil
}

// claimUsable claims the chunks of refs if every one is usable, with the
// check and the claims under r.mu, as a writer's lookup.
func (r *repo) claimUsable(refs []index.Ref) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	missing, all, err := r.idx.AllUsable(refs)
	if err != nil {
		return err
	}
	if !all {
		return fmt.Errorf("chunk %s: %w", missing, storage.ErrNotFound)
	}
	for _, ref := range refs {
		r.claimLocked(ref.ID)
	}
	return nil
}

// SameContent reports whether two committed files have the same content,
// comparing their chunk lists, not their data. The error wraps
// storage.ErrNotFound if either is not there.
func (s *Storage) SameContent(ctx context.Context, a, b FileRef) (bool, error) {
	r, err := s.open(ctx)
	if err != nil {
		return false, err
	}
	fa, foundA, err := r.idx.File(a.Dir, a.Name, a.File)
	if err != nil {
		return false, asStorageErr(err)
	}
	fb, foundB, err := r.idx.File(b.Dir, b.Name, b.File)
	if err != nil {
		return false, asStorageErr(err)
	}
	if !foundA || !foundB {
		return false, fmt.Errorf("dedup: compare %v with %v: %w", a, b, storage.ErrNotFound)
	}
	if fa.Size != fb.Size || fa.Chunks != fb.Chunks {
		return false, nil
	}
	var ra, rb []index.Ref
	for seg := uint32(0); int64(seg)*index.SegmentRefs < fa.Chunks; seg++ {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if ra, _, err = r.idx.Segment(fa.List, seg, ra[:0]); err != nil {
			return false, asStorageErr(err)
		}
		if rb, _, err = r.idx.Segment(fb.List, seg, rb[:0]); err != nil {
			return false, asStorageErr(err)
		}
		if !slices.Equal(ra, rb) {
			return false, nil
		}
	}
	return true, nil
}
