package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

type restoreOptions struct {
	target    string
	overwrite bool
}

func (a *app) restoreCommand() *cobra.Command {
	var o restoreOptions
	cmd := &cobra.Command{
		Use:   "restore DIR/NAME --target PATH [FILE...]",
		Short: "Restore a backup, or chosen files of it, into a directory",
		Long: `Restore a whole backup, or the files and directories named, under --target.
Every byte is checked against its hash before it is written. Existing files
are never overwritten unless --overwrite is given.`,
		Args: minArgs(1, "DIR/NAME and optionally the files to restore"),
		RunE: func(cmd *cobra.Command, args []string) error { return a.runRestore(cmd.Context(), o, args) },
	}
	cmd.Flags().StringVar(&o.target, "target", "", "directory to restore into (required)")
	cmd.Flags().BoolVar(&o.overwrite, "overwrite", false, "replace files that exist under the target")
	return cmd
}

func (a *app) runRestore(ctx context.Context, o restoreOptions, args []string) error {
	if o.target == "" {
		return usagef("restore needs --target PATH")
	}
	return a.withBackup(ctx, args[0], func(_ *dedup.Storage, bh storage.BackupHandle, all []CatalogEntry) error {
		dir, name := bh.Directory(), bh.Name()
		chosen, err := selectEntries(all, args[1:])
		if err != nil {
			return err
		}
		var total int64
		for _, e := range chosen {
			total += e.Size
			if !o.overwrite {
				if _, err := os.Lstat(filepath.Join(o.target, filepath.FromSlash(e.Path))); err == nil {
					return fmt.Errorf("refusing to overwrite %s (use --overwrite)", filepath.Join(o.target, filepath.FromSlash(e.Path)))
				}
			}
		}
		start := time.Now()
		bar := a.progress(total, "restore")
		var written int64
		for _, e := range chosen {
			n, err := restoreOne(ctx, bh, e, o.target, bar)
			written += n
			if err != nil {
				bar.done()
				return err
			}
		}
		bar.done()
		elapsed := time.Since(start)
		if a.json {
			return a.printJSON(restoreJSON{Backup: dir + "/" + name, Target: o.target, Files: len(chosen), Bytes: written, Seconds: elapsed.Seconds()})
		}
		a.info("restored %d files, %s from %s/%s into %s in %s (%s)", len(chosen), size(written), dir, name, o.target, elapsed.Round(time.Millisecond), rate(written, elapsed))
		return nil
	})
}

type restoreJSON struct {
	Backup  string  `json:"backup"`
	Target  string  `json:"target"`
	Files   int     `json:"files"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// restoreOne writes one file through a temporary name, so that a failed
// restore never leaves a partial file under the real one.
func restoreOne(ctx context.Context, bh storage.BackupHandle, e CatalogEntry, target string, bar progress) (int64, error) {
	dest := filepath.Join(target, filepath.FromSlash(e.Path))
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return 0, err
	}
	rc, err := bh.ReadFile(ctx, e.File)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", e.Path, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(filepath.Dir(dest), ".dedupctl-restore-*")
	if err != nil {
		return 0, err
	}
	c := &counter{w: f, p: bar}
	_, err = io.CopyBuffer(c, rc, make([]byte, 1<<20))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), cmp.Or(e.Mode.Perm(), 0o644))
	}
	if err == nil && !e.MTime.IsZero() {
		err = os.Chtimes(f.Name(), e.MTime, e.MTime)
	}
	if err == nil {
		err = os.Rename(f.Name(), dest)
	}
	if err != nil {
		os.Remove(f.Name())
		if errors.Is(err, storage.ErrCorrupt) {
			return c.n, fmt.Errorf("%s: %w", e.Path, err)
		}
		return c.n, fmt.Errorf("restoring %s: %w", e.Path, err)
	}
	return c.n, nil
}
