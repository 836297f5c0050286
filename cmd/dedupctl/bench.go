package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/dedupstore/dedupstore/bench"
	"github.com/spf13/cobra"
)

type benchOptions struct {
	chunkers string
	avgBits  string
	mins     string
	maxs     string
	plot     string
	deltas   bool
}

func (a *app) benchCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure on your own data"}
	var o benchOptions
	chunker := &cobra.Command{
		Use:   "chunker FILE...",
		Short: "Compare chunker settings on successive versions of your data",
		Long: `Cut FILEs, taken as successive versions of one stream (nightly dumps of a
database, say), with every setting of a grid, and print per setting the
chunking speed, the chunk count and sizes, the bytes each version would add,
and the overall dedup ratio. Nothing is stored. The grid is every chunker of
--chunker × every average size 2^--avg-bits, with --min and --max sizes (or
a quarter and four times the average). --plot draws the size distributions
and dedup ratios as an SVG chart. --deltas also compresses each setting's new
chunks as a repository of dedupctl init's defaults would, and prints what
they store without deltas and with them (about ten times slower); dedupctl
bench deltas compares ways of making deltas.`,
		Args: minArgs(1, "the files to study, oldest first"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var kinds []string
			for _, k := range strings.Split(o.chunkers, ",") {
				kind, ok := chunkerKinds[strings.TrimSpace(k)]
				if !ok {
					return usagef("--chunker %q: want fastcdc and/or restic", k)
				}
				kinds = append(kinds, kind)
			}
			avgBits, err := intList("avg-bits", o.avgBits, strconv.Atoi)
			if err != nil {
				return err
			}
			parse := func(s string) (int, error) { return parseSize("min/max", s) }
			mins, err := intList("min", o.mins, parse)
			if err != nil {
				return err
			}
			maxs, err := intList("max", o.maxs, parse)
			if err != nil {
				return err
			}
			grid, err := bench.Grid(kinds, avgBits, mins, maxs)
			if err != nil {
				return usageError{err}
			}
			results, err := bench.StudyChunkers(cmd.Context(), args, grid)
			if err != nil {
				return err
			}
			// stored[i]: what setting i stores of the files compressed
			// whole, then with deltas.
			var stored [][2]int64
			if o.deltas {
				for _, p := range grid {
					rs, err := bench.StudyDeltas(cmd.Context(), args, p, []bench.DeltaVariant{{Level: bench.RepositoryDeltas.Level}, bench.RepositoryDeltas})
					if err != nil {
						return err
					}
					stored = append(stored, [2]int64{rs[0].Stored(), rs[1].Stored()})
				}
			}
			if o.plot != "" {
				f, err := os.Create(o.plot)
				if err != nil {
					return err
				}
				err = bench.PlotSVG(f, results)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return err
				}
			}
			if a.json {
				out := []benchJSON{}
				for i, r := range results {
					row := benchJSON{Chunker: r.Params.Kind, MinSize: r.Params.MinSize, AvgSize: r.Params.AvgSize, MaxSize: r.Params.MaxSize,
						MBps: r.MBps(), Chunks: r.Chunks, MeanChunk: r.Mean, P50Chunk: r.P50, P99Chunk: r.P99, AddedBytes: r.Added, DedupRatio: r.DedupRatio}
					if o.deltas {
						row.StoredBytes, row.DeltaStoredBytes = stored[i][0], stored[i][1]
					}
					out = append(out, row)
				}
				return a.printJSON(out)
			}
			var rows [][]string
			head := "CHUNKER MIN/AVG/MAX\tMB/S\tCHUNKS\tMEAN\tP50\tP99\tADDED PER VERSION\tDEDUP"
			if o.deltas {
				head += "\tSTORED\tWITH DELTAS"
			}
			for i, r := range results {
				var added []string
				for _, n := range r.Added {
					added = append(added, size(n))
				}
				row := []string{r.Label(), fmt.Sprintf("%.0f", r.MBps()), fmt.Sprint(r.Chunks), size(int64(r.Mean)), size(int64(r.P50)), size(int64(r.P99)), strings.Join(added, " + "), fmt.Sprintf("%.2f", r.DedupRatio)}
				if o.deltas {
					row = append(row, size(stored[i][0]), size(stored[i][1]))
				}
				rows = append(rows, row)
			}
			a.table(head, rows)
			if o.plot != "" {
				a.info("chart written to %s", o.plot)
			}
			return nil
		},
	}
	f := chunker.Flags()
	f.StringVar(&o.chunkers, "chunker", "fastcdc,restic", "chunkers to compare")
	f.StringVar(&o.avgBits, "avg-bits", "14,16,18,20", "average chunk sizes, as powers of two")
	f.StringVar(&o.mins, "min", "", "minimum chunk sizes (default a quarter of the average)")
	f.StringVar(&o.maxs, "max", "", "maximum chunk sizes (default four times the average)")
	f.StringVar(&o.plot, "plot", "", "write an SVG chart to this file")
	f.BoolVar(&o.deltas, "deltas", false, "also print the bytes each setting stores compressed, without deltas and with them")
	cmd.AddCommand(chunker, a.benchDeltasCommand(), a.benchPartsCommand())
	return cmd
}

func intList(flag, s string, parse func(string) (int, error)) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := parse(f)
		if err != nil {
			return nil, usagef("--%s %q: %v", flag, s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

type benchJSON struct {
	Chunker    string  `json:"chunker"`
	MinSize    int     `json:"min_size"`
	AvgSize    int     `json:"avg_size"`
	MaxSize    int     `json:"max_size"`
	MBps       float64 `json:"mb_per_s"`
	Chunks     int     `json:"chunks"`
	MeanChunk  int     `json:"mean_chunk"`
	P50Chunk   int     `json:"p50_chunk"`
	P99Chunk   int     `json:"p99_chunk"`
	AddedBytes []int64 `json:"added_bytes"`
	DedupRatio float64 `json:"dedup_ratio"`
	// With --deltas: the bytes stored compressed, without deltas and with.
	StoredBytes      int64 `json:"stored_bytes,omitempty"`
	DeltaStoredBytes int64 `json:"delta_stored_bytes,omitempty"`
}
