// Package local is a chunkstore.Backend on a local directory, including one
// on NFS: one file per object, written through a temporary file that is
// fsynced and renamed into place. It passes chunkstore/backendtest.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/dedupstore/dedupstore/chunkstore"
)

// TempPrefix marks files that Backend.Put has not yet renamed into place. They
// are not listed as objects; a crash can leave them behind.
const TempPrefix = ".tmp-"

// Backend is a chunkstore.Backend on a local directory: one file per object.
//
// Put writes a temporary file in the target directory, fsyncs it, renames it
// into place and fsyncs the directory, so a Put that returned nil survives a
// crash and a crash during Put leaves at most a temporary file.
type Backend struct {
	root  string
	packs packFiles
}

// Close closes the files of the packs the backend keeps open (see
// packFiles); readers still open keep theirs until they close. The backend
// stays usable.
func (l *Backend) Close() error {
	l.packs.closeAll()
	return nil
}

// New returns a backend rooted at dir. The directory is created on the
// first Put if it does not exist.
func New(dir string) *Backend { return &Backend{root: dir} }

func (l *Backend) path(name string) (string, error) {
	if err := chunkstore.CheckObjectName(name); err != nil {
		return "", err
	}
	return filepath.Join(l.root, filepath.FromSlash(name)), nil
}

// Put implements chunkstore.Backend.
func (l *Backend) Put(ctx context.Context, name string, r io.Reader) error {
	return l.write(ctx, name, r, os.Rename)
}

// Create implements Backend with a hard link, which fails if the name
// exists, also on NFS.
func (l *Backend) Create(ctx context.Context, name string, r io.Reader) error {
	return l.write(ctx, name, r, func(tmp, p string) error {
		err := os.Link(tmp, p)
		os.Remove(tmp)
		if errors.Is(err, fs.ErrExist) {
			return chunkstore.ErrExist
		}
		return err
	})
}

// write stores r in a temporary file in the object's directory, fsyncs it,
// moves it into place with place and fsyncs the directory.
func (l *Backend) write(ctx context.Context, name string, r io.Reader, place func(tmp, p string) error) error {
	p, err := l.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("chunkstore: put %s: %w", name, err)
	}
	f, err := os.CreateTemp(dir, TempPrefix+"*")
	if err != nil {
		return fmt.Errorf("chunkstore: put %s: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("chunkstore: put %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("chunkstore: put %s: fsync: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("chunkstore: put %s: %w", name, err)
	}
	if err := place(f.Name(), p); err != nil {
		return fmt.Errorf("chunkstore: put %s: %w", name, err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("chunkstore: put %s: fsync directory: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Get implements chunkstore.Backend.
func (l *Backend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := l.path(name)
	if err != nil {
		return nil, err
	}
	if length >= 0 && strings.HasPrefix(name, chunkstore.PackPrefix) {
		pf, err := l.packs.open(p)
		if err != nil {
			return nil, getErr(name, err)
		}
		return &rangeReader{r: io.NewSectionReader(pf.f, offset, length), name: name, length: length,
			close: func(failed bool) { l.packs.release(pf, failed) }}, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, getErr(name, err)
	}
	if length < 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("chunkstore: get %s: %w", name, err)
		}
		return f, nil
	}
	return &rangeReader{r: io.NewSectionReader(f, offset, length), name: name, length: length,
		close: func(bool) { f.Close() }}, nil
}

func getErr(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("chunkstore: get %s: %w", name, chunkstore.ErrNotExist)
	}
	return fmt.Errorf("chunkstore: get %s: %w", name, err)
}

// rangeReader reads a section of a file and reports a short object as an
// error instead of a silent early EOF.
type rangeReader struct {
	r      *io.SectionReader
	name   string
	length int64
	close  func(failed bool) // once, by Close
	failed bool              // a read failed
	closed bool
}

func (r *rangeReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err == io.EOF {
		if pos, _ := r.r.Seek(0, io.SeekCurrent); pos < r.length {
			err = fmt.Errorf("chunkstore: get %s: object shorter than requested range: %w", r.name, io.ErrUnexpectedEOF)
		}
	}
	r.failed = r.failed || err != nil && err != io.EOF
	return n, err
}

func (r *rangeReader) Close() error {
	if !r.closed {
		r.closed = true
		r.close(r.failed)
	}
	return nil
}

// List implements chunkstore.Backend. Directories whose names all sort
// before after are not read.
func (l *Backend) List(ctx context.Context, prefix, after string, fn func(chunkstore.ObjectInfo) error) error {
	// Walk the deepest directory the prefix names in full.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i]
	}
	start := l.root
	if base != "" {
		if err := chunkstore.CheckObjectName(base); err != nil {
			return err
		}
		start = filepath.Join(l.root, filepath.FromSlash(base))
	}
	keep := func(name string, temp bool) bool { return !temp && strings.HasPrefix(name, prefix) && name > after }
	if err := l.walk(ctx, start, after, keep, fn); err != nil {
		return fmt.Errorf("chunkstore: list %q: %w", prefix, err)
	}
	return nil
}

// walk calls fn for every file under start whose name (slash-separated,
// relative to the root) keep accepts; temp says the file is a Put's
// temporary one. Directories holding only names up to after are skipped.
// Files that vanish while listed are passed over.
func (l *Backend) walk(ctx context.Context, start, after string, keep func(name string, temp bool) bool, fn func(chunkstore.ObjectInfo) error) error {
	return filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if d.IsDir() {
			// Every name under it starts with name+"/".
			if p != start && name+"/" < after && !strings.HasPrefix(after, name+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !keep(name, strings.HasPrefix(d.Name(), TempPrefix)) {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted or renamed while listing
		}
		if err != nil {
			return err
		}
		return fn(chunkstore.ObjectInfo{Name: name, Size: info.Size(), ModTime: info.ModTime()})
	})
}

// Delete implements chunkstore.Backend.
func (l *Backend) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(name)
	if err != nil {
		return err
	}
	err = os.Remove(p)
	l.packs.drop(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("chunkstore: delete %s: %w", name, err)
	}
	return nil
}

// ListPartial implements Backend: the temporary files of Puts, named by
// their paths.
func (l *Backend) ListPartial(ctx context.Context, fn func(chunkstore.ObjectInfo) error) error {
	if err := l.walk(ctx, l.root, "", func(_ string, temp bool) bool { return temp }, fn); err != nil {
		return fmt.Errorf("chunkstore: list partial writes: %w", err)
	}
	return nil
}

// DeletePartial implements chunkstore.Backend.
func (l *Backend) DeletePartial(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := l.path(name)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(filepath.Base(p), TempPrefix) {
		return fmt.Errorf("chunkstore: %q is not a partial write", name)
	}
	err = os.Remove(p)
	l.packs.drop(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("chunkstore: delete %s: %w", name, err)
	}
	return nil
}

// ctxReader fails a copy once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
