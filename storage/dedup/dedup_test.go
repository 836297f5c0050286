package dedup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

var ctx = context.Background()

func newStorage(t *testing.T, opts dedup.Options) (*dedup.Storage, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "repo")
	s := dedup.New(root, opts)
	t.Cleanup(func() { s.Close() })
	return s, root
}

// backup stores files (name → content) as one ended backup.
func backup(t *testing.T, s storage.BackupStorage, dir, name string, files map[string][]byte) {
	t.Helper()
	bh, err := s.StartBackup(ctx, dir, name)
	if err != nil {
		t.Fatal(err)
	}
	finish(t, bh, files)
}

// finish adds files (name → content) to a started backup and ends it.
func finish(t *testing.T, bh storage.BackupHandle, files map[string][]byte) {
	t.Helper()
	for file, data := range files {
		write(t, bh, file, data)
	}
	if err := bh.EndBackup(ctx); err != nil {
		t.Fatal(err)
	}
}

// write adds one closed file to a started backup.
func write(t *testing.T, bh storage.BackupHandle, file string, data []byte) {
	t.Helper()
	w, err := bh.AddFile(ctx, file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func readBack(t *testing.T, s storage.BackupStorage, dir, name, file string) ([]byte, error) {
	t.Helper()
	bhs, err := s.ListBackups(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, bh := range bhs {
		if bh.Name() == name {
			rc, err := bh.ReadFile(ctx, file)
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			return io.ReadAll(rc)
		}
	}
	t.Fatalf("backup %s/%s not listed", dir, name)
	return nil, nil
}

func stats(t *testing.T, s *dedup.Storage) gc.Stats {
	t.Helper()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSecondIdenticalBackupCostsLittle(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	files := map[string][]byte{"ibdata1": dataset.Pages(1, 1024), "t1": dataset.Random(2, 8<<20)}
	backup(t, s, "ks/0", "b1", files)
	before := stats(t, s).StoredBytes
	backup(t, s, "ks/0", "b2", files)
	after := stats(t, s)
	grown := after.StoredBytes - before
	t.Logf("first backup stored %d bytes for 24 MiB; the second added %d", before, grown)
	if grown > int64(24<<20)/50 {
		t.Errorf("second identical backup grew the repository by %d bytes, more than 2%% of %d", grown, 24<<20)
	}
	if after.LogicalBytes != 2*(24<<20) {
		t.Errorf("LogicalBytes = %d, want %d", after.LogicalBytes, 2*(24<<20))
	}
	for name, want := range files {
		got, err := readBack(t, s, "ks/0", "b2", name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s read back wrong: %v", name, err)
		}
	}
}

func TestInsertCostsLittle(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	data := dataset.Random(3, 32<<20)
	backup(t, s, "d", "b1", map[string][]byte{"f": data})
	before := stats(t, s).StoredBytes
	edited := dataset.Insert(data, 16<<20+12345, dataset.Random(4, 4096))
	backup(t, s, "d", "b2", map[string][]byte{"f": edited})
	grown := stats(t, s).StoredBytes - before
	t.Logf("a 4 KiB insert into 32 MiB re-stored %d bytes", grown)
	if grown > int64(32<<20)/10 {
		t.Errorf("a 4 KiB insert grew the repository by %d bytes, more than 10%% of 32 MiB", grown)
	}
	if got, err := readBack(t, s, "d", "b2", "f"); err != nil || !bytes.Equal(got, edited) {
		t.Errorf("edited file read back wrong: %v", err)
	}
}

func TestConcurrentIdenticalChunksStoredOnce(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	data := dataset.Random(5, 8<<20)
	bh, err := s.StartBackup(ctx, "d", "n")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := bh.AddFile(ctx, "f"+string(rune('0'+i)))
			if err == nil {
				_, err = w.Write(data)
			}
			if err == nil {
				err = w.Close()
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	bh.EndBackup(ctx)
	// Random data does not compress: the packs hold the 8 MiB once, plus
	// their headers and trailers.
	st := stats(t, s)
	if limit := int64(len(data)) + chunkstore.PackOverhead(st.Chunks, nil) + int64(st.Packs)*chunkstore.PackOverhead(0, nil); st.StoredBytes > limit {
		t.Errorf("4 parallel copies of 8 MiB stored %d bytes, more than one copy (%d)", st.StoredBytes, limit)
	}
}

// Two storages on one local directory, as two processes are: each takes
// an index cache of its own, and each backs up, reads, removes and
// collects while the other has a backup running.
func TestTwoStoragesOneDirectory(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	data, more := dataset.Random(31, 300<<10), dataset.Random(32, 300<<10)
	backup(t, s, "d", "ended", map[string][]byte{"f": data})
	running, err := s.StartBackup(ctx, "d", "running")
	if err != nil {
		t.Fatal(err)
	}
	other := dedup.New(root, dedup.Options{})
	defer other.Close()
	bhs, err := other.ListBackups(ctx, "d")
	if err != nil || len(bhs) != 2 || bhs[0].Name() != "ended" || bhs[1].Name() != "running" {
		t.Fatalf("second storage lists %v, %v; want the ended backup and the running one", names(bhs), err)
	}
	if _, err := other.StartBackup(ctx, "d", "running"); !errors.Is(err, storage.ErrExists) {
		t.Errorf("StartBackup of a name another storage runs: %v, want ErrExists", err)
	}
	wantContent(t, other, "d", "ended", data)
	backup(t, other, "d", "second", map[string][]byte{"f": more})
	wantContent(t, s, "d", "second", more)
	for _, name := range []string{"index.db", "index-1.db"} {
		if _, err := os.Stat(filepath.Join(dedup.LocalCacheDir(root), name)); err != nil {
			t.Errorf("index cache %s: %v", name, err)
		}
	}

	// A removal and a collection while s's backup runs: what it condemns
	// waits for s's lease, and s's backup, which deduplicates against the
	// removed backup's chunks, keeps them.
	if err := other.RemoveBackup(ctx, "d", "ended"); err != nil {
		t.Fatal(err)
	}
	noGrace := gc.Options{GracePeriod: time.Nanosecond}
	if p, res := collect(t, other, noGrace); p.SweepNow || res.Condemned == 0 || res.Deleted != 0 {
		t.Fatalf("collection beside a running backup: sweep now %v, result %+v; want packs condemned, none deleted", p.SweepNow, res)
	}
	finish(t, running, map[string][]byte{"g": data})
	if p, _ := collect(t, other, noGrace); p.Spared == 0 {
		t.Errorf("the packs the running backup used were not spared: %+v", p)
	}
	for _, st := range []*dedup.Storage{s, other} {
		wantContentFile(t, st, "d", "running", "g", data)
		wantContent(t, st, "d", "second", more)
		if r := runCheck(t, st, check.Options{ReadData: true}); !r.OK() {
			t.Fatalf("check: %+v", r.Problems)
		}
	}
}

func TestRefusesForeignDirectory(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "precious"), []byte("x"), 0o644)
	s := dedup.New(root, dedup.Options{})
	defer s.Close()
	if _, err := s.StartBackup(ctx, "d", "n"); err == nil || !strings.Contains(err.Error(), "not a dedupstore repository") {
		t.Fatalf("StartBackup in a foreign non-empty directory: %v", err)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 {
		t.Errorf("the foreign directory now holds %d entries", len(entries))
	}
}

func TestUnknownVersion(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "n", nil)
	s.Close()
	path := filepath.Join(root, "config")
	var cfg map[string]any
	data, _ := os.ReadFile(path)
	json.Unmarshal(data, &cfg)
	cfg["version"] = 7
	data, _ = json.Marshal(cfg)
	os.WriteFile(path, data, 0o644)
	_, err := s.ListBackups(ctx, "d")
	if !errors.Is(err, chunkstore.ErrUnsupportedVersion) || !strings.Contains(err.Error(), "version 7") {
		t.Fatalf("opening a version 7 repository: %v", err)
	}
}

func TestChunkerSettingsKept(t *testing.T) {
	params := chunkstore.ChunkerParams{Kind: chunkstore.ChunkerRestic, MinSize: 8 << 10, AvgSize: 32 << 10, MaxSize: 128 << 10}
	s, root := newStorage(t, dedup.Options{Chunker: params, Compression: chunkstore.Compression{Level: chunkstore.LevelNone}})
	data := dataset.Pages(6, 200)
	backup(t, s, "d", "n", map[string][]byte{"f": data})
	s.Close()
	cfg, err := chunkstore.ReadConfig(ctx, local.New(root), chunkstore.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Chunker.Kind != params.Kind || cfg.Chunker.AvgSize != params.AvgSize || cfg.Compression.Level != chunkstore.LevelNone {
		t.Errorf("config = %+v", cfg)
	}
	// Reopened with other options, the repository keeps its own settings.
	s2 := dedup.New(root, dedup.Options{})
	defer s2.Close()
	if got, err := readBack(t, s2, "d", "n", "f"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	// The same data in a compressing repository takes far less room.
	zs, _ := newStorage(t, dedup.Options{Chunker: params})
	backup(t, zs, "d", "n", map[string][]byte{"f": data})
	if none, zstd := stats(t, s2).StoredBytes, stats(t, zs).StoredBytes; none < 2*zstd {
		t.Errorf("uncompressed repository stored %d bytes, compressed one %d: compression setting not kept", none, zstd)
	}
}

// TestCorruptPackDetected damages one pack of one backup in each way a disk
// can: reads of it fail with ErrCorrupt naming the chunk, never with wrong
// bytes; the other backup still reads; check names exactly the damaged file.
func TestCorruptPackDetected(t *testing.T) {
	for _, damage := range []string{"flip", "truncate", "delete"} {
		t.Run(damage, func(t *testing.T) {
			s, root := newStorage(t, dedup.Options{})
			a, b := dataset.Random(7, 1<<20), dataset.Random(8, 1<<20)
			backup(t, s, "d", "a", map[string][]byte{"f": a})
			before := map[string]bool{}
			filepath.WalkDir(filepath.Join(root, "data"), func(p string, d os.DirEntry, err error) error {
				before[p] = err == nil && !d.IsDir()
				return nil
			})
			backup(t, s, "d", "b", map[string][]byte{"f": b})
			var victim string // a's pack
			for p, isFile := range before {
				if isFile {
					victim = p
				}
			}
			data, _ := os.ReadFile(victim)
			switch damage {
			case "flip":
				data[100] ^= 0x20
				os.WriteFile(victim, data, 0o644)
			case "truncate":
				os.WriteFile(victim, data[:len(data)/2], 0o644)
			case "delete":
				os.Remove(victim)
			}
			got, err := readBack(t, s, "d", "a", "f")
			if err == nil || bytes.Equal(got[:min(len(got), len(a))], a) && len(got) == len(a) {
				t.Fatalf("reading the damaged backup: %d bytes, %v; want an error", len(got), err)
			}
			if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "chunk ") {
				t.Fatalf("reading the damaged backup: %v; want ErrCorrupt naming the chunk", err)
			}
			if !bytes.Equal(got, a[:len(got)]) {
				t.Fatalf("the bytes returned before the error are wrong")
			}
			if got, err := readBack(t, s, "d", "b", "f"); err != nil || !bytes.Equal(got, b) {
				t.Fatalf("the undamaged backup: %v", err)
			}
			r, err := s.Check(ctx, check.Options{ReadData: true})
			if err != nil || r.OK() || len(r.Affected) != 1 || r.Affected[0] != (check.File{Dir: "d", Name: "a", File: "f"}) {
				t.Fatalf("check: %v %+v", err, r)
			}
		})
	}
}

func TestCorruptConfig(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "a", nil)
	s.Close()
	os.WriteFile(filepath.Join(root, "config"), []byte(`{"version": 1, "key": "tru`), 0o644)
	if _, err := s.ListBackups(ctx, "d"); !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), "config") {
		t.Errorf("opening with a damaged config: %v; want ErrCorrupt naming the config", err)
	}
	os.Remove(filepath.Join(root, "config"))
	if _, err := s.ListBackups(ctx, "d"); err == nil || !strings.Contains(err.Error(), "no config") {
		t.Errorf("opening with no config: %v", err)
	}
}

func TestInProgressDroppedOnReopen(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	backup(t, s, "d", "ended", map[string][]byte{"f": []byte("kept")})
	bh, _ := s.StartBackup(ctx, "d", "running")
	w, _ := bh.AddFile(ctx, "f")
	w.Write(dataset.Random(9, 1<<20))
	s.Close() // as a crash would, leaves the backup in progress
	if _, err := w.Write([]byte("more")); err == nil {
		t.Error("writer kept working after Close")
	}
	if err := w.Close(); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("writer Close after storage Close: %v, want ErrClosed", err)
	}
	if _, err := bh.AddFile(ctx, "g"); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("AddFile on a handle from before Close: %v, want ErrClosed", err)
	}
	s2 := dedup.New(root, dedup.Options{})
	defer s2.Close()
	bhs, err := s2.ListBackups(ctx, "d")
	if err != nil || len(bhs) != 1 || bhs[0].Name() != "ended" {
		t.Fatalf("after reopen: %d backups, %v; want only the ended one", len(bhs), err)
	}
	if _, err := s2.StartBackup(ctx, "d", "running"); err != nil {
		t.Errorf("the dropped backup's name is not free: %v", err)
	}
}

