package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

func (a *app) lsCommand() *cobra.Command {
	var sortBy string
	cmd := &cobra.Command{
		Use:   "ls [DIR]",
		Short: "List backups, with what each alone holds",
		Long: `List the backups in DIR (all backups without it), oldest first (--sort name
sorts by DIR/NAME), with their state, start time, logical size, and the
stored bytes no other backup uses: about what removing the backup and
collecting garbage would free.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("ls takes at most one directory")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if sortBy != "time" && sortBy != "name" {
				return usagef("--sort %q: want time or name", sortBy)
			}
			return a.withStorage(func(s *dedup.Storage) error {
				dir := ""
				if len(args) == 1 {
					dir = strings.TrimSuffix(args[0], "/")
					if err := storage.ValidateDir(dir); err != nil {
						return err
					}
				}
				st, err := s.Stats(cmd.Context())
				if err != nil {
					return err
				}
				catalogs, err := withCatalog(cmd.Context(), s, st.PerBackup)
				if err != nil {
					return err
				}
				out := []lsJSON{}
				listed := map[string]bool{}
				for _, b := range st.PerBackup {
					listed[b.Dir+"/"+b.Name] = true
					if dir == "" || b.Dir == dir {
						files := b.Files
						if catalogs[b.Dir+"/"+b.Name] {
							files-- // dedupctl's own bookkeeping
						}
						out = append(out, lsJSON{Dir: b.Dir, Name: b.Name, State: b.State.String(), Started: b.Started, Ended: b.Ended, Files: files, LogicalBytes: b.LogicalBytes, ExclusiveBytes: b.ExclusiveBytes})
					}
				}
				// Backups other processes have in progress: listed, their
				// files not yet known here.
				all, err := s.Backups(cmd.Context(), dir)
				if err != nil {
					return err
				}
				for _, b := range all {
					if !listed[b.Dir+"/"+b.Name] {
						out = append(out, lsJSON{Dir: b.Dir, Name: b.Name, State: b.State.String(), Started: b.Started})
					}
				}
				slices.SortStableFunc(out, func(x, y lsJSON) int {
					if sortBy == "name" {
						return cmp.Or(cmp.Compare(x.Dir, y.Dir), cmp.Compare(x.Name, y.Name))
					}
					return cmp.Or(x.Started.Compare(y.Started), cmp.Compare(x.Dir, y.Dir), cmp.Compare(x.Name, y.Name))
				})
				if a.json {
					return a.printJSON(out)
				}
				var rows [][]string
				for _, b := range out {
					rows = append(rows, []string{b.Dir + "/" + b.Name, b.State, when(b.Started), fmt.Sprint(b.Files), size(b.LogicalBytes), size(b.ExclusiveBytes)})
				}
				a.table("BACKUP\tSTATE\tSTARTED\tFILES\tLOGICAL\tALONE HOLDS", rows)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&sortBy, "sort", "time", "order: time (start time, oldest first) or name")
	return cmd
}

type lsJSON struct {
	Dir            string    `json:"dir"`
	Name           string    `json:"name"`
	State          string    `json:"state"`
	Started        time.Time `json:"started"`
	Ended          time.Time `json:"ended"`
	Files          int       `json:"files"`
	LogicalBytes   int64     `json:"logical_bytes"`
	ExclusiveBytes int64     `json:"exclusive_bytes"`
}

// withCatalog returns the backups, as DIR/NAME, that have a catalog.
func withCatalog(ctx context.Context, s *dedup.Storage, backups []gc.BackupStats) (map[string]bool, error) {
	out := map[string]bool{}
	listed := map[string]bool{}
	for _, b := range backups {
		if listed[b.Dir] {
			continue
		}
		listed[b.Dir] = true
		bhs, err := s.ListBackups(ctx, b.Dir)
		if err != nil {
			return nil, err
		}
		for _, bh := range bhs {
			rc, err := bh.ReadFile(ctx, catalogFile)
			if err == nil {
				rc.Close()
				out[bh.Directory()+"/"+bh.Name()] = true
			}
		}
	}
	return out, nil
}
