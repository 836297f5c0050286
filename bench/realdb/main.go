// Command realdb measures dedupstore on a real database: three full backups
// of a private MariaDB under a sysbench write load, each streamed by
// mariabackup straight into dedupctl, the same streams into the plain file
// storage, a verified restore, and a chunker study of the streams. It
// installs mariadb-server, mariadb-backup and sysbench from Debian's
// packages when they are missing, touches no system database, and writes
// its report to -out. `make bench-realdb` runs it; see its flags for a
// quick run.
package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dedupstore/dedupstore/bench"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/file"
)

type options struct {
	dedupctl string
	tables   int
	rows     int
	write1   time.Duration
	write2   time.Duration
	rate2    int
	threads  int
	out      string
	streams  string
}

func main() {
	var o options
	flag.StringVar(&o.dedupctl, "dedupctl", "bin/dedupctl", "the dedupctl binary to measure")
	flag.IntVar(&o.tables, "tables", 8, "sysbench tables")
	flag.IntVar(&o.rows, "rows", 400000, "rows per table")
	flag.DurationVar(&o.write1, "write1", 60*time.Second, "heavy oltp_write_only load (pareto) between backups 1 and 2")
	flag.DurationVar(&o.write2, "write2", 20*time.Second, "light load between backups 2 and 3")
	flag.IntVar(&o.rate2, "rate2", 50, "transactions per second of the light load")
	flag.IntVar(&o.threads, "threads", 4, "sysbench threads")
	flag.StringVar(&o.out, "out", "bench/results", "directory for the report, the chart and the raw figures")
	flag.StringVar(&o.streams, "streams", "", "if set, a directory to keep the three mariabackup streams in (stream1.xbstream ...), for studies such as dedupctl bench chunker; by default they go with the temporary directory")
	flag.Parse()
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "realdb:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "realdb: "+format+"\n", args...)
}

// ensurePackages installs what is missing from Debian's packages.
func ensurePackages() error {
	var missing []string
	for bin, pkg := range map[string]string{"mariadbd": "mariadb-server", "mariabackup": "mariadb-backup", "sysbench": "sysbench"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				missing = append(missing, pkg)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	logf("installing %v", missing)
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %v: %v\n%s", args, err, out)
		}
	}
	return nil
}

// backupResult is one backup's figures.
type backupResult struct {
	Name          string  `json:"name"`
	LogicalBytes  int64   `json:"logical_bytes"`
	AddedBytes    int64   `json:"added_bytes"`
	StoredBytes   int64   `json:"stored_bytes"`
	Ratio         float64 `json:"cumulative_ratio"`
	Seconds       float64 `json:"seconds"`
	MBps          float64 `json:"mb_per_s"`
	PeakRSSMiB    float64 `json:"peak_rss_mib"`
	FileSeconds   float64 `json:"file_storage_seconds"`
	FileMBps      float64 `json:"file_storage_mb_per_s"`
	FileStoredSum int64   `json:"file_storage_bytes"`
}

type report struct {
	Date      string              `json:"date"`
	CPU       string              `json:"cpu"`
	Options   map[string]string   `json:"options"`
	Backups   []backupResult      `json:"backups"`
	Restore   map[string]float64  `json:"restore"`
	Settings  []settingResult     `json:"settings"`
	Chunkers  []bench.StudyResult `json:"chunkers_streams"`
	PageStudy []bench.StudyResult `json:"chunkers_pages_insert"`
	Extra     map[string]any      `json:"extra,omitempty"`
}

