package tree

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrExists is returned by Restore, before it writes anything, when an
// entry to restore exists under the target and overwriting was not asked.
var ErrExists = errors.New("exists under the target")

// RestoreOptions say how Restore works.
type RestoreOptions struct {
	// Overwrite replaces what exists under the target. Without it, Restore
	// refuses, before it writes anything, if any entry exists there (a
	// directory may: it is restored into).
	Overwrite bool
	// Open reads a stored file's data.
	Open func(ctx context.Context, stored string) (io.ReadCloser, error)
	// Progress, if set, is called with the bytes of each write.
	Progress func(n int)
}

// Failure is an entry Restore could not restore.
type Failure struct {
	Path Name
	Err  error
}

// Report says what Restore did.
type Report struct {
	Entries int   // entries restored
	Files   int   // regular files among them
	Bytes   int64 // file data written
	Failed  []Failure
	// NotPermitted counts entries whose owner (someone else) or extended
	// attributes (such as security.capability) only root can set, restored
	// without them by a restore not running as root.
	NotPermitted int
}

// Restore writes entries under target, parents listed before their
// contents, and returns what it restored and what failed. Every write goes
// through an os.Root of target: no path and no link, in the catalog or
// already under the target, leads outside it. Each entry is made under a
// temporary name and renamed into place once complete, with its mode,
// owner (when running as root) and times; directories get theirs last.
// Regular files are restored workers at a time. An entry that fails is
// reported in Report.Failed and the others are restored; the error is for
// what stops the whole restore.
func Restore(ctx context.Context, target string, entries []Entry, o RestoreOptions) (Report, error) {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return Report{}, err
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		return Report{}, err
	}
	defer root.Close()
	r := &restorer{root: root, o: o, owners: os.Geteuid() == 0, uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), done: map[Name]bool{}}
	if !o.Overwrite {
		for _, e := range entries {
			if err := r.free(e); err != nil {
				return Report{}, err
			}
		}
	}
	main := r.newWorker()
	defer main.close()
	work := make(chan Entry)
	var wg sync.WaitGroup
	for range restoreWorkers {
		wg.Go(func() {
			w := r.newWorker()
			defer w.close()
			for e := range work {
				w.restore(ctx, e)
			}
		})
	}
	var links, dirs []Entry
	for _, e := range entries {
		if ctx.Err() != nil {
			break
		}
		switch {
		case e.Type == File && e.HardLink == "":
			work <- e
		case e.Type == File:
			links = append(links, e) // once the files they link to are there
		default:
			if main.restore(ctx, e) && e.Type == Dir {
				dirs = append(dirs, e)
			}
		}
	}
	close(work)
	wg.Wait()
	for _, e := range links {
		main.restore(ctx, e)
	}
	if err := ctx.Err(); err != nil {
		return r.rep, err
	}
	for _, e := range slices.Backward(dirs) {
		p := string(e.Path)
		dr, err := main.dir(path.Dir(p))
		if err == nil {
			err = main.meta(dr, path.Base(p), e)
		}
		if err != nil {
			r.fail(e, err)
		}
	}
	return r.rep, nil
}

// restoreWorkers is how many regular files are restored at once: reads of
// the repository and writes of the target overlap.
const restoreWorkers = 4

type restorer struct {
	root     *os.Root
	o        RestoreOptions
	owners   bool
	uid, gid uint32

	mu   sync.Mutex
	done map[Name]bool // restored: directories need not be made again, hard links find their file
	rep  Report
}

func (r *restorer) fail(e Entry, err error) {
	r.mu.Lock()
	r.rep.Failed = append(r.rep.Failed, Failure{e.Path, err})
	r.mu.Unlock()
}

func (r *restorer) isDone(p Name) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done[p]
}

// free checks that restoring e replaces nothing.
func (r *restorer) free(e Entry) error {
	info, err := r.root.Lstat(string(e.Path))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case e.Type == Dir && info.IsDir():
		return nil
	}
	return fmt.Errorf("%s/%s: %w (restore with --overwrite to replace it)", r.root.Name(), e.Path, ErrExists)
}

// worker restores entries on one goroutine. It keeps the directories it
// last wrote into open, each as an os.Root, so that an entry costs
// operations on one name in its directory, not a walk from the target.
type worker struct {
	*restorer
	buf   []byte
	roots map[string]*os.Root
	order []string // of roots, oldest first
}

// dirCache is how many directories a worker keeps open.
const dirCache = 16

func (r *restorer) newWorker() *worker {
	return &worker{restorer: r, buf: make([]byte, 1<<20), roots: map[string]*os.Root{}}
}

func (w *worker) close() {
	for _, dr := range w.roots {
		dr.Close()
	}
}

// dir returns the directory dir of the target, opened.
func (w *worker) dir(dir string) (*os.Root, error) {
	if dir == "." {
		return w.root, nil
	}
	if dr, ok := w.roots[dir]; ok {
		return dr, nil
	}
	dr, err := w.root.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	if len(w.order) == dirCache {
		w.roots[w.order[0]].Close()
		delete(w.roots, w.order[0])
		w.order = w.order[1:]
	}
	w.roots[dir] = dr
	w.order = append(w.order, dir)
	return dr, nil
}

// restore restores one entry, or records why it could not.
func (w *worker) restore(ctx context.Context, e Entry) bool {
	if err := w.restoreEntry(ctx, e); err != nil {
		w.fail(e, err)
		return false
	}
	w.mu.Lock()
	w.done[e.Path] = true
	w.rep.Entries++
	w.mu.Unlock()
	return true
}

