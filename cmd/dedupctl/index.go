package main

import (
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

func (a *app) indexCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "index", Short: "Maintain index.db"}
	cmd.AddCommand(&cobra.Command{
		Use:   "rebuild",
		Short: "Rebuild index.db from the packs and manifests alone",
		Long: `Throw index.db's contents away and rebuild them from the repository: every
pack's trailer and every backup's manifest. The intact chunks of a pack whose
trailer is damaged are found by their headers; damaged packs and manifests
are named and stay in place, and gc deletes nothing until dedupctl repair
has dealt with them. An interrupted rebuild runs again when the repository
next opens; a deleted index.db is rebuilt the same way.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(func(s *dedup.Storage) error {
				res, err := s.RebuildIndex(cmd.Context())
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(rebuildJSON{Packs: res.Packs, Chunks: res.Chunks, Backups: res.Backups, DamagedPacks: orEmpty(res.DamagedPacks), DamagedManifests: orEmpty(res.DamagedManifests)})
				}
				a.info("rebuilt the index: %d packs, %d chunks, %d backups", res.Packs, res.Chunks, res.Backups)
				for _, p := range res.DamagedPacks {
					a.info("damaged pack %s: %s; %d chunks salvaged, %d damaged", p.Object, p.Problem, p.Salvaged, p.Lost)
				}
				for _, m := range res.DamagedManifests {
					a.info("damaged manifest %s: %s", m.Object, m.Problem)
				}
				if len(res.DamagedPacks)+len(res.DamagedManifests) > 0 {
					a.info("damaged objects stay in place and gc deletes nothing until dedupctl repair has dealt with them")
					return errDamage
				}
				return nil
			})
		},
	})
	return cmd
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type rebuildJSON struct {
	Packs            int            `json:"packs"`
	Chunks           int            `json:"chunks"`
	Backups          int            `json:"backups"`
	DamagedPacks     []dedup.Damage `json:"damaged_packs"`
	DamagedManifests []dedup.Damage `json:"damaged_manifests"`
}
