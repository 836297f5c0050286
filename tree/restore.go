package tree

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"

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
	// OwnersNotRestored counts entries owned by someone else, whose owner a
	// restore that does not run as root cannot set.
	OwnersNotRestored int
}

// Restore writes entries under target, parents listed before their
// contents, and returns what it restored and what failed. Every write goes
// through an os.Root of target: no path and no link, in the catalog or
// already under the target, leads outside it. Each entry is made under a
// temporary name and renamed into place once complete, with its mode,
// owner (when running as root) and times; directories get theirs last.
// An entry that fails is reported in Report.Failed and the others are
// restored; the error is for what stops the whole restore.
func Restore(ctx context.Context, target string, entries []Entry, o RestoreOptions) (Report, error) {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return Report{}, err
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		return Report{}, err
	}
	defer root.Close()
	r := &restorer{root: root, o: o, owners: os.Geteuid() == 0, uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), done: map[Name]bool{}, buf: make([]byte, 1<<20)}
	if !o.Overwrite {
		for _, e := range entries {
			if err := r.free(e); err != nil {
				return Report{}, err
			}
		}
	}
	var dirs []Entry
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return r.rep, err
		}
		if err := r.restore(ctx, e); err != nil {
			r.rep.Failed = append(r.rep.Failed, Failure{e.Path, err})
			continue
		}
		r.done[e.Path] = true
		r.rep.Entries++
		if e.Type == Dir {
			dirs = append(dirs, e)
		}
	}
	for _, e := range slices.Backward(dirs) {
		if err := r.meta(string(e.Path), e); err != nil {
			r.rep.Failed = append(r.rep.Failed, Failure{e.Path, err})
		}
	}
	return r.rep, nil
}

type restorer struct {
	root     *os.Root
	o        RestoreOptions
	owners   bool
	uid, gid uint32
	done     map[Name]bool // restored, for hard links to find
	rep      Report
	buf      []byte
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

func (r *restorer) restore(ctx context.Context, e Entry) error {
	p := string(e.Path)
	if err := r.root.MkdirAll(path.Dir(p), 0o755); err != nil {
		return err
	}
	if e.Type == Dir {
		err := r.root.Mkdir(p, 0o700)
		if errors.Is(err, fs.ErrExist) {
			if info, lerr := r.root.Lstat(p); lerr == nil && info.IsDir() {
				return nil
			}
		}
		return err
	}
	tmp := path.Join(path.Dir(p), ".dedupctl-restore-"+rand.Text())
	err := r.create(ctx, tmp, e)
	if err == nil && (e.HardLink == "" || !r.done[e.HardLink]) {
		err = r.meta(tmp, e)
	}
	if err == nil {
		err = r.root.Rename(tmp, p)
	}
	if err != nil {
		r.root.Remove(tmp)
		return err
	}
	return nil
}

// create makes e at name, without its metadata.
func (r *restorer) create(ctx context.Context, name string, e Entry) error {
	switch e.Type {
	case File:
		if e.HardLink != "" && r.done[e.HardLink] {
			return r.root.Link(string(e.HardLink), name)
		}
		return r.writeFile(ctx, name, e)
	case Symlink:
		return r.root.Symlink(string(e.Target), name)
	case FIFO:
		return r.mknod(name, unix.S_IFIFO, 0)
	case Char:
		return r.mknod(name, unix.S_IFCHR, e.Rdev)
	case Block:
		return r.mknod(name, unix.S_IFBLK, e.Rdev)
	}
	return fmt.Errorf("unknown type %q", e.Type)
}

func (r *restorer) writeFile(ctx context.Context, name string, e Entry) error {
	rc, err := r.o.Open(ctx, e.Stored)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := r.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := r.copy(f, rc, e.Sparse)
	if err == nil && e.Sparse {
		err = f.Truncate(n) // a hole at the end
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	r.rep.Bytes += n
	if err == nil {
		r.rep.Files++
	}
	return err
}

// sparseBlock is the unit in which runs of zeros become holes.
const sparseBlock = 4096

var zeros [sparseBlock]byte

// copy writes src into f; with sparse, blocks of zeros are skipped, left
// as holes.
func (r *restorer) copy(f *os.File, src io.Reader, sparse bool) (int64, error) {
	var off int64
	for {
		n, err := io.ReadFull(src, r.buf)
		b := r.buf[:n]
		for len(b) > 0 {
			k := min(len(b), sparseBlock)
			if !sparse || !bytes.Equal(b[:k], zeros[:k]) {
				if !sparse {
					k = len(b)
				}
				if _, werr := f.WriteAt(b[:k], off); werr != nil {
					return off, werr
				}
				if r.o.Progress != nil {
					r.o.Progress(k)
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

// meta gives name e's owner, mode and times. Ownership first: changing it
// clears setuid and setgid.
func (r *restorer) meta(name string, e Entry) error {
	if r.owners {
		if err := r.root.Lchown(name, int(e.UID), int(e.GID)); err != nil {
			return err
		}
	} else if e.UID != r.uid || e.GID != r.gid {
		r.rep.OwnersNotRestored++
	}
	if e.Type == Symlink {
		ts := []unix.Timespec{unix.NsecToTimespec(e.MTime.UnixNano()), unix.NsecToTimespec(e.MTime.UnixNano())}
		return r.at(name, func(dir int, base string) error {
			return unix.UtimesNanoAt(dir, base, ts, unix.AT_SYMLINK_NOFOLLOW)
		})
	}
	if err := r.root.Chmod(name, e.FileMode()); err != nil {
		return err
	}
	return r.root.Chtimes(name, e.MTime, e.MTime)
}

func (r *restorer) mknod(name string, typ uint32, rdev uint64) error {
	return r.at(name, func(dir int, base string) error {
		return unix.Mknodat(dir, base, typ|0o600, int(rdev))
	})
}

// at runs fn on name's directory, opened through the root, and name's last
// part: for the calls os.Root does not have.
func (r *restorer) at(name string, fn func(dir int, base string) error) error {
	d, err := r.root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := fn(int(d.Fd()), path.Base(name)); err != nil {
		return &fs.PathError{Op: "restore", Path: name, Err: err}
	}
	return nil
}
