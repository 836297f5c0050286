package vitess

import (
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/mysql/fakesqldb"
	"vitess.io/vitess/go/vt/log"
	"vitess.io/vitess/go/vt/logutil"
	"vitess.io/vitess/go/vt/mysqlctl"
	"vitess.io/vitess/go/vt/mysqlctl/backupstorage"
	"vitess.io/vitess/go/vt/mysqlctl/filebackupstorage"
	"vitess.io/vitess/go/vt/proto/topodata"
	"vitess.io/vitess/go/vt/servenv"
	"vitess.io/vitess/go/vt/topo"
	"vitess.io/vitess/go/vt/topo/memorytopo"
)

var (
	benchMiB   = flag.Int("vitess-bench-mib", 1024, "size of the tablespace BenchmarkBuiltinBackup backs up, in MiB")
	benchFiles = flag.Int("vitess-bench-files", 2000, "number of small files beside it")
)

// BenchmarkBuiltinBackup backs up a datadir through mysqlctl.Backup and
// Vitess's builtin engine, into Vitess's file storage and into dedup side
// by side: 2,000 small tables (16-64 KiB) and a tablespace of 1 GiB of
// pages, then again after 1 % of the tablespace's pages changed. It reports
// the seconds each backup took and the bytes each stored. make bench-vitess
// runs it.
func BenchmarkBuiltinBackup(b *testing.B) {
	data := b.TempDir()
	cnf := writeDatadir(b, data)
	pages := dataset.Pages(1, *benchMiB<<20/dataset.PageSize)
	changed := dataset.Mutate(pages, 2, 0.01)
	big := filepath.Join(cnf.DataDir, "big", "t.ibd")
	defer log.SwapLogger(log.SwapLogger(slog.New(slog.DiscardHandler)))
	registered := backupstorage.BackupStorageMap["dedup"]
	defer func() { backupstorage.BackupStorageMap["dedup"] = registered }()
	for _, c := range []struct {
		store    string
		compress bool
	}{{"file", true}, {"file", false}, {"dedup", false}, {"dedup", true}} {
		b.Run(fmt.Sprintf("store=%s/compress=%v", c.store, c.compress), func(b *testing.B) {
			fs := servenv.GetFlagSetFor("vttablet")
			if err := fs.Parse([]string{fmt.Sprintf("--backup-storage-compress=%v", c.compress)}); err != nil {
				b.Fatal(err)
			}
			var secs [2]float64
			var stored [2]int64
			for b.Loop() {
				b.StopTimer()
				root := filepath.Join(b.TempDir(), "backups")
				filebackupstorage.FileBackupStorageRoot = root
				bs := New(dedup.New(root, dedup.Options{}))
				backupstorage.BackupStorageMap["dedup"] = bs
				backupstorage.BackupStorageImplementation = c.store
				for i, tablespace := range [][]byte{pages, changed} {
					if err := os.WriteFile(big, tablespace, 0o644); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					start := time.Now()
					backup(b, cnf, time.Date(2026, 11, 28, 12, i, 0, 0, time.UTC))
					secs[i] += time.Since(start).Seconds()
					b.StopTimer()
					stored[i] = storedBytes(b, root)
				}
				bs.Close()
				os.RemoveAll(root)
				b.StartTimer()
			}
			b.ReportMetric(secs[0]/float64(b.N), "first-s")
			b.ReportMetric(secs[1]/float64(b.N), "second-s")
			b.ReportMetric(float64(stored[0])/1e6, "first-stored-MB")
			b.ReportMetric(float64(stored[1]-stored[0])/1e6, "second-added-MB")
		})
	}
}

// writeDatadir lays out a datadir as MySQL 8.0 does, with the small files
// and the tablespace's directory.
func writeDatadir(b *testing.B, root string) *mysqlctl.Mycnf {
	cnf := &mysqlctl.Mycnf{
		InnodbDataHomeDir:     filepath.Join(root, "innodb"),
		InnodbLogGroupHomeDir: filepath.Join(root, "log"),
		DataDir:               filepath.Join(root, "data"),
	}
	for _, dir := range []string{cnf.InnodbDataHomeDir, filepath.Join(cnf.InnodbLogGroupHomeDir, mysql.DynamicRedoLogSubdir), filepath.Join(cnf.DataDir, "small"), filepath.Join(cnf.DataDir, "big")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(cnf.InnodbDataHomeDir, "ibdata1"), dataset.Pages(3, 768), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cnf.InnodbLogGroupHomeDir, mysql.DynamicRedoLogSubdir, "#ib_redo1"), dataset.Random(4, 4<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	for i := range *benchFiles {
		data := dataset.Pages(uint64(100+i), 1+i%4)
		if err := os.WriteFile(filepath.Join(cnf.DataDir, "small", fmt.Sprintf("t%d.ibd", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return cnf
}

// backup runs mysqlctl.Backup, as vttablet does, with a fake mysqld.
func backup(b *testing.B, cnf *mysqlctl.Mycnf, at time.Time) {
	ctx := b.Context()
	ts := memorytopo.NewServer(ctx, "cell1")
	defer ts.Close()
	keyspace, shard := "ks", "-"
	if err := ts.CreateKeyspace(ctx, keyspace, &topodata.Keyspace{}); err != nil {
		b.Fatal(err)
	}
	if err := ts.CreateShard(ctx, keyspace, shard); err != nil {
		b.Fatal(err)
	}
	tablet := topo.NewTablet(100, "cell1", "host")
	tablet.Keyspace, tablet.Shard = keyspace, shard
	if err := ts.CreateTablet(ctx, tablet); err != nil {
		b.Fatal(err)
	}
	db := fakesqldb.New(b)
	defer db.Close()
	mysqld := mysqlctl.NewFakeMysqlDaemon(db)
	defer mysqld.Close()
	mysqld.ExpectedExecuteSuperQueryList = []string{"STOP REPLICA", "START REPLICA"}
	err := mysqlctl.Backup(ctx, mysqlctl.BackupParams{
		Cnf:                  cnf,
		Mysqld:               mysqld,
		Logger:               logutil.NewMemoryLogger(),
		Concurrency:          4,
		HookExtraEnv:         map[string]string{},
		TopoServer:           ts,
		Keyspace:             keyspace,
		Shard:                shard,
		TabletAlias:          "cell1-0000000100",
		BackupTime:           at,
		MysqlShutdownTimeout: time.Minute,
		BackupEngine:         "builtin",
	})
	if err != nil {
		b.Fatal(err)
	}
}

// storedBytes is what a storage holds under root, less dedup's local index
// caches.
func storedBytes(b *testing.B, root string) int64 {
	var n int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "index" && filepath.Dir(p) == root {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
