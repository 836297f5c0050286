package retention

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a calendar span as restic writes it, such as 1y6m, 7d or
// 2d12h: years, months, days and hours. Months and years are calendar
// months and years, not fixed numbers of hours.
type Duration struct {
	Years, Months, Days, Hours int
}

// ParseDuration reads a Duration written as numbers each followed by y
// (years), m (months), d (days) or h (hours), each unit at most once, in
// that order.
func ParseDuration(s string) (Duration, error) {
	if s == "" {
		return Duration{}, fmt.Errorf("retention: empty duration: want such as 1y6m or 7d")
	}
	var d Duration
	fields := []*int{&d.Years, &d.Months, &d.Days, &d.Hours}
	next := 0 // units must come in the order of fields, each once
	for rest := s; rest != ""; {
		n := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if n <= 0 {
			return Duration{}, fmt.Errorf("retention: duration %q: want numbers followed by y, m, d or h, such as 1y6m or 7d", s)
		}
		v, err := strconv.Atoi(rest[:n])
		if err != nil {
			return Duration{}, fmt.Errorf("retention: duration %q: %v", s, err)
		}
		u := strings.IndexByte("ymdh", rest[n])
		if u < next {
			return Duration{}, fmt.Errorf("retention: duration %q: unit %q: want y, m, d or h, each once, in that order", s, rest[n])
		}
		*fields[u] = v
		next = u + 1
		rest = rest[n+1:]
	}
	return d, nil
}

// Zero reports whether the span is empty.
func (d Duration) Zero() bool { return d == Duration{} }

// Before returns t minus the span: years, months and days on the calendar
// of t's location, then hours.
func (d Duration) Before(t time.Time) time.Time {
	return t.AddDate(-d.Years, -d.Months, -d.Days).Add(-time.Duration(d.Hours) * time.Hour)
}

// String writes the span as ParseDuration reads it.
func (d Duration) String() string {
	var b strings.Builder
	for _, p := range []struct {
		n    int
		unit string
	}{{d.Years, "y"}, {d.Months, "m"}, {d.Days, "d"}, {d.Hours, "h"}} {
		if p.n != 0 {
			fmt.Fprintf(&b, "%d%s", p.n, p.unit)
		}
	}
	if b.Len() == 0 {
		return "0h"
	}
	return b.String()
}