func run(ctx context.Context, o options) error {
	if err := ensurePackages(); err != nil {
		return err
	}
	bin, err := filepath.Abs(o.dedupctl)
	if err != nil {
		return err
	}
	for _, dir := range []string{o.out, o.streams} {
		if err := os.MkdirAll(cmp.Or(dir, "."), 0o755); err != nil {
			return err
		}
	}
	work, err := os.MkdirTemp("", "realdb-")
	if err != nil {
		return err
	}
	dedupctl, err := newDedupctl(bin, work)
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	db, err := startMariaDB(ctx, work)
	if err != nil {
		return err
	}
	defer db.stop()

	logf("sysbench prepare: %d tables x %d rows", o.tables, o.rows)
	sb := func(test string, extra ...string) error {
		args := append([]string{test, "--db-driver=mysql", "--mysql-socket=" + db.socket, "--mysql-user=root", "--mysql-db=sbtest",
			"--tables=" + strconv.Itoa(o.tables), "--table-size=" + strconv.Itoa(o.rows), "--threads=" + strconv.Itoa(o.threads)}, extra...)
		out, err := exec.CommandContext(ctx, "sysbench", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("sysbench %v: %v\n%s", args, err, out)
		}
		return nil
	}
	if err := sb("oltp_read_write", "prepare"); err != nil {
		return err
	}

	repo := filepath.Join(work, "repo")
	if out, err := dedupctl.cmd(ctx, repo, "init").CombinedOutput(); err != nil {
		return fmt.Errorf("dedupctl init: %v: %s", err, out)
	}
	fileStore := file.New(filepath.Join(work, "filestore"))
	rep := report{Date: time.Now().UTC().Format("2006-01-02"), CPU: cpuName(), Restore: map[string]float64{},
		Options: map[string]string{"tables": strconv.Itoa(o.tables), "rows": strconv.Itoa(o.rows), "write1": o.write1.String(), "write2": o.write2.String(), "rate2": strconv.Itoa(o.rate2)}}
	var streams []string
	var lastSum [32]byte
	var prevStored int64
	for i := 1; i <= 3; i++ {
		switch i {
		case 2:
			logf("oltp_write_only for %v (pareto)", o.write1)
			if err := sb("oltp_write_only", "--time="+strconv.Itoa(int(o.write1.Seconds())), "--rand-type=pareto", "run"); err != nil {
				return err
			}
		case 3:
			logf("oltp_write_only for %v at %d tx/s", o.write2, o.rate2)
			if err := sb("oltp_write_only", "--time="+strconv.Itoa(int(o.write2.Seconds())), "--rate="+strconv.Itoa(o.rate2), "run"); err != nil {
				return err
			}
		}
		stream := filepath.Join(cmp.Or(o.streams, work), fmt.Sprintf("stream%d.xbstream", i))
		name := fmt.Sprintf("b%d", i)
		logf("backup %d", i)
		res, sum, err := backupOnce(ctx, db, dedupctl, repo, name, stream, work)
		if err != nil {
			return err
		}
		lastSum = sum
		st, err := stats(ctx, dedupctl, repo)
		if err != nil {
			return err
		}
		res.StoredBytes, res.AddedBytes = st.StoredBytes, st.StoredBytes-prevStored
		res.Ratio = float64(st.LogicalBytes) / float64(st.StoredBytes)
		prevStored = st.StoredBytes
		res.FileSeconds, res.FileStoredSum, err = fileBackup(ctx, fileStore, name, stream)
		if err != nil {
			return err
		}
		res.FileMBps = float64(res.LogicalBytes) / res.FileSeconds / 1e6
		rep.Backups = append(rep.Backups, res)
		streams = append(streams, stream)
	}

	logf("restore of backup 3")
	start := time.Now()
	cmd := dedupctl.cmd(ctx, repo, "cat", "bench/0/b3", "xbstream")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, out)
	if err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("dedupctl cat: %w", err)
	}
	secs := time.Since(start).Seconds()
	if [32]byte(h.Sum(nil)) != lastSum {
		return errors.New("the restored stream differs from backup 3's stream")
	}
	rep.Restore["bytes"] = float64(n)
	rep.Restore["seconds"] = secs
	rep.Restore["mb_per_s"] = float64(n) / secs / 1e6
	rep.Restore["peak_rss_mib"] = peakRSS(cmd)

	logf("repository settings on the same streams")
	for _, setting := range compareSettings {
		r, err := ingestStreams(ctx, dedupctl, filepath.Join(work, "repo-"+strings.ReplaceAll(setting, " ", "")), setting, streams)
		if err != nil {
			return err
		}
		rep.Settings = append(rep.Settings, r)
	}

	logf("chunker study")
	grid, err := bench.Grid([]string{chunkstore.ChunkerFastCDC, chunkstore.ChunkerRestic}, []int{14, 16, 18, 20}, nil, nil)
	if err != nil {
		return err
	}
	if rep.Chunkers, err = bench.StudyChunkers(ctx, streams, grid); err != nil {
		return err
	}
	pages, err := pageInsertFiles(work)
	if err != nil {
		return err
	}
	if rep.PageStudy, err = bench.StudyChunkers(ctx, pages, grid); err != nil {
		return err
	}
	svg, err := os.Create(filepath.Join(o.out, "chunkers.svg"))
	if err != nil {
		return err
	}
	if err := bench.PlotSVG(svg, rep.Chunkers); err != nil {
		return err
	}
	svg.Close()
	data, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(o.out, "realdb.json"), data, 0o644); err != nil {
		return err
	}
	md := markdown(rep)
	fmt.Print(md)
	return os.WriteFile(filepath.Join(o.out, "realdb.md"), []byte(md), 0o644)
}

