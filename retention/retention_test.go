package retention

import (
	"errors"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // America/New_York without the system's zone files
)

// at parses an RFC 3339 time, for tables.
func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestApply(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	now := "2026-12-04T12:00:00Z"
	for _, tc := range []struct {
		name    string
		policy  Policy
		loc     *time.Location
		now     string
		backups [][2]string // name, start time
		// want maps each kept backup to its reasons; the others are removed.
		want map[string]string
	}{{
		// Names that sort against their start times: a script on names
		// kept the two oldest.
		name:   "last counts by start time, not name",
		policy: Policy{Last: 2},
		backups: [][2]string{
			{"c", "2026-12-01T00:00:00Z"}, {"b", "2026-12-02T00:00:00Z"},
			{"a", "2026-12-03T00:00:00Z"}, {"z", "2026-11-30T00:00:00Z"},
		},
		want: map[string]string{"a": "last", "b": "last"},
	}, {
		name:   "daily keeps the newest of each day, and days without backups do not count",
		policy: Policy{Daily: 2},
		backups: [][2]string{
			{"d1-early", "2026-11-20T01:00:00Z"}, {"d1-late", "2026-11-20T23:00:00Z"},
			{"d10-early", "2026-11-29T01:00:00Z"}, {"d10-late", "2026-11-29T22:00:00Z"},
			{"d0", "2026-11-19T12:00:00Z"},
		},
		want: map[string]string{"d10-late": "daily", "d1-late": "daily"},
	}, {
		name:   "a backup kept by any rule is kept, with every reason",
		policy: Policy{Last: 1, Daily: 2, Monthly: 2},
		backups: [][2]string{
			{"oct", "2026-10-15T00:00:00Z"}, {"nov-a", "2026-11-02T00:00:00Z"},
			{"nov-b", "2026-11-02T06:00:00Z"}, {"nov-c", "2026-11-03T00:00:00Z"},
		},
		want: map[string]string{"nov-c": "last,daily,monthly", "nov-b": "daily", "oct": "monthly"},
	}, {
		name:   "unlimited keeps one per period for every period",
		policy: Policy{Daily: Unlimited},
		backups: [][2]string{
			{"a", "2026-01-01T10:00:00Z"}, {"b", "2026-01-01T11:00:00Z"},
			{"c", "2026-03-01T10:00:00Z"}, {"d", "2026-06-01T10:00:00Z"},
		},
		want: map[string]string{"b": "daily", "c": "daily", "d": "daily"},
	}, {
		// 00:30 EDT and 23:30 EST on 1 November 2026 fall on one day in
		// New York and on two in UTC.
		name:   "a day is one of the location's, across the end of summer time",
		policy: Policy{Daily: 1},
		loc:    ny,
		backups: [][2]string{
			{"morning", "2026-11-01T00:30:00-04:00"}, {"night", "2026-11-01T23:30:00-05:00"},
		},
		want: map[string]string{"night": "daily"},
	}, {
		name:   "in UTC the same backups are two days",
		policy: Policy{Daily: 2},
		backups: [][2]string{
			{"morning", "2026-11-01T00:30:00-04:00"}, {"night", "2026-11-01T23:30:00-05:00"},
			{"before", "2026-10-31T12:00:00Z"},
		},
		want: map[string]string{"night": "daily", "morning": "daily"},
	}, {
		name:   "the hour repeated when summer time ends is two hours",
		policy: Policy{Hourly: 2},
		loc:    ny,
		backups: [][2]string{
			{"edt", "2026-11-01T01:30:00-04:00"}, {"est", "2026-11-01T01:30:00-05:00"},
			{"earlier", "2026-11-01T00:30:00-04:00"},
		},
		want: map[string]string{"edt": "hourly", "est": "hourly"},
	}, {
		name:   "the hour skipped when summer time starts",
		policy: Policy{Hourly: 2},
		loc:    ny,
		backups: [][2]string{
			{"est", "2026-03-08T01:59:00-05:00"}, {"edt", "2026-03-08T03:01:00-04:00"},
			{"earlier", "2026-03-08T01:01:00-05:00"},
		},
		want: map[string]string{"edt": "hourly", "est": "hourly"},
	}, {
		name:   "month ends",
		policy: Policy{Monthly: 2},
		backups: [][2]string{
			{"jan31-am", "2026-01-31T10:00:00Z"}, {"jan31-pm", "2026-01-31T23:59:59Z"},
			{"feb1", "2026-02-01T00:00:00Z"}, {"dec31", "2025-12-31T23:00:00Z"},
		},
		want: map[string]string{"feb1": "monthly", "jan31-pm": "monthly"},
	}, {
		name:   "a leap day is a day of its own",
		policy: Policy{Daily: 3, Monthly: 1},
		backups: [][2]string{
			{"feb28", "2028-02-28T12:00:00Z"}, {"feb29", "2028-02-29T12:00:00Z"},
			{"mar1", "2028-03-01T12:00:00Z"}, {"feb27", "2028-02-27T12:00:00Z"},
		},
		want: map[string]string{"mar1": "daily,monthly", "feb29": "daily", "feb28": "daily"},
	}, {
		// 29 February 2028 less a year is 1 March 2027, as Go's AddDate
		// and restic count it.
		name:   "a year back from a leap day",
		policy: Policy{Within: Duration{Years: 1}},
		now:    "2028-03-01T00:00:00Z",
		backups: [][2]string{
			{"leap", "2028-02-29T12:00:00Z"}, {"mar1", "2027-03-01T13:00:00Z"},
			{"feb28", "2027-02-28T13:00:00Z"},
		},
		want: map[string]string{"leap": "within 1y", "mar1": "within 1y"},
	}, {
		name:   "weekly counts ISO weeks, across the new year",
		policy: Policy{Weekly: 2},
		backups: [][2]string{
			{"mon-w53", "2026-12-28T12:00:00Z"}, {"thu-w53", "2026-12-31T12:00:00Z"},
			{"fri-w53", "2027-01-01T12:00:00Z"}, {"mon-w01", "2027-01-04T12:00:00Z"},
		},
		want: map[string]string{"mon-w01": "weekly", "fri-w53": "weekly"},
	}, {
		name:   "yearly",
		policy: Policy{Yearly: 2},
		backups: [][2]string{
			{"2024", "2024-06-01T00:00:00Z"}, {"2025-a", "2025-01-01T00:00:00Z"},
			{"2025-b", "2025-12-31T00:00:00Z"}, {"2026", "2026-01-01T00:00:00Z"},
		},
		want: map[string]string{"2026": "yearly", "2025-b": "yearly"},
	}, {
		// The window ends at the newest backup, not now: backups that
		// stopped a month ago are not all removed.
		name:   "within counts back from the newest backup",
		policy: Policy{Within: Duration{Days: 2}},
		backups: [][2]string{
			{"newest", "2026-11-01T12:00:00Z"}, {"1d", "2026-10-31T12:00:00Z"},
			{"2d", "2026-10-30T12:00:00Z"}, {"3d", "2026-10-29T12:00:00Z"},
		},
		want: map[string]string{"newest": "within 2d", "1d": "within 2d"},
	}, {
		// A backup whose clock ran years ahead would otherwise move the
		// window and remove every other backup.
		name:   "a backup in the future is kept and does not move the window",
		policy: Policy{Within: Duration{Days: 2}, Last: 1},
		backups: [][2]string{
			{"future", "2030-01-01T00:00:00Z"}, {"today", "2026-12-04T06:00:00Z"},
			{"yesterday", "2026-12-03T06:00:00Z"}, {"old", "2026-11-01T00:00:00Z"},
		},
		want: map[string]string{"future": "last,within 2d", "today": "within 2d", "yesterday": "within 2d"},
	}, {
		name:    "no backups",
		policy:  Policy{Last: 3},
		backups: nil,
		want:    map[string]string{},
	}, {
		name:   "backups started at the same time are ordered by name",
		policy: Policy{Last: 1},
		backups: [][2]string{
			{"a", "2026-12-01T00:00:00Z"}, {"b", "2026-12-01T00:00:00Z"},
		},
		want: map[string]string{"b": "last"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			loc := tc.loc
			if loc == nil {
				loc = time.UTC
			}
			var backups []Backup
			for _, b := range tc.backups {
				backups = append(backups, Backup{Name: b[0], Started: at(t, b[1])})
			}
			n := now
			if tc.now != "" {
				n = tc.now
			}
			got, err := tc.policy.Apply(backups, loc, at(t, n))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(backups) {
				t.Fatalf("%d decisions for %d backups", len(got), len(backups))
			}
			for i, d := range got {
				if i > 0 && d.Started.After(got[i-1].Started) {
					t.Errorf("decision %d (%s) is newer than the one before", i, d.Name)
				}
				want, keep := tc.want[d.Name]
				if d.Keep != keep || strings.Join(d.Reasons, ",") != want {
					t.Errorf("%s: keep %v (%s), want keep %v (%s)", d.Name, d.Keep, strings.Join(d.Reasons, ","), keep, want)
				}
			}
		})
	}
}

