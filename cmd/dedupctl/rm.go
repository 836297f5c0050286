package main

import (
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

func (a *app) rmCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rm DIR/NAME...",
		Short: "Remove backups (dedupctl gc then reclaims their space)",
		Args:  minArgs(1, "the backups to remove"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(func(s *dedup.Storage) error {
				ctx := cmd.Context()
				removed := []string{}
				for _, arg := range args { // all exist before any is removed
					dir, name, err := splitBackup(arg)
					if err != nil {
						return err
					}
					if _, err := findBackup(ctx, s, dir, name); err != nil {
						return err
					}
				}
				for _, arg := range args {
					dir, name, _ := splitBackup(arg)
					if err := s.RemoveBackup(ctx, dir, name); err != nil {
						return err
					}
					removed = append(removed, arg)
					a.info("removed %s", arg)
				}
				if a.json {
					return a.printJSON(map[string][]string{"removed": removed})
				}
				a.info("dedupctl gc reclaims the space no backup uses any more")
				return nil
			})
		},
	}
}