// backupOnce streams mariabackup into dedupctl and, through a tee, into a
// file for the baseline and the chunker study.
func backupOnce(ctx context.Context, db *mariadb, dedupctl dedupctl, repo, name, stream, work string) (backupResult, [32]byte, error) {
	res := backupResult{Name: name}
	target := filepath.Join(work, "mbtarget-"+name)
	mb := exec.CommandContext(ctx, "mariabackup", "--backup", "--stream=xbstream", "--socket="+db.socket, "--user=root", "--target-dir="+target)
	mbLog, _ := os.Create(filepath.Join(work, name+".mariabackup.log"))
	defer mbLog.Close()
	mb.Stderr = mbLog
	mbOut, err := mb.StdoutPipe()
	if err != nil {
		return res, [32]byte{}, err
	}
	dc := dedupctl.cmd(ctx, repo, "backup", "bench/0/"+name, "--stdin", "--name", "xbstream", "--json", "--quiet")
	dcIn, err := dc.StdinPipe()
	if err != nil {
		return res, [32]byte{}, err
	}
	var dcOut, dcErr strings.Builder
	dc.Stdout, dc.Stderr = &dcOut, &dcErr
	f, err := os.Create(stream)
	if err != nil {
		return res, [32]byte{}, err
	}
	defer f.Close()
	start := time.Now()
	if err := dc.Start(); err != nil {
		return res, [32]byte{}, err
	}
	if err := mb.Start(); err != nil {
		return res, [32]byte{}, err
	}
	h := sha256.New()
	n, copyErr := io.Copy(io.MultiWriter(dcIn, f, h), mbOut)
	dcIn.Close()
	mbErr := mb.Wait()
	dcErrWait := dc.Wait()
	res.Seconds = time.Since(start).Seconds()
	if err := errors.Join(copyErr, mbErr); err != nil {
		return res, [32]byte{}, fmt.Errorf("mariabackup (log in %s): %w", mbLog.Name(), err)
	}
	if dcErrWait != nil {
		return res, [32]byte{}, fmt.Errorf("dedupctl backup: %v: %s", dcErrWait, dcErr.String())
	}
	res.LogicalBytes = n
	res.MBps = float64(n) / res.Seconds / 1e6
	res.PeakRSSMiB = peakRSS(dc)
	return res, [32]byte(h.Sum(nil)), nil
}

func peakRSS(cmd *exec.Cmd) float64 {
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	return 0
}

type statsJSON struct {
	LogicalBytes int64 `json:"logical_bytes"`
	StoredBytes  int64 `json:"stored_bytes"`
}

func stats(ctx context.Context, dedupctl dedupctl, repo string) (statsJSON, error) {
	var st statsJSON
	out, err := dedupctl.cmd(ctx, repo, "stats", "--json").Output()
	if err == nil {
		err = json.Unmarshal(out, &st)
	}
	return st, err
}

// fileBackup stores a stream in the plain file storage: the baseline.
func fileBackup(ctx context.Context, s *file.Storage, name, stream string) (float64, int64, error) {
	in, err := os.Open(stream)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	start := time.Now()
	bh, err := s.StartBackup(ctx, "bench/0", name)
	if err != nil {
		return 0, 0, err
	}
	w, err := bh.AddFile(ctx, "xbstream")
	if err != nil {
		return 0, 0, err
	}
	n, err := io.CopyBuffer(w, in, make([]byte, 1<<20))
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = bh.EndBackup(ctx)
	}
	return time.Since(start).Seconds(), n, err
}