func TestApplyRefuses(t *testing.T) {
	backups := []Backup{{Name: "a", Started: time.Now()}}
	if _, err := (Policy{}).Apply(backups, time.UTC, time.Now()); !errors.Is(err, ErrEmptyPolicy) {
		t.Errorf("empty policy: %v, want ErrEmptyPolicy", err)
	}
	for _, p := range []Policy{{Daily: -2}, {Last: 1, Within: Duration{Days: -1}}} {
		if _, err := p.Apply(backups, time.UTC, time.Now()); err == nil {
			t.Errorf("%+v: no error", p)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Duration
		err  bool
	}{
		{in: "1y6m", want: Duration{Years: 1, Months: 6}},
		{in: "7d", want: Duration{Days: 7}},
		{in: "2d12h", want: Duration{Days: 2, Hours: 12}},
		{in: "1y2m3d4h", want: Duration{1, 2, 3, 4}},
		{in: "24h", want: Duration{Hours: 24}},
		{in: "", err: true},
		{in: "7", err: true},
		{in: "d", err: true},
		{in: "1h1d", err: true},
		{in: "1d1d", err: true},
		{in: "1w", err: true},
		{in: "-1d", err: true},
		{in: "99999999999999999999d", err: true},
	} {
		got, err := ParseDuration(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseDuration(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
		}
		if err == nil {
			if back, _ := ParseDuration(got.String()); back != got {
				t.Errorf("%q: String %q reads back as %+v", tc.in, got.String(), back)
			}
		}
	}
}
