package main

import (
	"io"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/tree"
	"github.com/spf13/cobra"
)

func (a *app) catCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cat DIR/NAME FILE",
		Short: "Write one file of a backup to standard output",
		Args:  exactArgs(2, "DIR/NAME and FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withBackup(ctx, args[0], func(_ *dedup.Storage, bh storage.BackupHandle, all []tree.Entry) error {
				chosen, err := selectEntries(all, args[1:])
				if err != nil {
					return err
				}
				if len(chosen) != 1 || chosen[0].Type != tree.File {
					return usagef("%s names %d entries, not one file; cat writes one file", args[1], len(chosen))
				}
				rc, err := bh.ReadFile(ctx, chosen[0].Stored)
				if err != nil {
					return err
				}
				defer rc.Close()
				growPipe(a.stdout)
				_, err = io.CopyBuffer(a.stdout, rc, make([]byte, 1<<20))
				return err
			})
		},
	}
}
