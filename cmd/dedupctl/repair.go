package main

import (
	"strings"

	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

func (a *app) repairCommand() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Save what can be saved of damaged packs and manifests, and say what is lost",
		Long: `Deal with the damage that check, index rebuild or gc found, so that gc can
run again. A damaged pack's intact chunks that no other pack holds are
copied into a new pack; a damaged or missing manifest is written again from
the index when the index holds the backup, or else keeps the files that can
be salvaged from it. The damaged objects are moved to quarantine/ in the
repository, never deleted. Then every backup file with chunks stored nowhere
is listed, and repair exits with code 5 if there is any: those bytes cannot
be restored. --dry-run says what would be done and changes nothing.

No backup may run meanwhile.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(func(s *dedup.Storage) error {
				rep, err := s.Repair(cmd.Context(), dryRun)
				if err != nil {
					return err
				}
				if a.json {
					if err := a.printJSON(repairJSON{DryRun: dryRun, RepairReport: rep}); err != nil {
						return err
					}
				} else {
					a.printRepair(rep, dryRun)
				}
				if rep.Damaged() {
					return errDamage
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be done, change nothing")
	return cmd
}

type repairJSON struct {
	DryRun bool `json:"dry_run"`
	dedup.RepairReport
}

func (a *app) printRepair(rep dedup.RepairReport, dryRun bool) {
	verb := "moved to quarantine/"
	if dryRun {
		verb = "would move to quarantine/"
	}
	for _, p := range rep.Packs {
		a.info("pack %s (%s): %d chunks copied to a new pack, %d kept in other packs, %d damaged; %s", p.Pack, p.Problem, p.Copied, p.Kept, p.Lost, verb)
	}
	for _, m := range rep.Manifests {
		if m.FromIndex {
			a.info("manifest %s (%s): written again from the index, nothing lost", m.Manifest, m.Problem)
			continue
		}
		a.info("manifest %s (%s): %d files salvaged, lost: %s; %s", m.Manifest, m.Problem, m.Files, strings.Join(m.LostFiles, ", "), verb)
	}
	for _, f := range rep.Lost {
		a.info("lost: backup %s/%s file %s: %d chunks are stored nowhere", f.Dir, f.Name, f.File, f.MissingChunks)
	}
	switch {
	case len(rep.Packs)+len(rep.Manifests) == 0 && len(rep.Lost) == 0:
		a.info("nothing to repair")
	case rep.Damaged():
		a.info("some data cannot be restored (listed above)")
	default:
		a.info("repaired; nothing lost")
	}
}
