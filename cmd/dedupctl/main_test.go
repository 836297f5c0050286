package main_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"golang.org/x/sys/unix"
)

// These tests drive the built binary, as a user would.

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dedupctl-test-")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755) // tests may run it as another user
	bin = filepath.Join(dir, "dedupctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	// Repositories are encrypted unless created with --no-encryption: the
	// tests use this password, as a user's environment would give it.
	os.Setenv("DEDUP_PASSWORD", "test password")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func dedupctl(t *testing.T, repo string, stdin io.Reader, args ...string) result {
	t.Helper()
	return dedupctlEnv(t, repo, nil, stdin, args...)
}

// dedupctlEnv runs dedupctl with env added to the environment.
func dedupctlEnv(t *testing.T, repo string, env []string, stdin io.Reader, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "DEDUP_REPO="+repo), env...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{stdout.String(), stderr.String(), code}
}

// ok runs dedupctl and fails the test unless it succeeds.
func ok(t *testing.T, repo string, args ...string) string {
	t.Helper()
	r := dedupctl(t, repo, nil, args...)
	if r.code != 0 {
		t.Fatalf("dedupctl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func okJSON(t *testing.T, repo string, v any, args ...string) {
	t.Helper()
	out := ok(t, repo, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("dedupctl %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func fails(t *testing.T, r result, code int, msg string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stderr, msg) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("exit %d, stderr %q; want exit %d and one line containing %q", r.code, r.stderr, code, msg)
	}
}

func writeTree(t *testing.T, root string, files map[string][]byte) {
	for p, data := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

func newRepo(t *testing.T) (repo, work string) {
	work = t.TempDir()
	repo = filepath.Join(work, "repo")
	ok(t, repo, "init")
	return repo, work
}

func TestTour(t *testing.T) {
	work := t.TempDir()
	repo := filepath.Join(work, "repo")
	var cfg struct {
		Chunker string `json:"chunker"`
		AvgSize int    `json:"avg_size"`
		Deltas  bool   `json:"deltas"`
	}
	okJSON(t, repo, &cfg, "init", "--avg-size", "32KiB", "--min-size", "8KiB", "--max-size", "128KiB")
	if cfg.Chunker != "fastcdc-v1.0.0" || cfg.AvgSize != 32<<10 || !cfg.Deltas {
		t.Errorf("init --json = %+v", cfg)
	}
	okJSON(t, filepath.Join(work, "plain"), &cfg, "init", "--delta=false")
	if cfg.Deltas {
		t.Errorf("init --delta=false --json = %+v", cfg)
	}
	files := map[string][]byte{
		"ibdata1":          dataset.Pages(1, 400),
		"db/orders.ibd":    dataset.Pages(2, 200),
		"db/empty":         nil,
		"db/sub/notes.txt": []byte("hello\n"),
	}
	src := filepath.Join(work, "mysql")
	writeTree(t, src, files)

	var b1, b2 struct {
		Files      int   `json:"files"`
		Bytes      int64 `json:"bytes"`
		AddedBytes int64 `json:"added_bytes"`
	}
	okJSON(t, repo, &b1, "backup", "ks/0/b1", src)
	files["db/orders.ibd"] = dataset.Mutate(files["db/orders.ibd"], 3, 0.02)
	writeTree(t, src, files)
	okJSON(t, repo, &b2, "backup", "ks/0/b2", src)
	if b1.Files != 4 || b1.Bytes != 600*dataset.PageSize+6 {
		t.Errorf("first backup: %+v", b1)
	}
	if b2.AddedBytes <= 0 || b2.AddedBytes > b1.AddedBytes/5 {
		t.Errorf("second backup added %d bytes, first %d: want a small fraction", b2.AddedBytes, b1.AddedBytes)
	}

	var ls []struct {
		Dir, Name, State string
		LogicalBytes     int64 `json:"logical_bytes"`
	}
	okJSON(t, repo, &ls, "ls")
	if len(ls) != 2 || ls[0].Name != "b1" || ls[1].Name != "b2" || ls[0].State != "ended" || ls[0].Dir != "ks/0" {
		t.Errorf("ls --json = %+v", ls)
	}
	if out := ok(t, repo, "ls", "ks/0"); !strings.Contains(out, "ks/0/b2") || !strings.Contains(out, "ALONE HOLDS") {
		t.Errorf("ls:\n%s", out)
	}
	var show struct {
		Entries []struct {
			Path     string
			Type     string
			Size     int64
			NewBytes int64 `json:"new_bytes"`
		}
	}
	okJSON(t, repo, &show, "show", "ks/0/b2")
	var shown []string
	for _, e := range show.Entries {
		if e.Type == "file" {
			shown = append(shown, strings.TrimPrefix(e.Path, src[1:]+"/"))
		}
	}
	if strings.Join(shown, " ") != "db/empty db/orders.ibd db/sub/notes.txt ibdata1" {
		t.Errorf("show --json lists the files %q", shown)
	}
	var st struct {
		Backups    int     `json:"backups"`
		DedupRatio float64 `json:"dedup_ratio"`
		TotalRatio float64 `json:"total_ratio"`
	}
	okJSON(t, repo, &st, "stats")
	if st.Backups != 2 || st.DedupRatio < 1.5 || st.TotalRatio <= st.DedupRatio {
		t.Errorf("stats --json = %+v", st)
	}

	// Restore: byte for byte, modes kept, never over existing files unless told.
	target := filepath.Join(work, "restored")
	ok(t, repo, "restore", "ks/0/b2", "--target", target)
	for p, want := range files {
		full := filepath.Join(target, src, filepath.FromSlash(p))
		got, err := os.ReadFile(full)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("restored %s differs: %v", p, err)
		}
		if info, _ := os.Stat(full); info.Mode().Perm() != 0o640 {
			t.Errorf("restored %s has mode %v", p, info.Mode())
		}
	}
	fails(t, dedupctl(t, repo, nil, "restore", "ks/0/b2", "--target", target), 1, "exists under the target")
	ok(t, repo, "restore", "ks/0/b1", "--target", target, "--overwrite", src+"/db/orders.ibd")
	got, _ := os.ReadFile(filepath.Join(target, src, "db/orders.ibd"))
	if !bytes.Equal(got, dataset.Pages(2, 200)) {
		t.Error("restoring one file of b1 over b2's did not bring back b1's content")
	}
	if out := ok(t, repo, "cat", "ks/0/b2", src+"/db/sub/notes.txt"); out != "hello\n" {
		t.Errorf("cat = %q", out)
	}

	var rm struct{ Removed []string }
	okJSON(t, repo, &rm, "rm", "ks/0/b1")
	var dry, real struct {
		Plan struct {
			FreedBytes int64 `json:"freed_bytes"`
			Actions    []struct {
				Action string
				Pack   string
			}
		}
		Result *struct {
			FreedBytes int64 `json:"freed_bytes"`
		}
	}
	okJSON(t, repo, &dry, "gc", "--dry-run")
	if out := ok(t, repo, "gc", "--dry-run"); len(dry.Plan.Actions) == 0 || !strings.Contains(out, "ACTION") || !strings.Contains(out, dry.Plan.Actions[0].Pack) {
		t.Errorf("gc --dry-run does not list the plan's packs:\n%s", out)
	}
	okJSON(t, repo, &real, "gc")
	if dry.Result != nil || dry.Plan.FreedBytes == 0 || len(dry.Plan.Actions) == 0 || real.Result == nil || real.Result.FreedBytes != dry.Plan.FreedBytes {
		t.Errorf("gc --dry-run then gc: %+v, %+v", dry, real)
	}
	os.Remove(filepath.Join(dedup.LocalCacheDir(repo), "index.db"))
	var rebuilt struct {
		Backups int `json:"backups"`
	}
	okJSON(t, repo, &rebuilt, "index", "rebuild")
	if rebuilt.Backups != 1 {
		t.Errorf("index rebuild --json = %+v", rebuilt)
	}
	var chk struct {
		Chunks     int `json:"chunks"`
		ChunksRead int `json:"chunks_read"`
		Problems   []any
	}
	okJSON(t, repo, &chk, "check", "--read-data")
	if chk.ChunksRead != chk.Chunks || len(chk.Problems) != 0 {
		t.Errorf("check --read-data --json = %+v", chk)
	}
}

func TestStdin(t *testing.T) {
	repo, _ := newRepo(t)
	data := dataset.Pages(4, 300)
	if r := dedupctl(t, repo, bytes.NewReader(data), "backup", "db/0/full", "--stdin", "--name", "xbstream"); r.code != 0 {
		t.Fatalf("backup --stdin: %s", r.stderr)
	}
	if out := ok(t, repo, "cat", "db/0/full", "xbstream"); out != string(data) {
		t.Errorf("cat returned %d bytes, want the %d piped in", len(out), len(data))
	}
}

// cat into a pipe grows the pipe's buffer to 1 MiB, so that a restore into
// mbstream does not wake it every 64 KiB.
func TestCatGrowsPipe(t *testing.T) {
	repo, _ := newRepo(t)
	data := dataset.Pages(5, 100)
	if r := dedupctl(t, repo, bytes.NewReader(data), "backup", "db/0/full", "--stdin", "--name", "xbstream"); r.code != 0 {
		t.Fatalf("backup --stdin: %s", r.stderr)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := exec.Command(bin, "cat", "db/0/full", "xbstream")
	cmd.Env = append(os.Environ(), "DEDUP_REPO="+repo)
	cmd.Stdout = pw
	var got []byte
	read := make(chan error)
	go func() {
		var err error
		got, err = io.ReadAll(pr)
		read <- err
	}()
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	size, serr := unix.FcntlInt(pw.Fd(), unix.F_GETPIPE_SZ, 0)
	pw.Close()
	if err := <-read; err != nil || !bytes.Equal(got, data) {
		t.Fatalf("cat into a pipe: %d bytes, %v; want the %d backed up", len(got), err, len(data))
	}
	if serr != nil || size != 1<<20 {
		t.Errorf("the pipe's buffer after cat: %d bytes (%v), want 1 MiB", size, serr)
	}
}

func TestErrors(t *testing.T) {
	repo, _ := newRepo(t)
	ok(t, repo, "backup", "d/b", "--stdin", "--name", "f", "--allow-empty")
	for _, c := range []struct {
		repo string
		args []string
		code int
		msg  string
	}{
		{"", []string{"ls"}, 2, "no repository: pass --repo"},
		{"/nonexistent/repo", []string{"ls"}, 3, "no repository at /nonexistent/repo"},
		{repo, []string{"frobnicate"}, 2, "unknown command"},
		{repo, []string{"ls", "--frobnicate"}, 2, "unknown flag"},
		{repo, []string{"show"}, 2, "show takes one DIR/NAME"},
		{repo, []string{"show", "d/../etc"}, 2, "invalid name"},
		{repo, []string{"show", "d/nope"}, 3, "no backup d/nope"},
		{repo, []string{"cat", "d/b", "nope"}, 3, "no file nope"},
		{repo, []string{"restore", "d/b"}, 2, "--target"},
		{repo, []string{"backup", "d/c"}, 2, "paths to back up"},
		{repo, []string{"backup", "d/b", "--stdin", "--name", "f"}, 1, "already exists"},
		{repo, []string{"init"}, 1, "already exists"},
		{repo, []string{"check", "--read-data-subset", "200%"}, 2, "percentage"},
		{repo, []string{"bench", "chunker", "/nonexistent"}, 1, "no such file"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			fails(t, dedupctl(t, c.repo, strings.NewReader(""), c.args...), c.code, c.msg)
		})
	}
	if out := ok(t, repo, "help"); !strings.Contains(out, "Exit codes") || !strings.Contains(out, "4  repository in use") {
		t.Errorf("help does not document the exit codes:\n%s", out)
	}
}

// startStdinBackup starts a stdin backup and returns its command and the
// pipe feeding it.
func startStdinBackup(t *testing.T, repo, name string) (*exec.Cmd, io.WriteCloser, *bytes.Buffer) {
	cmd := exec.Command(bin, "backup", name, "--stdin", "--name", "f")
	cmd.Env = append(os.Environ(), "DEDUP_REPO="+repo)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Write(dataset.Random(5, 1<<20))
	return cmd, stdin, &stderr
}

// waitBackupRunning waits until a backup runs in another process: its
// lease keeps a collection from sweeping at once.
func waitBackupRunning(t *testing.T, repo string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out struct {
			Plan struct {
				Phases struct {
					SweepNow bool `json:"sweep_now"`
				} `json:"phases"`
			} `json:"plan"`
		}
		okJSON(t, repo, &out, "gc", "--dry-run")
		if !out.Plan.Phases.SweepNow {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the backup did not start within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// While a backup runs, other processes read the repository (without the
// running backup), back up into it and collect, in two phases.
func TestProcessesShareRepository(t *testing.T) {
	repo, _ := newRepo(t)
	if r := dedupctl(t, repo, strings.NewReader("ended"), "backup", "d/ended", "--stdin", "--name", "f"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	cmd, stdin, stderr := startStdinBackup(t, repo, "d/running")
	waitBackupRunning(t, repo)
	if r := dedupctl(t, repo, nil, "ls"); r.code != 0 || !strings.Contains(r.stdout, "d/ended") || !regexp.MustCompile(`d/running +in progress`).MatchString(r.stdout) {
		t.Errorf("ls while a backup runs: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := dedupctl(t, repo, strings.NewReader("x"), "backup", "d/running", "--stdin", "--name", "f"); r.code != 1 || !strings.Contains(r.stderr, "running in another process") {
		t.Errorf("a backup of the name another process runs: exit %d: %s", r.code, r.stderr)
	}
	if r := dedupctl(t, repo, nil, "cat", "d/ended", "f"); r.code != 0 || r.stdout != "ended" {
		t.Errorf("cat while a backup runs: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := dedupctl(t, repo, strings.NewReader("second"), "backup", "d/second", "--stdin", "--name", "f"); r.code != 0 {
		t.Errorf("a second backup while one runs: exit %d: %s", r.code, r.stderr)
	}
	ok(t, repo, "rm", "d/ended")
	if out := ok(t, repo, "gc"); !strings.Contains(out, "phase 1") || !strings.Contains(out, "backups are running") {
		t.Errorf("gc while a backup runs:\n%s", out)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the running backup failed: %v: %s", err, stderr)
	}
	if out := ok(t, repo, "ls"); !strings.Contains(out, "d/running") || !strings.Contains(out, "d/second") || strings.Contains(out, "d/ended") {
		t.Errorf("ls after the backup:\n%s", out)
	}
	ok(t, repo, "gc")
	ok(t, repo, "check", "--read-data")
	if r := dedupctl(t, repo, nil, "cat", "d/second", "f"); r.code != 0 || r.stdout != "second" {
		t.Errorf("cat d/second: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
}

func TestInterruptAborts(t *testing.T) {
	repo, _ := newRepo(t)
	cmd, stdin, stderr := startStdinBackup(t, repo, "d/interrupted")
	waitBackupRunning(t, repo)
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	stdin.Close()
	if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "interrupted: backup d/interrupted aborted") {
		t.Fatalf("interrupted backup: %v, stderr %q", err, stderr)
	}
	var ls []any
	okJSON(t, repo, &ls, "ls")
	if len(ls) != 0 {
		t.Errorf("after an interrupted backup ls lists %v", ls)
	}
}

func TestDamageFound(t *testing.T) {
	repo, _ := newRepo(t)
	if r := dedupctl(t, repo, bytes.NewReader(dataset.Random(6, 200<<10)), "backup", "d/b", "--stdin", "--name", "f"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	var pack string
	filepath.WalkDir(filepath.Join(repo, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, _ := d.Info(); info.Size() > 100<<10 {
				pack = p
			}
		}
		return nil
	})
	data, _ := os.ReadFile(pack)
	data[1000] ^= 0xff
	os.WriteFile(pack, data, 0o644)
	ok(t, repo, "check") // the structure is intact
	r := dedupctl(t, repo, nil, "check", "--read-data")
	if r.code != 5 || !strings.Contains(r.stdout, "damage: pack ") || !strings.Contains(r.stdout, "affected: backup d/b file 0") {
		t.Errorf("check --read-data: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	fails(t, dedupctl(t, repo, nil, "cat", "d/b", "f"), 5, "corrupt data")
}

func TestBenchChunker(t *testing.T) {
	dir := t.TempDir()
	v1 := dataset.Pages(7, 300)
	v2 := dataset.Update(v1, 8, 0.05)
	os.WriteFile(filepath.Join(dir, "v1"), v1, 0o644)
	os.WriteFile(filepath.Join(dir, "v2"), v2, 0o644)
	plot := filepath.Join(dir, "chunkers.svg")
	var rows []struct {
		Chunker    string  `json:"chunker"`
		Chunks     int     `json:"chunks"`
		AddedBytes []int64 `json:"added_bytes"`
		DedupRatio float64 `json:"dedup_ratio"`
		Stored     int64   `json:"stored_bytes"`
		WithDeltas int64   `json:"delta_stored_bytes"`
	}
	okJSON(t, "", &rows, "bench", "chunker", "--avg-bits", "14,16", filepath.Join(dir, "v1"), filepath.Join(dir, "v2"), "--plot", plot, "--deltas")
	if len(rows) != 4 {
		t.Fatalf("bench chunker gave %d rows, want 2 chunkers x 2 sizes", len(rows))
	}
	for _, r := range rows {
		if len(r.AddedBytes) != 2 || r.AddedBytes[0] > int64(len(v1)) || r.AddedBytes[1] >= r.AddedBytes[0] || r.DedupRatio <= 1 {
			t.Errorf("%+v: the second version should add less than the first", r)
		}
		// v2 updates rows in place: its new chunks are deltas of v1's.
		if r.Stored == 0 || r.Stored >= int64(len(v1)+len(v2)) || r.WithDeltas == 0 || r.WithDeltas >= r.Stored {
			t.Errorf("%+v: stored %d bytes compressed and %d with deltas; want less with deltas", r, r.Stored, r.WithDeltas)
		}
	}
	svg, err := os.ReadFile(plot)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg, new(struct{})); err != nil || !bytes.Contains(svg, []byte("<polyline")) {
		t.Errorf("the chart is not SVG with lines: %v", err)
	}
}

// bench parts measures each step on the file and prints the limits they
// give; the temporary repository it writes is gone afterwards.
func TestBenchParts(t *testing.T) {
	dir := t.TempDir()
	data := dataset.Pages(7, 300)
	os.WriteFile(filepath.Join(dir, "v1"), data, 0o644)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	var r struct {
		Bytes       int64   `json:"bytes"`
		NewBytes    int64   `json:"new_bytes"`
		Cores       int     `json:"cores"`
		FirstBackup float64 `json:"first_backup_limit_bytes_per_second"`
		Repeat      float64 `json:"repeat_limit_bytes_per_second"`
		Restore     float64 `json:"restore_limit_bytes_per_second"`
	}
	okJSON(t, "", &r, "bench", "parts", filepath.Join(dir, "v1"))
	if r.Bytes != int64(len(data)) || r.NewBytes != r.Bytes || r.Cores != runtime.GOMAXPROCS(0) || r.FirstBackup <= 0 || r.Repeat < r.FirstBackup || r.Restore <= 0 {
		t.Errorf("bench parts --json: %+v", r)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("bench parts left %d files in TMPDIR", len(left))
	}
	if out := ok(t, "", "bench", "parts", filepath.Join(dir, "v1")); !strings.Contains(out, "compress and seal") || !strings.Contains(out, "limits on") {
		t.Errorf("bench parts printed:\n%s", out)
	}
}

// version and --version say the build, the Go version and the repository
// format; --json gives them to scripts.
func TestVersion(t *testing.T) {
	out := ok(t, "", "version")
	if want := fmt.Sprintf("%s, repository format %d", runtime.Version(), chunkstore.FormatVersion); !strings.HasPrefix(out, "dedupctl ") || !strings.Contains(out, want) {
		t.Errorf("version printed %q, want it to say %q", out, want)
	}
	if flag := ok(t, "", "--version"); flag != out {
		t.Errorf("--version printed %q, version %q", flag, out)
	}
	var v struct {
		Version string `json:"version"`
		Go      string `json:"go"`
		Reads   []int  `json:"reads_formats"`
		Writes  int    `json:"writes_format"`
	}
	okJSON(t, "", &v, "version")
	if v.Version == "" || v.Go != runtime.Version() || v.Writes != chunkstore.FormatVersion || !slices.Contains(v.Reads, chunkstore.FormatVersion) {
		t.Errorf("version --json gave %+v", v)
	}
}
