package main

import (
	"strconv"
	"strings"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

type checkOptions struct {
	readData bool
	subset   string
}

func (a *app) checkCommand() *cobra.Command {
	var o checkOptions
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify the repository; with --read-data, every chunk's bytes",
		Long: `Check that the index, the packs and every backup's chunk lists agree. With
--read-data, also read, decompress and hash every chunk (or the stable
subset --read-data-subset=N% picks). Damage is reported by pack, chunk and
affected backup file, and exits with code 5. Damaged packs and manifests
are recorded, so that gc deletes nothing until dedupctl repair has dealt
with them.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := check.Options{ReadData: o.readData || o.subset != ""}
			if o.subset != "" {
				pct, err := strconv.ParseFloat(strings.TrimSuffix(o.subset, "%"), 64)
				if err != nil || !(pct > 0 && pct <= 100) { // also refuses NaN
					return usagef("--read-data-subset %q: want a percentage such as 10%%", o.subset)
				}
				opts.Subset = pct / 100
			}
			return a.withStorage(func(s *dedup.Storage) error {
				r, err := s.Check(cmd.Context(), opts)
				if err != nil {
					return err
				}
				if a.json {
					if r.Problems == nil {
						r.Problems = []check.Problem{}
					}
					if r.Affected == nil {
						r.Affected = []check.File{}
					}
					if err := a.printJSON(r); err != nil {
						return err
					}
				} else {
					a.info("checked %d backups, %d packs, %d chunks (%d read)", r.Backups, r.Packs, r.Chunks, r.ChunksRead)
					for _, p := range r.Problems {
						a.info("damage: %s", describe(p))
					}
					for _, f := range r.Affected {
						a.info("affected: backup %s/%s file %s", f.Dir, f.Name, f.File)
					}
				}
				if !r.OK() {
					return errDamage
				}
				a.info("no errors found")
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&o.readData, "read-data", false, "read and verify every chunk")
	cmd.Flags().StringVar(&o.subset, "read-data-subset", "", "read and verify this percentage of chunks, such as 10%")
	return cmd
}

func describe(p check.Problem) string {
	var parts []string
	if p.Manifest != "" {
		parts = append(parts, "manifest "+p.Manifest)
	}
	if p.Pack != "" {
		parts = append(parts, "pack "+p.Pack)
	}
	if p.Chunk != "" {
		parts = append(parts, "chunk "+p.Chunk)
	}
	return strings.Join(append(parts, p.Detail), ": ")
}
