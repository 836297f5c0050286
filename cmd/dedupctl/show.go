package main

import (
	"fmt"
	"sort"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

func (a *app) showCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show DIR/NAME",
		Short: "Show a backup's files, with sizes, chunks and what each cost",
		Long: `Show the files of a backup: size, chunk count, the stored size of its
distinct chunks, and the part of that no other backup uses (NEW): what the
file cost the repository beyond what was already there.`,
		Args: exactArgs(1, "one DIR/NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withBackup(ctx, args[0], func(s *dedup.Storage, bh storage.BackupHandle, catalog []CatalogEntry) error {
				dir, name := bh.Directory(), bh.Name()
				paths := map[string]string{}
				for _, e := range catalog {
					paths[e.File] = e.Path
				}
				files, err := s.Files(ctx, dir, name)
				if err != nil {
					return err
				}
				out := showJSON{Backup: dir + "/" + name, Files: []showFileJSON{}}
				for _, f := range files {
					if f.Name == catalogFile && len(paths) > 0 && paths[catalogFile] == "" {
						continue // dedupctl's own bookkeeping
					}
					p := paths[f.Name]
					if p == "" {
						p = f.Name
					}
					out.Files = append(out.Files, showFileJSON{Path: p, File: f.Name, Size: f.Size, Chunks: f.Chunks, StoredBytes: f.StoredBytes, NewBytes: f.ExclusiveBytes})
				}
				sort.Slice(out.Files, func(i, j int) bool { return out.Files[i].Path < out.Files[j].Path })
				if a.json {
					return a.printJSON(out)
				}
				var rows [][]string
				for _, f := range out.Files {
					rows = append(rows, []string{f.Path, size(f.Size), fmt.Sprint(f.Chunks), size(f.StoredBytes), size(f.NewBytes)})
				}
				a.table("PATH\tSIZE\tCHUNKS\tSTORED\tNEW", rows)
				return nil
			})
		},
	}
}

type showJSON struct {
	Backup string         `json:"backup"`
	Files  []showFileJSON `json:"files"`
}

type showFileJSON struct {
	Path        string `json:"path"`
	File        string `json:"file"`
	Size        int64  `json:"size"`
	Chunks      int64  `json:"chunks"`
	StoredBytes int64  `json:"stored_bytes"`
	NewBytes    int64  `json:"new_bytes"`
}
