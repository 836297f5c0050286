package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/tree"
	"github.com/spf13/cobra"
)

type backupOptions struct {
	stdin       bool
	fromCommand bool
	name        string
	allowEmpty  bool
	force       bool
	exclude     []string
	oneFS       bool
	concurrency int
}

func (a *app) backupCommand() *cobra.Command {
	var o backupOptions
	cmd := &cobra.Command{
		Use: `backup DIR/NAME PATH...
  dedupctl backup DIR/NAME --name FILE --stdin
  dedupctl backup DIR/NAME --name FILE --stdin-from-command -- COMMAND [ARG...]`,
		Short: "Back up files and directory trees, or a stream",
		Long: `Back up files and directory trees as backup NAME in directory DIR, or a
stream as the file --name:

  dedupctl backup db1/0/2026-11-25 --name xbstream --stdin-from-command -- \
      mariabackup --backup --stream=xbstream

Each PATH is stored under its absolute path (without the leading slash), with
the directories above it, so that two paths never collide and a restore with
--target / puts everything back in place. Everything in the trees is kept:
files, directories (empty ones too), symlinks, hard links, FIFOs and device
nodes, with modes, owners and times; sparse files come back sparse.
--exclude leaves out what matches a pattern (--exclude '*.tmp', --exclude
/var/lib/mysql/tmp) and --one-file-system stays off other mounts (/proc).

A file whose size, modification time, change time and inode are those it had
in the newest ended backup of DIR is not read again: the new backup refers to
the chunks it had (--force reads every file). A file
that cannot be read is skipped and named, and the backup then exits with code
6. A file that changed type after it was listed (swapped for a link or a FIFO)
is skipped too: no link is followed.

With --stdin-from-command, dedupctl runs COMMAND and stores what it writes to
standard output; if COMMAND fails, the backup is aborted and nothing of it is
kept. Prefer it to a shell pipe, whose failure dedupctl cannot see. An empty
stream is refused unless --allow-empty is given.

Send uncompressed data: compressed input cannot deduplicate. Ctrl-C aborts
the backup; nothing of it is kept.`,
		Args: minArgs(1, "DIR/NAME and the paths to back up"),
		RunE: func(cmd *cobra.Command, args []string) error { return a.runBackup(cmd.Context(), o, args) },
	}
	cmd.Flags().BoolVar(&o.stdin, "stdin", false, "back up standard input")
	cmd.Flags().BoolVar(&o.fromCommand, "stdin-from-command", false, "run the command given after -- and back up its standard output")
	cmd.Flags().StringVar(&o.name, "name", "", "with --stdin or --stdin-from-command: the file name to store the stream as")
	cmd.Flags().BoolVar(&o.allowEmpty, "allow-empty", false, "store an empty stream")
	cmd.Flags().BoolVar(&o.force, "force", false, "read every file, even those unchanged since the previous backup")
	cmd.Flags().StringArrayVar(&o.exclude, "exclude", nil, "leave out what matches `PATTERN` (a name, or with a slash an absolute path; path.Match syntax); repeatable")
	cmd.Flags().BoolVarP(&o.oneFS, "one-file-system", "x", false, "stay on the file system of each PATH (mount points are kept, empty)")
	cmd.Flags().IntVar(&o.concurrency, "concurrency", 4, "files backed up at once")
	return cmd
}

// errIncomplete is returned when a backup ended without some of its files.
var errIncomplete = errors.New("some files could not be read")

