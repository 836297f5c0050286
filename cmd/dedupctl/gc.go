package main

import (
	"context"
	"fmt"
	"time"

	"github.com/dedupstore/dedupstore/storage/dedup"

	"github.com/dedupstore/dedupstore/gc"
	"github.com/spf13/cobra"
)

type gcOptions struct {
	dryRun    bool
	threshold float64
	grace     time.Duration
}

// defaultGC holds gc's defaults, which forget --gc uses.
var defaultGC = gcOptions{threshold: 0.25, grace: 24 * time.Hour}

func (a *app) gcCommand() *cobra.Command {
	var o gcOptions
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Reclaim the space of chunks no backup uses",
		Long: `Mark every chunk a backup uses, then delete packs with nothing live, rewrite
packs with at least --repack-threshold dead bytes, and delete packs the
index does not know once older than --grace (left by a crash), and the
temporary files and incomplete uploads of processes that died once older
than --grace and an hour. --dry-run prints the plan and changes nothing.

While the repository holds damaged packs or manifests (found by check,
index rebuild or gc itself), gc deletes nothing and exits 5: run
dedupctl repair first.

Other processes, on this host or others, may be backing up meanwhile, so
collection is two-phase: the run condemns the packs it would delete
(phase 1), and deletes them (phase 2, the "sweep") once every process that
held a lease when the condemnation was written has finished, and the
condemnation is older than --grace. When no process holds a lease (no
backup is running anywhere), one run does both. Condemned packs that a
backup started to use meanwhile are spared. One collection runs at a time;
the lock of one that was killed expires after the lease TTL (10 minutes).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withStorage(func(s *dedup.Storage) error {
				out, err := collect(cmd.Context(), s, o)
				if err != nil {
					return err
				}
				if a.json {
					return a.printJSON(out)
				}
				a.printGC(out)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print the plan, change nothing")
	cmd.Flags().Float64Var(&o.threshold, "repack-threshold", defaultGC.threshold, "dead fraction of a pack at which it is rewritten")
	cmd.Flags().DurationVar(&o.grace, "grace", defaultGC.grace, "age below which unindexed packs are kept; while backups run, also new packs and condemnations")
	return cmd
}

// collect plans a collection and, unless o.dryRun, runs it.
func collect(ctx context.Context, s *dedup.Storage, o gcOptions) (gcJSON, error) {
	plan, err := s.PlanGC(ctx, gc.Options{RepackThreshold: o.threshold, GracePeriod: o.grace})
	if err != nil {
		return gcJSON{}, err
	}
	out := gcJSON{DryRun: o.dryRun, Plan: gcPlanJSON{
		DeletePacks: len(plan.Delete), RepackPacks: len(plan.Repack), OrphanPacks: len(plan.Orphans),
		Packs: plan.Packs, LiveChunks: plan.Live, DeadChunks: plan.Dead, FreedBytes: plan.FreedBytes,
		Actions: []gcActionJSON{},
	}}
	out.Plan.Phases = gcPhasesJSON{SweepNow: plan.SweepNow, SweepPacks: len(plan.Sweep), SparedPacks: plan.Spared, Waiting: plan.Waiting, CondemnedBytes: plan.CondemnedBytes}
	for _, list := range []struct {
		action string
		packs  []gc.PackAction
	}{{"sweep", plan.Sweep}, {"delete", plan.Delete}, {"repack", plan.Repack}} {
		for _, p := range list.packs {
			out.Plan.Actions = append(out.Plan.Actions, gcActionJSON{Action: list.action, Pack: p.Pack.String(), Size: p.Size, LiveChunks: p.LiveChunks, DeadChunks: p.DeadChunks, LiveBytes: p.LiveBytes})
		}
	}
	for _, orphan := range plan.Orphans {
		out.Plan.Actions = append(out.Plan.Actions, gcActionJSON{Action: "delete-orphan", Pack: orphan.Name, Size: orphan.Size})
	}
	for _, partial := range plan.Partials {
		out.Plan.Actions = append(out.Plan.Actions, gcActionJSON{Action: "delete-partial", Pack: partial.Name, Size: partial.Size})
	}
	out.Plan.PartialWrites = len(plan.Partials)
	if o.dryRun {
		plan.Close()
	} else {
		res, err := s.ExecuteGC(ctx, plan)
		if err != nil {
			return gcJSON{}, err
		}
		out.Result = &gcResultJSON{Deleted: res.Deleted, Repacked: res.Repacked, Skipped: res.Skipped, Condemned: res.Condemned, Partials: res.Partials, FreedBytes: res.FreedBytes}
	}
	return out, nil
}

// printGC prints a collection's plan and result for people.
func (a *app) printGC(out gcJSON) {
	p := out.Plan
	if ph := p.Phases; ph.SweepNow {
		a.info("plan: %d of %d packs to delete, %d to repack, %d orphans; %d live and %d dead chunks; frees %s (no backup is running: deleted now)",
			p.DeletePacks, p.Packs, p.RepackPacks, p.OrphanPacks, p.LiveChunks, p.DeadChunks, size(p.FreedBytes))
	} else {
		a.info("phase 2: %d condemned packs to delete now, %d spared (in use again), %d condemnations not yet due; frees %s",
			ph.SweepPacks, ph.SparedPacks, ph.Waiting, size(p.FreedBytes))
		a.info("phase 1: of %d packs, %d to condemn, %d to repack and condemn, %d orphans to condemn; %d live and %d dead chunks; frees %s later (backups are running)",
			p.Packs, p.DeletePacks, p.RepackPacks, p.OrphanPacks, p.LiveChunks, p.DeadChunks, size(ph.CondemnedBytes))
	}
	if p.PartialWrites > 0 {
		a.info("and %d partial writes left by processes that died, to delete now", p.PartialWrites)
	}
	if out.DryRun {
		var rows [][]string
		for _, x := range p.Actions {
			rows = append(rows, []string{x.Action, x.Pack, size(x.Size), fmt.Sprint(x.LiveChunks), fmt.Sprint(x.DeadChunks), size(x.LiveBytes)})
		}
		if len(rows) > 0 {
			a.table("ACTION\tPACK\tSIZE\tLIVE CHUNKS\tDEAD CHUNKS\tLIVE BYTES", rows)
		}
	}
	if r := out.Result; r != nil {
		a.info("done: %d packs deleted, %d condemned (%d of them repacked), %d left for a writer that claimed them; %s freed", r.Deleted, r.Condemned, r.Repacked, r.Skipped, size(r.FreedBytes))
	} else {
		a.info("dry run: nothing changed")
	}
}

type gcJSON struct {
	DryRun bool          `json:"dry_run"`
	Plan   gcPlanJSON    `json:"plan"`
	Result *gcResultJSON `json:"result,omitempty"`
}

type gcPlanJSON struct {
	Packs       int `json:"packs"`
	DeletePacks int `json:"delete_packs"`
	RepackPacks int `json:"repack_packs"`
	OrphanPacks int `json:"orphan_packs"`
	LiveChunks  int `json:"live_chunks"`
	DeadChunks  int `json:"dead_chunks"`
	// PartialWrites counts temporary files and incomplete uploads left by
	// processes that died, older than --grace and an hour.
	PartialWrites int   `json:"partial_writes"`
	FreedBytes    int64 `json:"freed_bytes"`
	// Actions lists every pack the plan deletes, condemns or rewrites.
	Actions []gcActionJSON `json:"actions"`
	// Phases: delete, repack and orphan actions condemn packs (phase 1),
	// and sweep actions delete them (phase 2); with sweep_now, the run
	// sweeps what it condemns.
	Phases gcPhasesJSON `json:"phases"`
}

type gcPhasesJSON struct {
	SweepNow       bool  `json:"sweep_now"`
	SweepPacks     int   `json:"sweep_packs"`
	SparedPacks    int   `json:"spared_packs"`
	Waiting        int   `json:"waiting_condemnations"`
	CondemnedBytes int64 `json:"condemned_bytes"`
}

type gcActionJSON struct {
	Action     string `json:"action"` // sweep, delete, repack, delete-orphan or delete-partial
	Pack       string `json:"pack"`   // pack ID; object name for an orphan; the backend's name for a partial write
	Size       int64  `json:"size"`
	LiveChunks int    `json:"live_chunks"`
	DeadChunks int    `json:"dead_chunks"`
	LiveBytes  int64  `json:"live_bytes"`
}

type gcResultJSON struct {
	Deleted    int   `json:"deleted_packs"`
	Repacked   int   `json:"repacked_packs"`
	Skipped    int   `json:"skipped_packs"`
	Condemned  int   `json:"condemned_packs"`
	Partials   int   `json:"deleted_partial_writes"`
	FreedBytes int64 `json:"freed_bytes"`
}
