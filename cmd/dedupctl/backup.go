package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

type backupOptions struct {
	stdin       bool
	name        string
	concurrency int
}

func (a *app) backupCommand() *cobra.Command {
	var o backupOptions
	cmd := &cobra.Command{
		Use:   "backup DIR/NAME PATH... | backup DIR/NAME --stdin --name FILE",
		Short: "Back up files and directory trees, or standard input",
		Long: `Back up files and directory trees as backup NAME in directory DIR, or, with
--stdin, a stream as the file --name:

  mariabackup --backup --stream=xbstream | dedupctl backup db1/0/2026-11-25 --stdin --name xbstream

Send uncompressed data: compressed input cannot deduplicate. Paths are kept
relative to the parent of each PATH. Ctrl-C aborts the backup; nothing of it
is kept.`,
		Args: minArgs(1, "DIR/NAME and the paths to back up"),
		RunE: func(cmd *cobra.Command, args []string) error { return a.runBackup(cmd.Context(), o, args) },
	}
	cmd.Flags().BoolVar(&o.stdin, "stdin", false, "back up standard input")
	cmd.Flags().StringVar(&o.name, "name", "", "with --stdin: the file name to store it as")
	cmd.Flags().IntVar(&o.concurrency, "concurrency", 4, "files backed up at once")
	return cmd
}

// source is one thing to back up.
type source struct {
	entry CatalogEntry
	open  func() (io.ReadCloser, error)
}

func (a *app) runBackup(ctx context.Context, o backupOptions, args []string) error {
	dir, name, err := splitBackup(args[0])
	if err != nil {
		return err
	}
	var sources []source
	switch {
	case o.stdin && (o.name == "" || len(args) > 1):
		return usagef("--stdin takes --name FILE and no paths")
	case o.stdin:
		// A read of standard input waits for its writer and cannot be
		// cancelled; an interrupt must not wait with it. The copy goroutine
		// may stay blocked: the process is about to exit.
		pr, pw := io.Pipe()
		go func() { _, err := io.Copy(pw, a.stdin); pw.CloseWithError(err) }()
		defer context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })()
		sources = []source{{entry: CatalogEntry{Path: o.name, File: "0", Size: -1, Mode: 0o644, MTime: time.Now()}, open: func() (io.ReadCloser, error) { return pr, nil }}}
	case len(args) == 1:
		return usagef("backup takes paths to back up, or --stdin --name FILE")
	default:
		if sources, err = a.walk(args[1:]); err != nil {
			return err
		}
	}
	if o.concurrency < 1 {
		return usagef("--concurrency must be at least 1")
	}
	return a.withStorage(func(s *dedup.Storage) error { return a.store(ctx, s, dir, name, sources, o) })
}

// store writes sources as backup dir/name and reports what it cost.
func (a *app) store(ctx context.Context, s *dedup.Storage, dir, name string, sources []source, o backupOptions) error {
	before, err := s.Stats(ctx)
	if err != nil {
		return err
	}

	start := time.Now()
	bh, err := s.StartBackup(ctx, dir, name)
	if err != nil {
		return err
	}
	var total int64
	for _, src := range sources {
		total += src.entry.Size
	}
	if o.stdin {
		total = -1
	}
	bar := a.progress(total, "backup")
	written, err := a.addAll(ctx, bh, sources, o.concurrency, bar)
	if err == nil {
		err = writeCatalog(ctx, bh, sources)
	}
	if err == nil {
		err = bh.EndBackup(ctx)
	}
	bar.done()
	if err != nil {
		abortErr := bh.AbortBackup(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: backup %s/%s aborted, nothing of it is kept", dir, name)
		}
		if abortErr != nil {
			return fmt.Errorf("%w (and aborting it failed: %v)", err, abortErr)
		}
		return fmt.Errorf("backup %s/%s aborted, nothing of it is kept: %w", dir, name, err)
	}
	elapsed := time.Since(start)
	after, err := s.Stats(ctx)
	if err != nil {
		return err
	}
	added := after.StoredBytes - before.StoredBytes
	if a.json {
		return a.printJSON(backupJSON{Backup: dir + "/" + name, Files: len(sources), Bytes: written, AddedBytes: added, Seconds: elapsed.Seconds()})
	}
	grew := "the repository grew by " + size(added)
	if a.shared() {
		grew += " (with what other agents wrote meanwhile)"
	}
	a.info("backup %s/%s: %d files, %s in %s (%s); %s", dir, name, len(sources), size(written), elapsed.Round(time.Millisecond), rate(written, elapsed), grew)
	return nil
}

type backupJSON struct {
	Backup     string  `json:"backup"`
	Files      int     `json:"files"`
	Bytes      int64   `json:"bytes"`
	AddedBytes int64   `json:"added_bytes"`
	Seconds    float64 `json:"seconds"`
}

// walk lists the regular files under paths, each path kept relative to its
// parent directory.
func (a *app) walk(paths []string) ([]source, error) {
	var out []source
	for _, p := range paths {
		p = filepath.Clean(p)
		base := filepath.Dir(p)
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			if !d.Type().IsRegular() {
				a.warn("skipping %s: not a regular file", path)
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(base, path)
			if err != nil {
				return err
			}
			out = append(out, source{
				entry: CatalogEntry{Path: filepath.ToSlash(rel), File: strconv.Itoa(len(out)), Size: info.Size(), Mode: info.Mode().Perm(), MTime: info.ModTime()},
				open:  func() (io.ReadCloser, error) { return os.Open(path) },
			})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
	}
	if len(out) == 0 {
		return nil, usagef("nothing to back up in %v", paths)
	}
	return out, nil
}

// addAll copies the sources into the backup, concurrency at a time, and
// stops at the first error. It records each source's size as copied.
func (a *app) addAll(ctx context.Context, bh storage.BackupHandle, sources []source, concurrency int, bar progress) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var written int64
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				n, err := addOne(ctx, bh, sources[i], bar)
				mu.Lock()
				written += n
				sources[i].entry.Size = n
				mu.Unlock()
				if err != nil {
					cancel(err)
				}
			}
		}()
	}
	for i := range sources {
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return written, err
	}
	return written, nil
}

func addOne(ctx context.Context, bh storage.BackupHandle, src source, bar progress) (int64, error) {
	if ctx.Err() != nil {
		return 0, context.Cause(ctx)
	}
	r, err := src.open()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	w, err := bh.AddFile(ctx, src.entry.File)
	if err != nil {
		return 0, err
	}
	c := &counter{w: w, p: bar}
	if _, err := io.CopyBuffer(c, r, make([]byte, 1<<20)); err != nil {
		w.Close()
		return c.n, fmt.Errorf("%s: %w", src.entry.Path, err)
	}
	if err := w.Close(); err != nil {
		return c.n, fmt.Errorf("%s: %w", src.entry.Path, err)
	}
	return c.n, nil
}

func writeCatalog(ctx context.Context, bh storage.BackupHandle, sources []source) error {
	c := Catalog{Version: 1}
	for _, s := range sources {
		c.Files = append(c.Files, s.entry)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	w, err := bh.AddFile(ctx, catalogFile)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