func TestAbortWhileWriting(t *testing.T) {
	s, _ := newStorage(t, dedup.Options{})
	bh, _ := s.StartBackup(ctx, "d", "n")
	w, err := bh.AddFile(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	w.Write(dataset.Random(10, 100000))
	if err := bh.AbortBackup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, storage.ErrAborted) {
		t.Errorf("Close of a writer of an aborted backup: %v, want ErrAborted", err)
	}
	if _, err := bh.AddFile(ctx, "g"); !errors.Is(err, storage.ErrAborted) {
		t.Errorf("AddFile to an aborted backup: %v, want ErrAborted", err)
	}
}

func TestRegistryReadsFlagOnEachOpen(t *testing.T) {
	rootA, rootB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	flag.Set("backup_storage_implementation", "dedup")
	defer flag.Set("backup_storage_implementation", "")
	bs, err := storage.GetBackupStorage()
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	defer flag.Set("dedup_backup_storage_root", "")
	for _, root := range []string{rootA, rootB} {
		flag.Set("dedup_backup_storage_root", root)
		backup(t, bs, "d", filepath.Base(root), nil)
		if err := bs.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(root, "config")); err != nil {
			t.Errorf("no repository at %s: %v", root, err)
		}
	}
	flag.Set("dedup_backup_storage_root", rootA)
	bhs, err := bs.ListBackups(ctx, "d")
	if err != nil || len(bhs) != 1 || bhs[0].Name() != "a" {
		t.Errorf("root a lists %d backups, %v", len(bhs), err)
	}
	flag.Set("backup_storage_implementation", "nope")
	if _, err := storage.GetBackupStorage(); err == nil {
		t.Error("GetBackupStorage of an unregistered name succeeded")
	}
}

