package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/tree"
	"github.com/spf13/cobra"
)

type restoreOptions struct {
	target    string
	overwrite bool
}

func (a *app) restoreCommand() *cobra.Command {
	var o restoreOptions
	cmd := &cobra.Command{
		Use:   "restore DIR/NAME --target PATH [PATH...]",
		Short: "Restore a backup, or chosen paths of it, into a directory",
		Long: `Restore a whole backup, or the paths named and what is under them, under
--target: a backed-up /etc/ssh comes back as PATH/etc/ssh, and --target /
puts files back in place. Every byte is checked against its hash before it is
written. Files, directories, symlinks, hard links, FIFOs and devices come
back with their modes and times, and with their owners when dedupctl runs as
root. Nothing is written outside --target, whatever links exist under it.

Existing entries are never replaced unless --overwrite is given. A file that
cannot be restored (damaged data) does not stop the restore: everything
else is restored, the failures are named, and the exit code is 5.`,
		Args: minArgs(1, "DIR/NAME and optionally the paths to restore"),
		RunE: func(cmd *cobra.Command, args []string) error { return a.runRestore(cmd.Context(), o, args) },
	}
	cmd.Flags().StringVar(&o.target, "target", "", "directory to restore into (required)")
	cmd.Flags().BoolVar(&o.overwrite, "overwrite", false, "replace what exists under the target")
	return cmd
}

func (a *app) runRestore(ctx context.Context, o restoreOptions, args []string) error {
	if o.target == "" {
		return usagef("restore needs --target PATH")
	}
	return a.withBackup(ctx, args[0], func(_ *dedup.Storage, bh storage.BackupHandle, all []tree.Entry) error {
		dir, name := bh.Directory(), bh.Name()
		chosen, err := selectEntries(all, args[1:])
		if err != nil {
			return err
		}
		var total int64
		for _, e := range chosen {
			if e.Type == tree.File && e.HardLink == "" {
				total += e.Size
			}
		}
		start := time.Now()
		bar := a.progress(total, 0, "restore")
		rep, err := tree.Restore(ctx, o.target, chosen, tree.RestoreOptions{
			Overwrite: o.overwrite,
			Open:      func(ctx context.Context, stored string) (io.ReadCloser, error) { return bh.ReadFile(ctx, stored) },
			Progress:  bar.add,
		})
		bar.done()
		if err != nil {
			return err
		}
		elapsed := time.Since(start)
		damaged := false
		out := restoreJSON{Backup: dir + "/" + name, Target: o.target, Entries: rep.Entries, Files: rep.Files, Bytes: rep.Bytes, Seconds: elapsed.Seconds(), NotPermitted: rep.NotPermitted, Failed: []restoreFailureJSON{}}
		for _, f := range rep.Failed {
			damaged = damaged || errors.Is(f.Err, storage.ErrCorrupt) || errors.Is(f.Err, chunkstore.ErrCorrupt)
			out.Failed = append(out.Failed, restoreFailureJSON{Path: string(f.Path), Error: f.Err.Error()})
			a.warn("could not restore %s: %v", f.Path, f.Err)
		}
		if a.json {
			if err := a.printJSON(out); err != nil {
				return err
			}
		} else {
			a.info("restored %d files, %s from %s/%s into %s in %s (%s)", rep.Files, size(rep.Bytes), dir, name, o.target, elapsed.Round(time.Millisecond), rate(rep.Bytes, elapsed))
			if rep.NotPermitted > 0 {
				a.info("%d entries restored without their owner or extended attributes (such as capabilities): only root can set them", rep.NotPermitted)
			}
		}
		if len(rep.Failed) > 0 {
			err := fmt.Errorf("%d of %d entries could not be restored (named above)", len(rep.Failed), len(chosen))
			if damaged {
				err = fmt.Errorf("%w: %w", err, errDamage)
			}
			return err
		}
		return nil
	})
}

type restoreJSON struct {
	Backup       string               `json:"backup"`
	Target       string               `json:"target"`
	Entries      int                  `json:"entries"`
	Files        int                  `json:"files"`
	Bytes        int64                `json:"bytes"`
	Seconds      float64              `json:"seconds"`
	NotPermitted int                  `json:"not_permitted"`
	Failed       []restoreFailureJSON `json:"failed"`
}

type restoreFailureJSON struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}
