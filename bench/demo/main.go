// Command demo runs dedupstore's main job on a local repository: three full
// backups of a generated database (16 KiB pages, rows of text, zero free
// space), with pages rewritten between them as a busy database would, then a
// restore of the last backup compared byte for byte. It prints what each
// backup cost.
//
//	go run ./bench/demo [-size 256MiB] [-repo DIR]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

func main() {
	sizeMiB := flag.Int("size-mib", 256, "size of the generated database in MiB")
	repo := flag.String("repo", "", "repository directory (default: a new temporary directory, removed afterwards)")
	flag.Parse()
	if err := run(*sizeMiB, *repo); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(sizeMiB int, repo string) error {
	ctx := context.Background()
	if repo == "" {
		dir, err := os.MkdirTemp("", "dedupstore-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		repo = dir + "/repo"
	}
	s := dedup.New(repo, dedup.Options{})
	defer s.Close()

	fmt.Printf("Generating a %d MiB database; repository %s\n\n", sizeMiB, repo)
	db := dataset.Pages(1, sizeMiB<<20/dataset.PageSize)
	versions := []struct {
		name, change string
		data         []byte
	}{{"backup-1", "initial full backup", db}}
	db = dataset.Mutate(db, 2, 0.05)
	versions = append(versions, struct {
		name, change string
		data         []byte
	}{"backup-2", "5 % of pages rewritten", db})
	db = dataset.Insert(dataset.Mutate(db, 3, 0.01), len(db)/3, dataset.Pages(4, 64))
	versions = append(versions, struct {
		name, change string
		data         []byte
	}{"backup-3", "1 % rewritten, 1 MiB inserted", db})

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "backup\tchange\tlogical\tstored after\tadded\tlogical ÷ stored\tMB/s\t")
	var prevStored int64
	for _, v := range versions {
		start := time.Now()
		if err := backup(ctx, s, v.name, v.data); err != nil {
			return err
		}
		secs := time.Since(start).Seconds()
		st, err := s.Stats(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%.0f\t\n", v.name, v.change, mib(st.LogicalBytes), mib(st.StoredBytes),
			mib(st.StoredBytes-prevStored), float64(st.LogicalBytes)/float64(st.StoredBytes), float64(len(v.data))/secs/1e6)
		prevStored = st.StoredBytes
	}
	tw.Flush()

	last := versions[len(versions)-1]
	start := time.Now()
	if err := restore(ctx, s, last.name, &comparer{want: last.data}); err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("\nRestored %s: %s, identical byte for byte, %.0f MB/s\n", last.name, mib(int64(len(last.data))), float64(len(last.data))/secs/1e6)
	return nil
}

// comparer is a writer that fails as soon as what it is given differs from
// want, so a restore is checked as it streams.
type comparer struct {
	want []byte
}

func (c *comparer) Write(p []byte) (int, error) {
	if len(p) > len(c.want) || !bytes.Equal(p, c.want[:len(p)]) {
		return 0, errors.New("restored bytes differ from what was backed up")
	}
	c.want = c.want[len(p):]
	return len(p), nil
}

func backup(ctx context.Context, s storage.BackupStorage, name string, data []byte) error {
	bh, err := s.StartBackup(ctx, "demo/0", name)
	if err != nil {
		return err
	}
	w, err := bh.AddFile(ctx, "ibdata1")
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return bh.EndBackup(ctx)
}

func restore(ctx context.Context, s storage.BackupStorage, name string, c *comparer) error {
	bhs, err := s.ListBackups(ctx, "demo/0")
	if err != nil {
		return err
	}
	for _, bh := range bhs {
		if bh.Name() == name {
			rc, err := bh.ReadFile(ctx, "ibdata1")
			if err != nil {
				return err
			}
			defer rc.Close()
			if _, err := io.CopyBuffer(c, rc, make([]byte, 1<<20)); err != nil {
				return err
			}
			if len(c.want) != 0 {
				return fmt.Errorf("restore of %s is %d bytes short", name, len(c.want))
			}
			return nil
		}
	}
	return fmt.Errorf("backup %s not listed", name)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
