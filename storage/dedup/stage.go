package dedup

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/storage"
)

// Staging. A writer's Close does not wait for its file's packs: it stages
// the file, and the backup's end commits every staged file at once, after
// sealing the open pack and waiting for the packs the files need, in one
// index transaction. A backup of many small files thus fills packs to their
// size and commits once, instead of sealing a pack and committing per file.
// Staged files whose packs are written are also committed as they pile up,
// so that staging holds at most a few packs' worth of files in memory.
//
// The refs of a staged file's last segment stay claimed until it is
// committed (its earlier segments are in the index already, on an open
// list): a collection spares them meanwhile. Staging, committing and ending
// a backup run under the backup's lock.

// stagedFile is a closed file waiting for its packs to be indexed.
type stagedFile struct {
	commit index.Commit
	deps   []*pack // packs its chunks wait in
}

// stage holds the staged files of one backup.
type stage struct {
	files map[string]stagedFile
	err   error // a pack a staged file needed failed: the backup cannot end
}

// stageCommitBatch is how many staged files make Close commit those whose
// packs are written.
const stageCommitBatch = 4096

func stageKey(dir, name string) string { return dir + "\x00" + name }

// stageFile stages a closed file, replacing any staged file of its name;
// the caller holds the backup's lock. When enough files are staged, it
// commits those whose packs are written; a failure to do so is kept for
// the backup's end to return.
func (r *repo) stageFile(dir, name string, f stagedFile) {
	r.stageMu.Lock()
	st := r.staged[stageKey(dir, name)]
	if st == nil {
		st = &stage{files: map[string]stagedFile{}}
		r.staged[stageKey(dir, name)] = st
	}
	old, replaced := st.files[f.commit.File.Name]
	st.files[f.commit.File.Name] = f
	n := len(st.files)
	r.stageMu.Unlock()
	if replaced {
		r.dropStaged(old)
	}
	if n >= stageCommitBatch {
		if err := r.commitStaged(context.Background(), dir, name, false); err != nil && st.err == nil {
			st.err = err
		}
	}
}

// commitStaged commits the staged files of a backup. With all, it seals
// the open pack and waits for every pack they need; without, it commits
// those whose packs are written and leaves the rest staged. The caller
// holds the backup's lock. A failed pack fails this and every later
// commit of the backup: it can no longer end.
func (r *repo) commitStaged(ctx context.Context, dir, name string, all bool) error {
	r.stageMu.Lock()
	st := r.staged[stageKey(dir, name)]
	r.stageMu.Unlock()
	if st == nil {
		return nil
	}
	if st.err != nil {
		return st.err
	}
	var ready []stagedFile
	for _, f := range st.files {
		if all {
			for _, p := range f.deps {
				if err := r.seal(p); err != nil {
					return err
				}
			}
		}
		done, err := r.packsDone(ctx, f.deps, all)
		if err != nil {
			st.err = fmt.Errorf("dedup: %s/%s: file %s: %w", dir, name, f.commit.File.Name, err)
			return st.err
		}
		if done {
			ready = append(ready, f)
		}
	}
	if len(ready) == 0 {
		return nil
	}
	commits := make([]index.Commit, len(ready))
	for i, f := range ready {
		commits[i] = f.commit
	}
	slices.SortFunc(commits, func(a, b index.Commit) int { return cmp.Compare(a.File.Name, b.File.Name) })
	found, err := r.idx.CommitFiles(dir, name, commits)
	if err == nil && !found {
		err = storage.ErrAborted
	}
	if err != nil {
		return fmt.Errorf("dedup: %s/%s: commit files: %w", dir, name, err)
	}
	r.stageMu.Lock()
	for _, f := range ready {
		delete(st.files, f.commit.File.Name)
	}
	if len(st.files) == 0 {
		delete(r.staged, stageKey(dir, name))
	}
	r.stageMu.Unlock()
	for _, f := range ready {
		r.release(f.commit.Last.Refs)
	}
	return nil
}

// packsDone reports whether every pack of deps is written and indexed; with
// wait, it waits for them. It fails if one of them failed.
func (r *repo) packsDone(ctx context.Context, deps []*pack, wait bool) (bool, error) {
	for _, p := range deps {
		if !wait && !isClosed(p.done) {
			return false, nil
		}
		select {
		case <-p.done:
			if p.err != nil {
				return false, p.err
			}
		case <-ctx.Done():
			return false, context.Cause(ctx)
		}
	}
	return true, nil
}

// dropStage forgets the staged files of a removed or aborted backup; the
// caller holds the backup's lock.
func (r *repo) dropStage(dir, name string) {
	r.stageMu.Lock()
	st := r.staged[stageKey(dir, name)]
	delete(r.staged, stageKey(dir, name))
	r.stageMu.Unlock()
	if st != nil {
		for _, f := range st.files {
			r.dropStaged(f)
		}
	}
}

// dropStaged releases a staged file's claims and drops its open list.
func (r *repo) dropStaged(f stagedFile) {
	r.release(f.commit.Last.Refs)
	if f.commit.File.List != 0 {
		r.idx.DropList(f.commit.File.List)
	}
}

// isStaged reports whether a file of a backup is staged.
func (r *repo) isStaged(dir, name, file string) bool {
	r.stageMu.Lock()
	defer r.stageMu.Unlock()
	st := r.staged[stageKey(dir, name)]
	if st == nil {
		return false
	}
	_, ok := st.files[file]
	return ok
}