func (a *app) runBackup(ctx context.Context, o backupOptions, args []string) error {
	dir, name, err := splitBackup(args[0])
	if err != nil {
		return err
	}
	if o.concurrency < 1 {
		return usagef("--concurrency must be at least 1")
	}
	b := &backup{a: a, o: o, dir: dir, name: name}
	switch {
	case o.stdin && o.fromCommand:
		return usagef("--stdin and --stdin-from-command exclude each other")
	case o.stdin || o.fromCommand:
		if !tree.ValidPath(o.name) {
			return usagef("--name %q: want a relative path such as xbstream or dumps/db.sql, without empty, . or .. parts", o.name)
		}
		if o.stdin && len(args) > 1 {
			return usagef("--stdin takes no paths")
		}
		if o.fromCommand && len(args) < 2 {
			return usagef("--stdin-from-command takes the command after --")
		}
		b.sources = []tree.Source{{Entry: tree.Entry{Path: tree.Name(o.name), Type: tree.File, Stored: "0", Size: -1, Mode: 0o644, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), MTime: time.Now()}}}
		b.stream = true
	case len(args) == 1:
		return usagef("backup takes paths to back up, or --name FILE with --stdin or --stdin-from-command")
	case o.name != "":
		return usagef("--name goes with --stdin or --stdin-from-command")
	default:
		b.sources, err = tree.Walk(args[1:], tree.WalkOptions{Exclude: o.exclude, OneFileSystem: o.oneFS, Skip: b.skip})
		if errors.Is(err, path.ErrBadPattern) {
			return usageError{err}
		}
		if err != nil {
			return err
		}
	}
	return a.withStorage(func(s *dedup.Storage) error {
		if o.fromCommand {
			return b.runCommand(ctx, s, args[1:])
		}
		if o.stdin {
			// A read of standard input waits for its writer and cannot be
			// cancelled; an interrupt must not wait with it. The copy
			// goroutine may stay blocked: the process is about to exit.
			pr, pw := io.Pipe()
			go func() { _, err := io.Copy(pw, a.stdin); pw.CloseWithError(err) }()
			defer context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })()
			b.open = func(tree.Source) (io.ReadCloser, error) { return pr, nil }
		}
		if !b.stream && !o.force {
			b.loadPrevious(ctx, s)
		}
		return b.run(ctx, s, nil)
	})
}

// previous is the files cache: the files of the newest ended backup of the
// same directory, by path.
type previous struct {
	name    string
	started time.Time
	files   map[tree.Name]tree.Entry
}

// loadPrevious reads the files cache. Without it every file is read: a
// catalog it cannot read is reported and costs only time.
func (b *backup) loadPrevious(ctx context.Context, s *dedup.Storage) {
	backups, err := s.Backups(ctx, b.dir)
	if err != nil {
		b.a.warn("reading every file: %v", err)
		return
	}
	for i := len(backups) - 1; i >= 0; i-- {
		if backups[i].State != index.Ended {
			continue
		}
		bh, err := findBackup(ctx, s, b.dir, backups[i].Name)
		var entries []tree.Entry
		if err == nil {
			entries, err = readCatalog(ctx, s, bh)
		}
		if err != nil {
			b.a.warn("reading every file: the previous backup %s/%s: %v", b.dir, backups[i].Name, err)
			return
		}
		b.prev = previous{name: backups[i].Name, started: backups[i].Started, files: map[tree.Name]tree.Entry{}}
		for _, e := range entries {
			if e.Type == tree.File {
				b.prev.files[e.Path] = e
			}
		}
		return
	}
}

// unchanged finds src in the files cache. A file changed less than a
// second before the previous backup started is read again: file systems
// keep change times at the kernel's tick, so a write just after that
// backup read it could have left its change time as it was.
func (p previous) unchanged(src tree.Entry) (tree.Entry, bool) {
	e, ok := p.files[src.Path]
	return e, ok && e.Size == src.Size && e.MTime.Equal(src.MTime) && e.CTime.Equal(src.CTime) && e.Inode == src.Inode &&
		!e.CTime.IsZero() && e.CTime.Before(p.started.Add(-time.Second))
}

// backup is one run of the backup command.
type backup struct {
	a         *app
	o         backupOptions
	dir, name string
	sources   []tree.Source
	stream    bool
	open      func(tree.Source) (io.ReadCloser, error) // nil: tree.Open
	prev      previous

	mu        sync.Mutex
	skipped   []string // paths not backed up
	unchanged int      // files added from the files cache
}

