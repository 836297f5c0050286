package main

import (
	"fmt"
	"strings"

	"github.com/dedupstore/dedupstore/bench"
	"github.com/dustin/go-humanize"
)

func mib(n int64) string { return humanize.IBytes(uint64(max(n, 0))) }

func markdown(r report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### Three full backups of MariaDB (sysbench %s tables x %s rows; %s, then %s at %s tx/s between them)\n\n",
		r.Options["tables"], r.Options["rows"], r.Options["write1"], r.Options["write2"], r.Options["rate2"])
	fmt.Fprintf(&b, "%s, 2 cores, %s. mariabackup --stream=xbstream piped straight into `dedupctl backup --stdin`.\n\n", r.CPU, r.Date)
	b.WriteString("| backup | logical | added to the repository | repository | logical ÷ stored (cumulative) | MB/s | dedupctl peak RSS | file storage MB/s | file storage total |\n|---|---|---|---|---|---|---|---|---|\n")
	var fileTotal int64
	for _, x := range r.Backups {
		fileTotal += x.FileStoredSum
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f | %.0f | %.0f MiB | %.0f | %s |\n", x.Name, mib(x.LogicalBytes), mib(x.AddedBytes), mib(x.StoredBytes), x.Ratio, x.MBps, x.PeakRSSMiB, x.FileMBps, mib(fileTotal))
	}
	fmt.Fprintf(&b, "\nRestore of backup 3 (`dedupctl cat`, SHA-256 equal to the stream): %.0f MB/s, peak RSS %.0f MiB.\n\n", r.Restore["mb_per_s"], r.Restore["peak_rss_mib"])
	b.WriteString("#### Repository settings, side by side on the same three streams (read from disk)\n\n| dedupctl init | stored after 3 backups | logical ÷ stored | chunks | ingest MB/s |\n|---|---|---|---|---|\n")
	for _, x := range r.Settings {
		fmt.Fprintf(&b, "| `%s` | %s | %.2f | %d | %.0f |\n", x.Setting, mib(x.StoredBytes), x.Ratio, x.Chunks, x.MBps)
	}
	b.WriteString("\n#### Chunkers on the three streams\n\n")
	studyTable(&b, r.Chunkers)
	b.WriteString("\n#### Chunkers on 256 MiB of zero-padded pages, then the same with 4 KiB inserted mid-file\n\n| chunker min/avg/max | mean chunk | bytes the insert stores again |\n|---|---|---|\n")
	for _, x := range r.PageStudy {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", x.Label(), mib(int64(x.Mean)), mib(x.Added[len(x.Added)-1]))
	}
	return b.String()
}

func studyTable(b *strings.Builder, results []bench.StudyResult) {
	b.WriteString("| chunker min/avg/max | MB/s | chunks | mean | p50 | p99 | added per backup | dedup |\n|---|---|---|---|---|---|---|---|\n")
	for _, x := range results {
		var added []string
		for _, n := range x.Added {
			added = append(added, mib(n))
		}
		fmt.Fprintf(b, "| %s | %.0f | %d | %s | %s | %s | %s | %.2f |\n", x.Label(), x.MBps(), x.Chunks, mib(int64(x.Mean)), mib(int64(x.P50)), mib(int64(x.P99)), strings.Join(added, " + "), x.DedupRatio)
	}
}
