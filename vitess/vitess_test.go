package vitess

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/internal/s3test"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"vitess.io/vitess/go/vt/logutil"
	"vitess.io/vitess/go/vt/mysqlctl/backupstats"
	"vitess.io/vitess/go/vt/mysqlctl/backupstorage"
	"vitess.io/vitess/go/vt/servenv"
)

var ctx = context.Background()

func random(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// counting is a dedup storage that counts its Closes.
type counting struct {
	storage.BackupStorage
	mu     sync.Mutex
	closes int
}

func (c *counting) Close() error {
	c.mu.Lock()
	c.closes++
	c.mu.Unlock()
	return c.BackupStorage.Close()
}

func (c *counting) closed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closes
}

func newAdapter(t *testing.T) (backupstorage.BackupStorage, *counting) {
	t.Helper()
	c := &counting{BackupStorage: dedup.New(filepath.Join(t.TempDir(), "repo"), dedup.Options{})}
	bs := New(c)
	t.Cleanup(func() { bs.Close() })
	return bs, c
}

func addFile(t *testing.T, bh backupstorage.BackupHandle, name string, size int64, data []byte) {
	t.Helper()
	w, err := bh.AddFile(ctx, name, size)
	if err != nil {
		t.Fatalf("AddFile(%s): %v", name, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close %s: %v", name, err)
	}
}

func find(t *testing.T, bs backupstorage.BackupStorage, dir, name string) backupstorage.BackupHandle {
	t.Helper()
	bhs, err := bs.ListBackups(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, bh := range bhs {
		if bh.Name() == name {
			return bh
		}
	}
	t.Fatalf("backup %s/%s not listed", dir, name)
	return nil
}

func expectFile(t *testing.T, bh backupstorage.BackupHandle, name string, want []byte) {
	t.Helper()
	rc, err := bh.ReadFile(ctx, name)
	if err != nil {
		t.Fatalf("ReadFile(%s): %v", name, err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s: read %d bytes (%v), want %d identical", name, len(got), err, len(want))
	}
}

// Vitess's builtin engine: files 0, 1, ... with their sizes, EndBackup,
// then the MANIFEST (size unknown) and EndBackup twice more; XtraBackup
// names with dots. Sizes are hints: wrong ones change nothing.
func TestBuiltinEngineSequence(t *testing.T) {
	bs, _ := newAdapter(t)
	bh, err := bs.StartBackup(ctx, "ks/-80", "2026-11-28.120000.zone1-0000000101")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"0":                      random(1, 3<<20),
		"1":                      random(2, 0),
		"2":                      random(3, 100),
		"backup.xbstream.gz-000": random(4, 70000),
	}
	sizes := map[string]int64{"0": 3 << 20, "1": 0, "2": 1 << 30, "backup.xbstream.gz-000": backupstorage.FileSizeUnknown}
	for name, data := range files {
		addFile(t, bh, name, sizes[name], data)
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatalf("first EndBackup: %v", err)
	}
	manifest := []byte(`{"BackupMethod": "builtin"}`)
	addFile(t, bh, "MANIFEST", backupstorage.FileSizeUnknown, manifest)
	files["MANIFEST"] = manifest
	for i := range 2 {
		if err := bh.EndBackup(ctx); err != nil {
			t.Fatalf("EndBackup %d: %v", i+2, err)
		}
	}
	got := find(t, bs, "ks/-80", "2026-11-28.120000.zone1-0000000101")
	for name, want := range files {
		expectFile(t, got, name, want)
	}
}

// A writer whose Close fails records the error on the handle; EndBackup
// returns it until Vitess resets it; Close again fails at once with the
// same error.
func TestFailedCloseRecorded(t *testing.T) {
	bs, _ := newAdapter(t)
	bh, err := bs.StartBackup(ctx, "ks/0", "b")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w, err := bh.AddFile(wctx, "3", 1000)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(random(5, 1000))
	cancel()
	first := w.Close()
	if first == nil {
		t.Fatal("Close after the context was cancelled returned nil")
	}
	for range 20 { // as Vitess's closeWithRetry, without its backoff
		if again := w.Close(); again == nil || again.Error() != first.Error() {
			t.Fatalf("Close again: %v, want %v", again, first)
		}
	}
	if got := bh.GetFailedFiles(); len(got) != 1 || got[0] != "3" {
		t.Fatalf("failed files %v, want [3]", got)
	}
	if err := bh.EndBackup(ctx); err == nil || !strings.Contains(err.Error(), first.Error()) {
		t.Fatalf("EndBackup with a failed file: %v, want its error", err)
	}
	bh.ResetErrorForFile("3") // Vitess retries the file
	addFile(t, bh, "3", 1000, random(6, 1000))
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatalf("EndBackup after the retry: %v", err)
	}
	expectFile(t, find(t, bs, "ks/0", "b"), "3", random(6, 1000))
}

// Errors keep the storage's sentinels.
func TestErrorsMatch(t *testing.T) {
	bs, _ := newAdapter(t)
	bh, err := bs.StartBackup(ctx, "ks/0", "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bs.StartBackup(ctx, "ks/0", "b"); !errors.Is(err, storage.ErrExists) {
		t.Errorf("StartBackup twice: %v, want storage.ErrExists", err)
	}
	if _, err := bh.AddFile(ctx, "../x", 1); !errors.Is(err, storage.ErrInvalidName) {
		t.Errorf("AddFile(../x): %v, want storage.ErrInvalidName", err)
	}
	if _, err := bh.ReadFile(ctx, "0"); !errors.Is(err, storage.ErrWriteOnly) {
		t.Errorf("ReadFile on a started backup: %v, want storage.ErrWriteOnly", err)
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	ro := find(t, bs, "ks/0", "b")
	if _, err := ro.ReadFile(ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ReadFile(missing): %v, want storage.ErrNotFound", err)
	}
	if _, err := ro.AddFile(ctx, "x", 1); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("AddFile on a listed backup: %v, want storage.ErrReadOnly", err)
	}
	if err := ro.EndBackup(ctx); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("EndBackup on a listed backup: %v, want storage.ErrReadOnly", err)
	}
}

