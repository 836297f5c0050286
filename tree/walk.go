package tree

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrChanged is returned by Open when the file on disk is no longer the one
// the walk listed: replaced, or made a link, a FIFO or a device.
var ErrChanged = errors.New("changed since it was listed")

// Source is an entry of a tree to back up, with its path on disk.
type Source struct {
	Entry
	Disk string
}

// WalkOptions say what Walk leaves out.
type WalkOptions struct {
	// Exclude holds patterns of path.Match. A pattern without a slash
	// matches an entry's name, one with a slash its absolute path; an
	// excluded directory is left out with everything under it.
	Exclude []string
	// OneFileSystem stays on the file system of each path given: a mount
	// point under it is listed, empty.
	OneFileSystem bool
	// Skip is told of every path that cannot be listed, and left out.
	Skip func(path string, err error)
}

// Walk lists the trees at paths, each under its absolute path, with the
// directories above it, parents before their contents. A path given twice,
// or inside another given path, is listed once. Regular files are numbered
// in Stored in the order listed; a hard link to a file listed before shares
// its Stored. What cannot be listed inside a tree is passed to o.Skip and
// left out; a path that cannot be listed at all is an error, as is a bad
// pattern (path.ErrBadPattern).
func Walk(paths []string, o WalkOptions) ([]Source, error) {
	for _, p := range o.Exclude {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("--exclude %q: %w", p, err)
		}
	}
	var abs []string
	for _, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Lstat(a); err != nil {
			return nil, err
		}
		abs = append(abs, a)
	}
	slices.Sort(abs)
	w := &walker{o: o, seen: map[string]bool{}, links: map[[2]uint64]Entry{}}
	for i, a := range abs {
		if i > 0 && inside(a, abs[i-1]) {
			abs[i] = abs[i-1] // so that what follows is compared with the outer one
			continue
		}
		if err := w.ancestors(a); err != nil {
			return nil, err
		}
		w.dev = 0
		if err := filepath.WalkDir(a, w.visit); err != nil {
			return nil, err
		}
	}
	return w.out, nil
}

// excluded reports whether an exclude pattern matches p.
func (w *walker) excluded(p string) bool {
	for _, pat := range w.o.Exclude {
		target := filepath.Base(p)
		if strings.Contains(pat, "/") {
			target = p
		}
		if ok, _ := path.Match(pat, target); ok {
			return true
		}
	}
	return false
}

// inside reports whether path a is b or below it.
func inside(a, b string) bool {
	return a == b || strings.HasPrefix(a, strings.TrimSuffix(b, "/")+"/")
}

type walker struct {
	o     WalkOptions
	out   []Source
	seen  map[string]bool
	links map[[2]uint64]Entry // (dev, inode) of files with several links
	files int
	dev   uint64 // of the path being walked, once its root is listed
}

// ancestors lists the directories above a, outermost first, so that a
// restore gives them their modes, owners and times.
func (w *walker) ancestors(a string) error {
	var dirs []string
	for d := filepath.Dir(a); d != "/"; d = filepath.Dir(d) {
		dirs = append(dirs, d)
	}
	slices.Reverse(dirs)
	for _, d := range dirs {
		info, err := os.Lstat(d)
		if err != nil {
			return err
		}
		w.add(d, info)
	}
	return nil
}

func (w *walker) visit(p string, d fs.DirEntry, err error) error {
	if err != nil {
		if d == nil {
			return err // the path given itself
		}
		w.o.Skip(p, err) // a directory that cannot be read: it is kept, empty
		return nil
	}
	if w.excluded(p) {
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	}
	info, err := d.Info()
	if err != nil {
		w.o.Skip(p, err)
		return nil
	}
	st, _ := info.Sys().(*syscall.Stat_t)
	if st != nil && w.dev == 0 {
		w.dev = st.Dev
	}
	if p != "/" {
		w.add(p, info)
	}
	if w.o.OneFileSystem && d.IsDir() && st != nil && st.Dev != w.dev {
		return filepath.SkipDir // a mount point: listed, empty
	}
	return nil
}

// add lists one entry, once.
func (w *walker) add(p string, info fs.FileInfo) {
	if w.seen[p] {
		return
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		w.o.Skip(p, errors.New("no file status"))
		return
	}
	e := Entry{
		Path:  Name(strings.TrimPrefix(p, "/")),
		Mode:  st.Mode & 0o7777,
		UID:   st.Uid,
		GID:   st.Gid,
		MTime: info.ModTime(),
		Dev:   st.Dev,
		Inode: st.Ino,
		CTime: time.Unix(st.Ctim.Unix()),
	}
	switch m := info.Mode(); {
	case m.IsRegular():
		e.Type, e.Size = File, st.Size
		e.Sparse = st.Blocks*512 < st.Size
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := w.links[key]; ok {
			e.HardLink, e.Stored = first.Path, first.Stored
			break
		}
		e.Stored = strconv.Itoa(w.files)
		w.files++
		if st.Nlink > 1 {
			w.links[key] = e
		}
	case m.IsDir():
		e.Type = Dir
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			w.o.Skip(p, err)
			return
		}
		e.Type, e.Target = Symlink, Name(target)
	case m&fs.ModeNamedPipe != 0:
		e.Type = FIFO
	case m&fs.ModeCharDevice != 0:
		e.Type, e.Rdev = Char, st.Rdev
	case m&fs.ModeDevice != 0:
		e.Type, e.Rdev = Block, st.Rdev
	default:
		w.o.Skip(p, fmt.Errorf("a %v is not backed up", m.Type()))
		return
	}
	xattrs, err := readXAttrs(p)
	if err != nil {
		w.o.Skip(p, err)
		return
	}
	e.XAttrs = xattrs
	w.seen[p] = true
	w.out = append(w.out, Source{Entry: e, Disk: p})
}

// readXAttrs reads the extended attributes of p, not following a link; nil
// if it has none or its file system has none.
func readXAttrs(p string) (map[string][]byte, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	for errors.Is(err, unix.ERANGE) {
		buf = make([]byte, 2*len(buf))
		n, err = unix.Llistxattr(p, buf)
	}
	if errors.Is(err, unix.ENOTSUP) || n == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, &fs.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	out := map[string][]byte{}
	for name := range strings.SplitSeq(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00") {
		v := make([]byte, 256)
		k, err := unix.Lgetxattr(p, name, v)
		for errors.Is(err, unix.ERANGE) {
			v = make([]byte, 2*len(v))
			k, err = unix.Lgetxattr(p, name, v)
		}
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, &fs.PathError{Op: "lgetxattr " + name, Path: p, Err: err}
		}
		out[name] = v[:k]
	}
	return out, nil
}

// Open opens a listed regular file for reading. It never follows a link and
// never waits on a FIFO, and it fails with ErrChanged unless the file opened
// is the one listed.
func Open(s Source) (*os.File, error) {
	f, err := os.OpenFile(s.Disk, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s: %w", s.Disk, ErrChanged)
		}
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	st, _ := info.Sys().(*syscall.Stat_t)
	if !info.Mode().IsRegular() || st == nil || st.Dev != s.Dev || st.Ino != s.Inode {
		f.Close()
		return nil, fmt.Errorf("%s: %w", s.Disk, ErrChanged)
	}
	return f, nil
}
