package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under a header (none if empty), in aligned columns.
func (a *app) table(header string, rows [][]string) {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	if header != "" {
		fmt.Fprintln(tw, header)
	}
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// info prints a line for people; nothing with --json.
func (a *app) info(format string, args ...any) {
	if !a.json {
		fmt.Fprintf(a.stdout, format+"\n", args...)
	}
}

// warn prints a line on stderr unless --quiet.
func (a *app) warn(format string, args ...any) {
	if !a.quiet {
		fmt.Fprintf(a.stderr, "dedupctl: "+format+"\n", args...)
	}
}

// printable returns s as it is if it prints as itself, and quoted with
// escapes otherwise (bytes that are not UTF-8, control characters).
func printable(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return s
	}
	return strconv.Quote(s)
}

func size(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return humanize.Bytes(uint64(float64(n)/d.Seconds())) + "/s"
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// progress is a bytes progress bar on stderr, shown only when stderr is a
// terminal and --quiet is not given. Its zero value shows nothing.
type progress struct{ bar *progressbar.ProgressBar }

func (a *app) progress(total int64, what string) progress {
	f, ok := a.stderr.(*os.File)
	if a.quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return progress{}
	}
	return progress{progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

func (p progress) add(n int) {
	if p.bar != nil {
		p.bar.Add(n)
	}
}

func (p progress) done() {
	if p.bar != nil {
		p.bar.Finish()
	}
}

// counter counts the bytes written through it into a progress bar.
type counter struct {
	w io.Writer
	p progress
	n int64
}

func (c *counter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.p.add(n)
	return n, err
}