// Bytes written and read are metered into Params.Stats; the backup's
// steps are logged to Params.Logger.
func TestParamsStatsAndLogger(t *testing.T) {
	bs, _ := newAdapter(t)
	stats := backupstats.NewFakeStats()
	logger := logutil.NewMemoryLogger()
	cp := bs.WithParams(backupstorage.Params{Logger: logger, Stats: stats})
	bh, err := cp.StartBackup(ctx, "ks/0", "b")
	if err != nil {
		t.Fatal(err)
	}
	data := random(7, 1<<20+17)
	addFile(t, bh, "0", int64(len(data)), data)
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	expectFile(t, find(t, cp, "ks/0", "b"), "0", data)
	if err := cp.RemoveBackup(ctx, "ks/0", "b"); err != nil {
		t.Fatal(err)
	}
	metered := map[backupstats.ScopeValue]int{}
	for _, sr := range stats.ScopeReturns {
		for _, c := range sr.TimedIncrementBytesCalls {
			metered[sr.ScopeV[backupstats.ScopeOperation]] += c.Bytes
		}
	}
	if metered["File:Write"] != len(data) || metered["File:Read"] != len(data) {
		t.Errorf("metered %v, want %d bytes written and read", metered, len(data))
	}
	log := logger.String()
	for _, want := range []string{"started backup ks/0/b", "ended backup ks/0/b", "removed backup ks/0/b"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// WithParams shares the repository; Vitess closes the registered storage,
// once nested in an incremental backup while the backup through the copy
// is still being taken. That Close must not fail the backup, and the one
// after the backup releases the repository.
func TestNestedClose(t *testing.T) {
	bs, c := newAdapter(t)
	cp := bs.WithParams(backupstorage.NoParams())
	bh, err := cp.StartBackup(ctx, "ks/0", "incr")
	if err != nil {
		t.Fatal(err)
	}
	// Inside ExecuteBackup: GetBackupStorage, ListBackups, Close.
	if _, err := bs.ListBackups(ctx, "ks/0"); err != nil {
		t.Fatal(err)
	}
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	if c.closed() != 0 {
		t.Fatal("the nested Close closed the repository under a backup in progress")
	}
	addFile(t, bh, "0", 10, random(8, 10<<10))
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatalf("EndBackup after a nested Close: %v", err)
	}
	addFile(t, bh, "MANIFEST", -1, []byte("{}"))
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bs.Close(); err != nil {
		t.Fatal(err)
	}
	if c.closed() != 1 {
		t.Fatalf("the Close after the backup closed the repository %d times, want 1", c.closed())
	}
	// A file being read holds it open too.
	rc, err := find(t, bs, "ks/0", "incr").ReadFile(ctx, "0")
	if err != nil {
		t.Fatal(err)
	}
	bs.Close()
	if c.closed() != 1 {
		t.Fatal("Close closed the repository under an open reader")
	}
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, random(8, 10<<10)) {
		t.Fatalf("read after a Close: %d bytes, %v", len(got), err)
	}
	rc.Close()
	bs.Close()
	if c.closed() != 2 {
		t.Fatalf("closed %d times, want 2", c.closed())
	}
}