// pageInsertFiles writes zero-padded page data and the same with 4 KiB
// inserted in the middle: the design brief's resync test.
func pageInsertFiles(work string) ([]string, error) {
	pages := dataset.Pages(1, 16384) // 256 MiB
	a, b := filepath.Join(work, "pages"), filepath.Join(work, "pages-insert")
	if err := os.WriteFile(a, pages, 0o644); err != nil {
		return nil, err
	}
	return []string{a, b}, os.WriteFile(b, dataset.Insert(pages, len(pages)/2+777, dataset.Random(2, 4096)), 0o644)
}

func cpuName() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// dedupctl runs the dedupctl binary measured. Its repositories are
// encrypted, as by default, with a key file: a password would add its key
// derivation (about 0.2 s) to every command timed.
type dedupctl struct{ bin, keyFile string }

func newDedupctl(bin, work string) (dedupctl, error) {
	d := dedupctl{bin: bin, keyFile: filepath.Join(work, "key")}
	return d, os.WriteFile(d.keyFile, chunkstore.NewKeyFile(), 0o600)
}

// cmd is dedupctl args on repo.
func (d dedupctl) cmd(ctx context.Context, repo string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, d.bin, append([]string{"--repo", repo, "--key-file", d.keyFile}, args...)...)
}

// compareSettings are dedupctl init flags tried side by side on the three
// streams, read back from disk.
var compareSettings = []string{
	"--min-size 16KiB --avg-size 64KiB --max-size 256KiB --compression fastest",
	"--min-size 16KiB --avg-size 64KiB --max-size 256KiB --compression fastest --delta=false",
	"--min-size 8KiB --avg-size 32KiB --max-size 128KiB --compression fastest",
	"--min-size 4KiB --avg-size 16KiB --max-size 64KiB --compression fastest",
	"--min-size 16KiB --avg-size 64KiB --max-size 256KiB --compression default",
	"--min-size 4KiB --avg-size 16KiB --max-size 64KiB --compression default",
	"--chunker restic --min-size 16KiB --avg-size 64KiB --max-size 256KiB --compression fastest",
}

type settingResult struct {
	Setting     string  `json:"setting"`
	StoredBytes int64   `json:"stored_bytes"`
	Ratio       float64 `json:"ratio"`
	Chunks      int     `json:"chunks"`
	MBps        float64 `json:"mb_per_s"`
}

// ingestStreams backs the streams up, from their files, into a new
// repository made with the given init flags.
func ingestStreams(ctx context.Context, dedupctl dedupctl, repo, setting string, streams []string) (settingResult, error) {
	res := settingResult{Setting: setting}
	args := append([]string{"init"}, strings.Fields(setting)...)
	if out, err := dedupctl.cmd(ctx, repo, args...).CombinedOutput(); err != nil {
		return res, fmt.Errorf("dedupctl %v: %v: %s", args, err, out)
	}
	var total int64
	var secs float64
	for i, stream := range streams {
		f, err := os.Open(stream)
		if err != nil {
			return res, err
		}
		info, _ := f.Stat()
		total += info.Size()
		cmd := dedupctl.cmd(ctx, repo, "backup", fmt.Sprintf("bench/0/b%d", i+1), "--stdin", "--name", "xbstream", "--quiet")
		cmd.Stdin = f
		start := time.Now()
		out, err := cmd.CombinedOutput()
		secs += time.Since(start).Seconds()
		f.Close()
		if err != nil {
			return res, fmt.Errorf("dedupctl backup: %v: %s", err, out)
		}
	}
	var st struct {
		StoredBytes int64 `json:"stored_bytes"`
		Chunks      int   `json:"chunks"`
	}
	out, err := dedupctl.cmd(ctx, repo, "stats", "--json").Output()
	if err == nil {
		err = json.Unmarshal(out, &st)
	}
	res.StoredBytes, res.Chunks = st.StoredBytes, st.Chunks
	res.Ratio = float64(total) / float64(st.StoredBytes)
	res.MBps = float64(total) / secs / 1e6
	return res, err
}
