package main

import (
	"fmt"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"strings"
	"time"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/spf13/cobra"
)

func (a *app) lsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls [DIR]",
		Short: "List backups, with what each alone holds",
		Long: `List the backups in DIR (all backups without it), oldest name first, with
their state, start time, logical size, and the stored bytes no other backup
uses: about what removing the backup and collecting garbage would free.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("ls takes at most one directory")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
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
				out := []lsJSON{}
				for _, b := range st.PerBackup {
					if dir == "" || b.Dir == dir {
						out = append(out, lsJSON{Dir: b.Dir, Name: b.Name, State: b.State.String(), Started: b.Started, Ended: b.Ended, Files: b.Files, LogicalBytes: b.LogicalBytes, ExclusiveBytes: b.ExclusiveBytes})
					}
				}
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