func (w *worker) restoreEntry(ctx context.Context, e Entry) error {
	p := string(e.Path)
	parent, base := path.Dir(p), path.Base(p)
	if parent != "." && !w.isDone(Name(parent)) {
		if err := w.root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	dr, err := w.dir(parent)
	if err != nil {
		return err
	}
	if e.Type == Dir {
		err := dr.Mkdir(base, 0o700)
		if errors.Is(err, fs.ErrExist) {
			if info, lerr := dr.Lstat(base); lerr == nil && info.IsDir() {
				return nil
			}
		}
		return err
	}
	tmp := ".dedupctl-restore-" + rand.Text()
	linked := e.HardLink != "" && w.isDone(e.HardLink)
	if linked {
		err = w.root.Link(string(e.HardLink), path.Join(parent, tmp))
	} else {
		err = w.create(ctx, dr, tmp, e)
	}
	if err == nil && !linked {
		err = w.meta(dr, tmp, e)
	}
	if err == nil {
		err = dr.Rename(tmp, base)
	}
	if err != nil {
		dr.Remove(tmp)
		return err
	}
	return nil
}

// create makes e as name in dr, without its metadata.
func (w *worker) create(ctx context.Context, dr *os.Root, name string, e Entry) error {
	switch e.Type {
	case File:
		return w.writeFile(ctx, dr, name, e)
	case Symlink:
		return dr.Symlink(string(e.Target), name)
	case FIFO:
		return mknod(dr, name, unix.S_IFIFO, 0)
	case Char:
		return mknod(dr, name, unix.S_IFCHR, e.Rdev)
	case Block:
		return mknod(dr, name, unix.S_IFBLK, e.Rdev)
	}
	return fmt.Errorf("unknown type %q", e.Type)
}

func (w *worker) writeFile(ctx context.Context, dr *os.Root, name string, e Entry) error {
	rc, err := w.o.Open(ctx, e.Stored)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := dr.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := w.copy(f, rc, e.Sparse)
	if err == nil && e.Sparse {
		err = f.Truncate(n) // a hole at the end
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	w.mu.Lock()
	w.rep.Bytes += n
	if err == nil {
		w.rep.Files++
	}
	w.mu.Unlock()
	return err
}

// sparseBlock is the unit in which runs of zeros become holes.
const sparseBlock = 4096

var zeros [sparseBlock]byte

// copy writes src into f; with sparse, blocks of zeros are skipped, left
// as holes.
func (w *worker) copy(f *os.File, src io.Reader, sparse bool) (int64, error) {
	var off int64
	for {
		n, err := io.ReadFull(src, w.buf)
		b := w.buf[:n]
		for len(b) > 0 {
			k := min(len(b), sparseBlock)
			if !sparse || !bytes.Equal(b[:k], zeros[:k]) {
				if !sparse {
					k = len(b)
				}
				if _, werr := f.WriteAt(b[:k], off); werr != nil {
					return off, werr
				}
				if w.o.Progress != nil {
					w.o.Progress(k)
				}
			}
			off += int64(k)
			b = b[k:]
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// meta gives name in dr e's owner, mode, extended attributes and times.
// Ownership first: changing it clears setuid, setgid and capabilities.
func (w *worker) meta(dr *os.Root, name string, e Entry) error {
	if w.owners {
		if err := dr.Lchown(name, int(e.UID), int(e.GID)); err != nil {
			return err
		}
	}
	denied, err := w.modeAndXAttrs(dr, name, e)
	if err != nil {
		return err
	}
	if denied || !w.owners && (e.UID != w.uid || e.GID != w.gid) {
		w.mu.Lock()
		w.rep.NotPermitted++
		w.mu.Unlock()
	}
	if e.Type == Symlink {
		ts := []unix.Timespec{unix.NsecToTimespec(e.MTime.UnixNano()), unix.NsecToTimespec(e.MTime.UnixNano())}
		return at(dr, name, func(dir int) error { return unix.UtimesNanoAt(dir, name, ts, unix.AT_SYMLINK_NOFOLLOW) })
	}
	return dr.Chtimes(name, e.MTime, e.MTime)
}

// modeAndXAttrs gives name in dr e's mode (but for a symlink, which has
// none) and extended attributes, in that order: a mode set after a POSIX
// ACL would change its mask. It reports whether an attribute only root may
// set was left out, the restore not running as root.
func (w *worker) modeAndXAttrs(dr *os.Root, name string, e Entry) (denied bool, err error) {
	if e.Type != Symlink {
		if err := dr.Chmod(name, e.FileMode()); err != nil {
			return false, err
		}
	}
	if len(e.XAttrs) == 0 {
		return false, nil
	}
	err = at(dr, name, func(dir int) error {
		// The directory's descriptor, named through /proc, and one part:
		// nothing is resolved outside the target, and lsetxattr does not
		// follow a link.
		p := fmt.Sprintf("/proc/self/fd/%d/%s", dir, name)
		for _, k := range slices.Sorted(maps.Keys(e.XAttrs)) {
			err := unix.Lsetxattr(p, k, e.XAttrs[k], 0)
			if errors.Is(err, unix.EPERM) && !w.owners {
				denied = true
				continue
			}
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		return nil
	})
	return denied, err
}

func mknod(dr *os.Root, name string, typ uint32, rdev uint64) error {
	return at(dr, name, func(dir int) error { return unix.Mknodat(dir, name, typ|0o600, int(rdev)) })
}

// at runs fn on dr's descriptor, for the calls on name (one part) that
// os.Root does not have.
func at(dr *os.Root, name string, fn func(dir int) error) error {
	d, err := dr.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	if err := fn(int(d.Fd())); err != nil {
		return &fs.PathError{Op: "restore", Path: name, Err: err}
	}
	return nil
}
