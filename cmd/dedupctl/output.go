package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
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

// warn prints a line on stderr unless --quiet, clearing the progress bar
// first.
func (a *app) warn(format string, args ...any) {
	if !a.quiet {
		a.bar.clear()
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

// progress is a progress bar on stderr, of bytes and, when files is
// set, of files, shown only when stderr is a terminal and --quiet is not
// given. A nil *progress shows nothing. While it shows, warnings clear it
// first, so that they do not scroll it away.
type progress struct {
	bar      *progressbar.ProgressBar
	what     string
	mu       sync.Mutex
	files    int // done
	total    int // files to do, 0 for a stream
	finished bool
}

// progress starts a bar for total bytes (-1 if unknown: the bytes so far
// are shown) and, if files > 0, that many files.
func (a *app) progress(total int64, files int, what string) *progress {
	f, ok := a.stderr.(*os.File)
	if a.quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	p := &progress{what: what, total: files, bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
	if files > 0 {
		p.bar.Describe(fmt.Sprintf("%s 0/%d files", what, files))
	}
	a.bar = p
	return p
}

func (p *progress) add(n int) {
	if p != nil {
		p.bar.Add(n)
	}
}

// file counts a file done.
func (p *progress) file() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.files++
	p.bar.Describe(fmt.Sprintf("%s %d/%d files", p.what, p.files, p.total))
	p.mu.Unlock()
}

// clear takes the bar off the screen until it next draws.
func (p *progress) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.finished {
		p.bar.Clear()
	}
}

func (p *progress) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finished = true
	p.bar.Finish()
}