// The registered "dedup" storage takes its repository from the flags that
// vttablet, vtctld, vtctl and vtbackup parse.
func TestRegisteredFromFlags(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	for _, cmd := range []string{"vttablet", "vtctld", "vtctl", "vtbackup"} {
		fs := servenv.GetFlagSetFor(cmd)
		if fs.Lookup("dedup-backup-storage-root") == nil || fs.Lookup("dedup-lease-ttl") == nil {
			t.Fatalf("%s has no dedup flags", cmd)
		}
	}
	fs := servenv.GetFlagSetFor("vttablet")
	if err := fs.Parse([]string{"--dedup-backup-storage-root", root, "--backup-storage-implementation", "dedup"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { registered.root = "" })
	bs, err := backupstorage.GetBackupStorage()
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	backupABC(t, bs)
	// Another process of the same flags reads it.
	other := dedup.New(root, dedup.Options{})
	defer other.Close()
	bhs, err := other.ListBackups(ctx, "ks/0")
	if err != nil || len(bhs) != 1 {
		t.Fatalf("the repository at the flag's root lists %d backups, %v", len(bhs), err)
	}
}

func TestRegisteredWithoutRoot(t *testing.T) {
	bs := newStorage((&flags{}).open)
	if _, err := bs.ListBackups(ctx, "ks/0"); err == nil || !strings.Contains(err.Error(), "--dedup-backup-storage-root") {
		t.Errorf("without a root: %v, want an error naming the flag", err)
	}
}

// An s3: root keeps the repository on the server, with the credentials of
// the standard chain, and the index cache in --dedup-cache-dir.
func TestRegisteredOnS3(t *testing.T) {
	ep, stop, err := s3test.StartFake()
	if errors.Is(err, s3test.ErrSkip) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	t.Setenv("AWS_ACCESS_KEY_ID", "key")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	loc := "s3:http://" + ep + "/vitess/backups"
	cfg, err := s3.ParseLocation(loc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.MakeBucket(ctx); err != nil {
		t.Fatal(err)
	}
	f := &flags{root: loc, cacheDir: t.TempDir()}
	bs := newStorage(f.open)
	defer bs.Close()
	bh, err := bs.StartBackup(ctx, "ks/0", "b")
	if err != nil {
		t.Fatal(err)
	}
	data := random(9, 2<<20)
	addFile(t, bh, "0", int64(len(data)), data)
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	expectFile(t, find(t, bs, "ks/0", "b"), "0", data)
	var names []string
	b.List(ctx, "manifests/", "", func(o chunkstore.ObjectInfo) error {
		names = append(names, o.Name)
		return nil
	})
	if len(names) != 1 {
		t.Errorf("manifests on the server: %v, want one", names)
	}
}

// backupABC backs up one file, "abc", as ks/0/b, and closes bs.
func backupABC(t *testing.T, bs backupstorage.BackupStorage) {
	t.Helper()
	bh, err := bs.StartBackup(ctx, "ks/0", "b")
	if err != nil {
		t.Fatal(err)
	}
	addFile(t, bh, "0", 3, []byte("abc"))
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
	bs.Close()
}

// With --dedup-password-file, the repository the plugin creates is
// encrypted: it opens with that password only.
func TestRegisteredEncrypted(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("vitess secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	backupABC(t, newStorage((&flags{root: root, password: pw}).open))
	without := dedup.New(root, dedup.Options{})
	defer without.Close()
	if _, err := without.ListBackups(ctx, "ks/0"); !errors.Is(err, storage.ErrKeyRequired) {
		t.Errorf("opened without the password: %v, want storage.ErrKeyRequired", err)
	}
	with := dedup.New(root, dedup.Options{Secret: chunkstore.Secret{Password: []byte("vitess secret")}})
	defer with.Close()
	if bhs, err := with.ListBackups(ctx, "ks/0"); err != nil || len(bhs) != 1 {
		t.Fatalf("with the password: %d backups, %v", len(bhs), err)
	}
	if _, err := newStorage((&flags{root: root, password: filepath.Join(root, "missing")}).open).ListBackups(ctx, "ks/0"); err == nil || !strings.Contains(err.Error(), "--dedup-password-file") {
		t.Errorf("a missing password file: %v, want an error naming the flag", err)
	}
}
