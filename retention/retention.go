// Package retention decides which backups a retention policy keeps. It owns
// the policy and nothing else: it reads no repository and removes nothing,
// so an agent can apply it in-process to its own list of backups and remove
// what it returns, as `dedupctl forget` does.
//
// The rules are restic's (`restic forget`): a backup kept by any rule is
// kept; --keep-last N keeps the N newest; each calendar rule keeps the
// newest backup of each of its N newest periods that hold a backup; and
// --keep-within D keeps every backup started within D of the newest one.
// Periods are counted by each backup's start time, never by its name.
package retention

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Unlimited as a rule's count keeps the newest backup of every period.
const Unlimited = -1

// Policy says how many backups each rule keeps. A zero count disables its
// rule; Unlimited applies it to every period.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	// Within keeps every backup started within it of the newest backup
	// (restic's --keep-within), or of now if the newest is in the future.
	Within Duration
}

// ErrEmptyPolicy is returned by Apply for a policy without any rule: it
// would remove every backup, which is never what a caller means.
var ErrEmptyPolicy = errors.New("retention: the policy has no rule, so it would remove every backup")

// Empty reports whether the policy has no rule.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 && p.Within.Zero()
}

// Validate reports a negative count other than Unlimited, or a negative
// duration.
func (p Policy) Validate() error {
	for _, r := range p.rules() {
		if r.count < Unlimited {
			return fmt.Errorf("retention: --keep-%s %d: want a count of 0 or more, or %d for unlimited", r.name, r.count, Unlimited)
		}
	}
	if p.Within.Years < 0 || p.Within.Months < 0 || p.Within.Days < 0 || p.Within.Hours < 0 {
		return fmt.Errorf("retention: --keep-within %s: want a duration of 0 or more", p.Within)
	}
	return nil
}

// Backup is what the policy needs to know of a backup. Name is the caller's
// and is only passed through.
type Backup struct {
	Name    string
	Started time.Time
}

// Decision is the policy's verdict on one backup.
type Decision struct {
	Backup
	Keep bool
	// Reasons names the rules that keep the backup, such as "last",
	// "daily" or "within 7d"; empty when it is removed.
	Reasons []string
}

// rule is one counting rule: the period a backup falls in, as a
// comparable key, and how many periods to keep.
type rule struct {
	name   string
	count  int
	period func(t time.Time, i int) string
}

func (p Policy) rules() []rule {
	return []rule{
		// Each backup is a period of its own for --keep-last.
		{"last", p.Last, func(_ time.Time, i int) string { return strconv.Itoa(i) }},
		// The zone offset separates the two wall-clock hours of the night
		// a zone leaves summer time.
		{"hourly", p.Hourly, func(t time.Time, _ int) string { return t.Format("2006-01-02T15 -0700") }},
		{"daily", p.Daily, func(t time.Time, _ int) string { return t.Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time, _ int) string {
			y, w := t.ISOWeek()
			return fmt.Sprintf("%d-W%02d", y, w)
		}},
		{"monthly", p.Monthly, func(t time.Time, _ int) string { return t.Format("2006-01") }},
		{"yearly", p.Yearly, func(t time.Time, _ int) string { return t.Format("2006") }},
	}
}

// Apply decides, for each backup, whether the policy keeps it. Calendar
// periods are those of loc (a day in loc, not in UTC); now is when the
// policy is applied. It returns the decisions newest first (by start time,
// then by name), one per backup, and ErrEmptyPolicy for an empty policy.
func (p Policy) Apply(backups []Backup, loc *time.Location, now time.Time) ([]Decision, error) {
	if p.Empty() {
		return nil, ErrEmptyPolicy
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	out := make([]Decision, len(backups))
	for i, b := range backups {
		out[i] = Decision{Backup: b}
	}
	slices.SortStableFunc(out, func(x, y Decision) int {
		return cmp.Or(y.Started.Compare(x.Started), cmp.Compare(y.Name, x.Name))
	})
	rules := p.rules()
	last := make([]string, len(rules))
	for i := range out {
		t := out[i].Started.In(loc)
		for r := range rules {
			if rules[r].count == 0 {
				continue
			}
			if period := rules[r].period(t, i); period != last[r] {
				last[r] = period
				if rules[r].count > 0 {
					rules[r].count--
				}
				out[i].Keep = true
				out[i].Reasons = append(out[i].Reasons, rules[r].name)
			}
		}
	}
	if !p.Within.Zero() && len(out) > 0 {
		// The newest backup, not now, anchors the window, so that backups
		// that stopped being taken are not all removed (restic's rule);
		// but never a backup in the future, whose clock was wrong.
		ref := out[0].Started
		if ref.After(now) {
			ref = now
		}
		cutoff := p.Within.Before(ref.In(loc))
		for i := range out {
			if out[i].Started.After(cutoff) {
				out[i].Keep = true
				out[i].Reasons = append(out[i].Reasons, "within "+p.Within.String())
			}
		}
	}
	return out, nil
}