// skip reports a path that is not backed up.
func (b *backup) skip(path string, err error) {
	b.mu.Lock()
	b.skipped = append(b.skipped, path)
	b.mu.Unlock()
	b.a.warn("skipping %s: %v", path, err)
}

// runCommand backs up the standard output of the command args, and aborts
// the backup if the command fails.
func (b *backup) runCommand(ctx context.Context, s *dedup.Storage, args []string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin, cmd.Stderr = b.a.stdin, b.a.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	b.open = func(tree.Source) (io.ReadCloser, error) { return out, nil }
	waited := false
	defer func() {
		if !waited {
			cancel()
			cmd.Wait()
		}
	}()
	return b.run(ctx, s, func() error {
		waited = true
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("%s failed: %w", strings.Join(args, " "), err)
		}
		return nil
	})
}

// run writes the sources as the backup and reports what it cost. Before it
// ends the backup, it calls finish, if set: an error aborts the backup.
func (b *backup) run(ctx context.Context, s *dedup.Storage, finish func() error) error {
	a := b.a
	before, err := s.StoredBytes(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	bh, err := s.StartBackup(ctx, b.dir, b.name)
	if err != nil {
		return err
	}
	total, toRead := int64(-1), 0
	if !b.stream {
		total = 0
		for _, src := range b.sources {
			if src.Type == tree.File && src.HardLink == "" {
				total += src.Size
				toRead++
			}
		}
	}
	bar := a.progress(total, toRead, "backup")
	written, err := b.addAll(ctx, s, bh, bar)
	if err == nil && finish != nil {
		err = finish()
	}
	if err == nil && b.stream && written == 0 && !b.o.allowEmpty {
		err = errors.New("the stream was empty (pass --allow-empty to store an empty stream)")
	}
	if err == nil {
		err = b.writeCatalog(ctx, bh)
	}
	if err == nil {
		err = bh.EndBackup(ctx)
	}
	bar.done()
	if err != nil {
		abortErr := bh.AbortBackup(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: backup %s/%s aborted, nothing of it is kept", b.dir, b.name)
		}
		if abortErr != nil {
			return fmt.Errorf("%w (and aborting it failed: %v)", err, abortErr)
		}
		return fmt.Errorf("backup %s/%s aborted, nothing of it is kept: %w", b.dir, b.name, err)
	}
	elapsed := time.Since(start)
	after, err := s.StoredBytes(ctx)
	if err != nil {
		return err
	}
	added := after - before
	files := 0
	for _, src := range b.sources {
		if src.Type == tree.File {
			files++
		}
	}
	if a.json {
		if err := a.printJSON(backupJSON{Backup: b.dir + "/" + b.name, Files: files, Unchanged: b.unchanged, Entries: len(b.sources), Skipped: len(b.skipped), Bytes: written, AddedBytes: added, Seconds: elapsed.Seconds()}); err != nil {
			return err
		}
	} else {
		grew := "the repository grew by " + size(added) // with what other processes wrote meanwhile
		var notes []string
		if b.unchanged > 0 {
			notes = append(notes, fmt.Sprintf("%d unchanged, not read", b.unchanged))
		}
		if len(b.skipped) > 0 {
			notes = append(notes, fmt.Sprintf("%d skipped", len(b.skipped)))
		}
		counts := fmt.Sprintf("%d files", files)
		if len(notes) > 0 {
			counts += " (" + strings.Join(notes, ", ") + ")"
		}
		a.info("backup %s/%s: %s, %s in %s (%s); %s", b.dir, b.name, counts, size(written), elapsed.Round(time.Millisecond), rate(written, elapsed), grew)
	}
	if len(b.skipped) > 0 {
		return fmt.Errorf("backup %s/%s ended without %d paths (named above): %w", b.dir, b.name, len(b.skipped), errIncomplete)
	}
	return nil
}

type backupJSON struct {
	Backup     string  `json:"backup"`
	Files      int     `json:"files"`
	Unchanged  int     `json:"unchanged_files"`
	Entries    int     `json:"entries"`
	Skipped    int     `json:"skipped"`
	Bytes      int64   `json:"bytes"`
	AddedBytes int64   `json:"added_bytes"`
	Seconds    float64 `json:"seconds"`
}

// addAll copies the files' data into the backup, concurrency at a time,
// and stops at the first error of the repository. A file that cannot be
// read is skipped. It records each file's size as read.
func (b *backup) addAll(ctx context.Context, s *dedup.Storage, bh storage.BackupHandle, bar *progress) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var written int64
	failed := map[string]bool{} // stored names of skipped files
	for range b.o.concurrency {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for i := range work {
				src := &b.sources[i]
				n, err := b.addOne(ctx, s, bh, *src, bar, buf)
				bar.file()
				var se sourceError
				if errors.As(err, &se) && ctx.Err() == nil {
					b.skip(src.Disk, se.err)
					mu.Lock()
					failed[src.Stored] = true
					mu.Unlock()
					continue
				}
				mu.Lock()
				written += n
				src.Size = n
				mu.Unlock()
				if err != nil {
					cancel(err)
				}
			}
		})
	}
	for i, src := range b.sources {
		if src.Type != tree.File || src.HardLink != "" {
			continue
		}
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
	// Drop what was skipped, hard links to it included, and give hard
	// links the size read.
	sizes := map[string]int64{}
	kept := b.sources[:0]
	for _, src := range b.sources {
		if src.Type == tree.File {
			if failed[src.Stored] {
				continue
			}
			if src.HardLink == "" {
				sizes[src.Stored] = src.Size
			}
			src.Size = sizes[src.Stored]
		}
		kept = append(kept, src)
	}
	b.sources = kept
	return written, nil
}

