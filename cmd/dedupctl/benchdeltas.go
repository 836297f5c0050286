package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/dedupstore/dedupstore/bench"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/spf13/cobra"
)

type deltaOptions struct {
	features, bases, votes, gains, levels string
}

// benchDeltasCommand is dedupctl bench deltas: the delta study of
// bench.StudyDeltas on the user's files, over a grid of variants.
func (a *app) benchDeltasCommand() *cobra.Command {
	var o deltaOptions
	cmd := &cobra.Command{
		Use:   "deltas FILE...",
		Short: "Measure what storing similar chunks as deltas saves on your data",
		Long: `Cut FILEs, taken as successive versions of one stream (nightly dumps of a
database, say), with the default chunker, and store each version's new chunks
as every variant of the grid would: compressed whole, or as a delta against
the stored chunks sharing the most features with it, when that is --gain
times smaller. Print per variant the bytes each version adds, the ratio of
logical to stored bytes, how many new chunks became deltas, and the speed of
finding bases and encoding deltas on one core. The first row stores every
chunk whole. Nothing is written; memory is every chunk stored whole.`,
		Args: minArgs(1, "the files to study, oldest first"),
		RunE: func(cmd *cobra.Command, args []string) error {
			lists := map[string][]int{}
			for flag, s := range map[string]string{"features": o.features, "bases": o.bases, "votes": o.votes, "gain": o.gains} {
				l, err := intList(flag, s, strconv.Atoi)
				if err != nil {
					return err
				}
				lists[flag] = l
			}
			var variants []bench.DeltaVariant
			for _, level := range strings.Split(o.levels, ",") {
				variants = append(variants, bench.DeltaVariant{Level: level})
				for _, f := range lists["features"] {
					for _, b := range lists["bases"] {
						for _, v := range lists["votes"] {
							for _, g := range lists["gain"] {
								variants = append(variants, bench.DeltaVariant{Features: f, Bases: b, MinVotes: v, MinGain: g, Level: level})
							}
						}
					}
				}
			}
			results, err := bench.StudyDeltas(cmd.Context(), args, chunkstore.DefaultChunkerParams(), variants)
			if err != nil {
				return usageError{err}
			}
			if a.json {
				return a.printJSON(results)
			}
			var rows [][]string
			for _, r := range results {
				var added []string
				for _, n := range r.Added {
					added = append(added, size(n))
				}
				speed := "-"
				if r.DeltaSeconds > 0 {
					speed = fmt.Sprintf("%.0f", float64(r.Logical)/r.DeltaSeconds/1e6)
				}
				rows = append(rows, []string{r.Variant.String(), strings.Join(added, " + "), size(r.Stored()), fmt.Sprintf("%.2f", r.Ratio()), fmt.Sprintf("%d/%d", r.Deltas, r.NewChunks), speed})
			}
			a.table("VARIANT\tADDED PER VERSION\tSTORED\tLOGICAL÷STORED\tDELTAS/NEW\tMB/S", rows)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.features, "features", "4,8,16", "features per chunk")
	f.StringVar(&o.bases, "bases", "1,2", "bases per delta: the stored chunks sharing the most features")
	f.StringVar(&o.votes, "votes", "1,2", "features a stored chunk must share to be a base")
	f.StringVar(&o.gains, "gain", "2,4", "how many times smaller than the chunk compressed whole a delta must be")
	f.StringVar(&o.levels, "level", "fastest", "zstd levels: fastest, default, better")
	return cmd
}
