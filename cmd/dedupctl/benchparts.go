package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/dedupstore/dedupstore/bench"
	"github.com/spf13/cobra"
)

// partsReport is bench parts' --json output: the measurement and the
// limits it gives.
type partsReport struct {
	bench.Parts
	Cores       int     `json:"cores"`
	FirstBackup float64 `json:"first_backup_limit_bytes_per_second"`
	Repeat      float64 `json:"repeat_limit_bytes_per_second"`
	Restore     float64 `json:"restore_limit_bytes_per_second"`
}

// benchPartsCommand is dedupctl bench parts: bench.MeasureParts on the
// user's files, and the limits it gives on this machine's cores.
func (a *app) benchPartsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "parts FILE...",
		Short: "Measure each step of a backup and a restore on your data, one core each",
		Long: `Run each step of the pipeline over FILEs, one step at a time on one core,
as an encrypted repository of dedupctl init's defaults runs them: chunking
(reads excluded), hashing, the features of new chunks (for deltas),
compressing and sealing them, and loading them back (a read, opening,
decompressing and verifying). Print each step's speed, and the limits they
give on this machine's cores (GOMAXPROCS): a first backup shares all the
work of a byte among the cores but chunks a stream on one; a repeated
backup only chunks and hashes; a restore only loads. Finding bases for
deltas, packing and writing are left out, so a real backup stays under its
limit. The files' distinct chunks are written to a temporary repository
under $TMPDIR, deleted at the end.`,
		Args: minArgs(1, "the files to measure"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := os.MkdirTemp("", "dedupctl-parts-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			p, err := bench.MeasureParts(cmd.Context(), args, dir)
			if err != nil {
				return err
			}
			cores := runtime.GOMAXPROCS(0)
			r := partsReport{Parts: p, Cores: cores, FirstBackup: p.FirstBackup(cores), Repeat: p.Repeat(cores), Restore: p.Restore(cores)}
			if a.json {
				return a.printJSON(r)
			}
			mbs := func(n int64, s float64) string { return fmt.Sprintf("%.0f", bench.Speed(n, s)/1e6) }
			a.table("STEP\tMB/S ON ONE CORE\tOVER", [][]string{
				{"chunk", mbs(p.Bytes, p.Chunk), size(p.Bytes)},
				{"hash", mbs(p.Bytes, p.Hash), size(p.Bytes)},
				{"features", mbs(p.NewBytes, p.Features), size(p.NewBytes) + " new"},
				{"compress and seal", mbs(p.NewBytes, p.Compress), size(p.NewBytes) + " new"},
				{"load", mbs(p.NewBytes, p.Load), size(p.NewBytes) + " new"},
			})
			fmt.Fprintf(a.stdout, "\nlimits on %d cores: first backup %.0f MB/s, repeated backup %.0f MB/s, restore %.0f MB/s\n",
				cores, r.FirstBackup/1e6, r.Repeat/1e6, r.Restore/1e6)
			return nil
		},
	}
}
