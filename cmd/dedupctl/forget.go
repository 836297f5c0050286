package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/retention"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/spf13/cobra"
)

func (a *app) forgetCommand() *cobra.Command {
	var (
		p      retention.Policy
		within string
		dryRun bool
		thenGC bool
	)
	cmd := &cobra.Command{
		Use:   "forget DIR",
		Short: "Remove the backups of DIR that a retention policy does not keep",
		Long: `Apply a retention policy to the ended backups of DIR and remove those it
does not keep, with restic's rules: a backup kept by any rule is kept;
--keep-last N keeps the N newest; --keep-hourly, --keep-daily,
--keep-weekly (ISO weeks), --keep-monthly and --keep-yearly N keep the
newest backup of each of the N newest hours, days, weeks, months or years
that hold one; --keep-within D keeps every backup started within D (such
as 1y6m, 30d or 2d12h; m is months) of the newest one. A count of -1 keeps
one for every period. Backups are counted by their start time in the local
time zone (TZ), never by their names. Backups still in progress are left
alone.

At least one rule is needed. --dry-run prints what would be kept and
removed and removes nothing; --gc collects garbage afterwards, with gc's
defaults, to reclaim the space.

  dedupctl forget commerce/0 --keep-daily 7 --keep-weekly 4 --keep-monthly 12`,
		Args: exactArgs(1, "one directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := strings.TrimSuffix(args[0], "/")
			if err := storage.ValidateDir(dir); err != nil {
				return err
			}
			if within != "" {
				d, err := retention.ParseDuration(within)
				if err != nil {
					return usageError{err}
				}
				p.Within = d
			}
			if p.Empty() {
				return usagef("forget needs a policy, such as --keep-last 7 or --keep-daily 7 (%v)", retention.ErrEmptyPolicy)
			}
			if err := p.Validate(); err != nil {
				return usageError{err}
			}
			return a.withStorage(func(s *dedup.Storage) error {
				ctx := cmd.Context()
				all, err := s.Backups(ctx, dir)
				if err != nil {
					return err
				}
				var ended []retention.Backup
				out := forgetJSON{Dir: dir, DryRun: dryRun, Keep: []forgetBackupJSON{}, Remove: []forgetBackupJSON{}, InProgress: []forgetBackupJSON{}}
				for _, b := range all {
					if b.State == index.Ended {
						ended = append(ended, retention.Backup{Name: b.Name, Started: b.Started})
					} else {
						out.InProgress = append(out.InProgress, forgetBackupJSON{Name: b.Name, Started: b.Started})
					}
				}
				if len(all) == 0 {
					return fmt.Errorf("no backups in %s: %w", dir, storage.ErrNotFound)
				}
				decisions, err := p.Apply(ended, time.Local, time.Now())
				if err != nil {
					return err
				}
				var rows [][]string
				for _, d := range decisions {
					b := forgetBackupJSON{Name: d.Name, Started: d.Started, Reasons: d.Reasons}
					action := "remove"
					if d.Keep {
						out.Keep = append(out.Keep, b)
						action = "keep"
					} else {
						out.Remove = append(out.Remove, b)
					}
					rows = append(rows, []string{dir + "/" + d.Name, when(d.Started), action, strings.Join(d.Reasons, ", ")})
				}
				for _, b := range out.InProgress {
					rows = append(rows, []string{dir + "/" + b.Name, when(b.Started), "keep", "in progress"})
				}
				if !a.json {
					a.table("BACKUP\tSTARTED\tACTION\tKEPT BY", rows)
				}
				if dryRun {
					a.info("dry run: would keep %d and remove %d of %d backups; nothing removed", len(out.Keep)+len(out.InProgress), len(out.Remove), len(all))
					return a.printForget(out)
				}
				for _, b := range out.Remove {
					if err := s.RemoveBackup(ctx, dir, b.Name); err != nil {
						return err
					}
				}
				a.info("kept %d and removed %d of %d backups", len(out.Keep)+len(out.InProgress), len(out.Remove), len(all))
				if thenGC {
					g, err := collect(ctx, s, defaultGC)
					if err != nil {
						return err
					}
					out.GC = &g
					if !a.json {
						a.printGC(g)
					}
				} else if len(out.Remove) > 0 {
					a.info("dedupctl gc reclaims the space no backup uses any more")
				}
				return a.printForget(out)
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&p.Last, "keep-last", 0, "keep the `N` newest backups")
	f.IntVar(&p.Hourly, "keep-hourly", 0, "keep the newest backup of each of the `N` newest hours with backups")
	f.IntVar(&p.Daily, "keep-daily", 0, "keep the newest backup of each of the `N` newest days with backups")
	f.IntVar(&p.Weekly, "keep-weekly", 0, "keep the newest backup of each of the `N` newest ISO weeks with backups")
	f.IntVar(&p.Monthly, "keep-monthly", 0, "keep the newest backup of each of the `N` newest months with backups")
	f.IntVar(&p.Yearly, "keep-yearly", 0, "keep the newest backup of each of the `N` newest years with backups")
	f.StringVar(&within, "keep-within", "", "keep the backups started within `DURATION` (such as 1y6m, 30d, 2d12h) of the newest")
	f.BoolVar(&dryRun, "dry-run", false, "print what would be kept and removed, remove nothing")
	f.BoolVar(&thenGC, "gc", false, "collect garbage afterwards (dedupctl gc, with its defaults)")
	return cmd
}

// printForget prints forget's JSON; what people read is printed as it
// happens.
func (a *app) printForget(out forgetJSON) error {
	if a.json {
		return a.printJSON(out)
	}
	return nil
}

type forgetJSON struct {
	Dir    string             `json:"dir"`
	DryRun bool               `json:"dry_run"`
	Keep   []forgetBackupJSON `json:"keep"`
	Remove []forgetBackupJSON `json:"remove"`
	// InProgress lists the backups left alone because they have not ended.
	InProgress []forgetBackupJSON `json:"in_progress"`
	GC         *gcJSON            `json:"gc,omitempty"`
}

type forgetBackupJSON struct {
	Name    string    `json:"name"`
	Started time.Time `json:"started"`
	// Reasons names the rules that keep the backup: last, hourly, daily,
	// weekly, monthly, yearly, or "within D".
	Reasons []string `json:"reasons,omitempty"`
}