// sourceError marks a failure to read what is backed up, as opposed to a
// failure to store it.
type sourceError struct{ err error }

func (e sourceError) Error() string { return e.err.Error() }

func (b *backup) addOne(ctx context.Context, s *dedup.Storage, bh storage.BackupHandle, src tree.Source, bar *progress, buf []byte) (int64, error) {
	if ctx.Err() != nil {
		return 0, context.Cause(ctx)
	}
	if p, ok := b.prev.unchanged(src.Entry); ok {
		err := s.CopyFile(ctx, b.dir, b.name, src.Stored, dedup.FileRef{Dir: b.dir, Name: b.prev.name, File: p.Stored})
		if err == nil {
			b.mu.Lock()
			b.unchanged++
			b.mu.Unlock()
			bar.add(int(src.Size))
			return src.Size, nil
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return 0, err
		}
	}
	var r io.ReadCloser
	var err error
	if b.open != nil {
		r, err = b.open(src)
	} else {
		r, err = tree.Open(src)
	}
	if err != nil {
		return 0, sourceError{err}
	}
	defer r.Close()
	// A file that fails to read is cancelled, so that Close does not
	// commit it.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := bh.AddFile(fctx, src.Stored)
	if err != nil {
		return 0, err
	}
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				w.Close()
				return n, fmt.Errorf("%s: %w", src.Path, err)
			}
			n += int64(k)
			bar.add(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			cancel()
			w.Close()
			return n, sourceError{rerr}
		}
	}
	if err := w.Close(); err != nil {
		return n, fmt.Errorf("%s: %w", src.Path, err)
	}
	return n, nil
}

func (b *backup) writeCatalog(ctx context.Context, bh storage.BackupHandle) error {
	w, err := bh.AddFile(ctx, catalogFile)
	if err != nil {
		return err
	}
	entries := func(yield func(tree.Entry) bool) {
		for _, s := range b.sources {
			if !yield(s.Entry) {
				return
			}
		}
	}
	if err := tree.Write(w, entries); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
