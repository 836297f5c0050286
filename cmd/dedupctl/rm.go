package main

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

func (a *app) rmCommand() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "rm DIR/NAME...",
		Short: "Remove backups (dedupctl gc then reclaims their space)",
		Long: `Remove the backups named. A name may be a pattern of path.Match, quoted for
the shell, such as 'db1/0/2026-10-*': it names every backup it matches, and
one that matches none is an error. Every name is checked before anything is
removed; --dry-run lists what would be removed and removes nothing.`,
		Args: minArgs(1, "the backups to remove"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(func(s *dedup.Storage) error {
				ctx := cmd.Context()
				chosen, err := chooseBackups(ctx, s, args)
				if err != nil {
					return err
				}
				removed := []string{}
				for _, b := range chosen {
					if !dryRun {
						if err := s.RemoveBackup(ctx, b.Dir, b.Name); err != nil {
							return err
						}
					}
					removed = append(removed, b.Dir+"/"+b.Name)
					if dryRun {
						a.info("would remove %s/%s", b.Dir, b.Name)
					} else {
						a.info("removed %s/%s", b.Dir, b.Name)
					}
				}
				if a.json {
					return a.printJSON(rmJSON{Removed: removed, DryRun: dryRun})
				}
				if !dryRun {
					a.info("dedupctl gc reclaims the space no backup uses any more")
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be removed, remove nothing")
	return cmd
}

type rmJSON struct {
	Removed []string `json:"removed"`
	DryRun  bool     `json:"dry_run"`
}

// chooseBackups resolves names and patterns to backups, in the order
// given, each once. Every name must exist and every pattern match.
func chooseBackups(ctx context.Context, s *dedup.Storage, args []string) ([]index.Backup, error) {
	all, err := s.Backups(ctx, "")
	if err != nil {
		return nil, err
	}
	var out []index.Backup
	chosen := map[index.Backup]bool{}
	for _, arg := range args {
		if !strings.ContainsAny(arg, `*?[\`) {
			if _, _, err := splitBackup(arg); err != nil {
				return nil, err
			}
		} else if _, err := path.Match(arg, ""); err != nil {
			return nil, usagef("%q: %v", arg, err)
		}
		matched := false
		for _, b := range all {
			if ok, _ := path.Match(arg, b.Dir+"/"+b.Name); ok {
				matched = true
				if !chosen[b] {
					chosen[b] = true
					out = append(out, b)
				}
			}
		}
		if !matched {
			return nil, fmt.Errorf("no backup %s: %w", arg, storage.ErrNotFound)
		}
	}
	return out, nil
}