// countGets counts the reads of packs.
type countGets struct {
	chunkstore.Backend
	n atomic.Int64
}

func (b *countGets) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	if strings.HasPrefix(name, chunkstore.PackPrefix) {
		b.n.Add(1)
	}
	return b.Backend.Get(ctx, name, off, n)
}

// A restore reads the chunks a first backup stored back to back in runs
// of up to 1 MiB, one request each, not a request per chunk (which the
// blob headers of pack format 2 caused until runs stepped over them).
func TestRestoreReadsRuns(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	b := &countGets{Backend: local.New(root)}
	s := dedup.New(root, dedup.Options{Backend: b, Workers: 1}) // one worker packs chunks in file order
	defer s.Close()
	data := dataset.Random(160, 8<<20)
	backup(t, s, "d", "a", map[string][]byte{"f": data})
	st := stats(t, s)
	b.n.Store(0)
	wantContent(t, s, "d", "a", data)
	if got, most := b.n.Load(), int64(len(data)>>20)+2; got > most {
		t.Errorf("restoring %d chunks in %d packs took %d reads, want at most %d", st.Chunks, st.Packs, got, most)
	}
}

func names(bhs []storage.BackupHandle) []string {
	var out []string
	for _, bh := range bhs {
		out = append(out, bh.Directory()+"/"+bh.Name())
	}
	return out
}
