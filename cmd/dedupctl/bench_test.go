package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dedupstore/dedupstore/internal/dataset"
)

// BenchmarkTree backs up a generated tree of 20,000 files (200 B to 12 KiB),
// beside tar | zstd -1 -T1 on the same tree (and restic, when it is on the
// PATH): a first backup into an empty repository, and an unchanged repeat.
// make bench-tree runs it and compares.
func BenchmarkTree(b *testing.B) {
	src, size := benchTree(b)
	b.Run("tool=tar-zstd", func(b *testing.B) {
		if _, err := exec.LookPath("zstd"); err != nil {
			b.Skip("no zstd")
		}
		b.SetBytes(size)
		for b.Loop() {
			if out, err := exec.Command("sh", "-c", "tar -cf - -C "+src+" . | zstd -1 -T1 >/dev/null").CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	})
	b.Run("tool=dedupctl/run=first", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			repo := filepath.Join(b.TempDir(), "repo")
			dedupctlRun(b, repo, "init")
			b.StartTimer()
			dedupctlRun(b, repo, "backup", "bench/t/1", src)
		}
	})
	b.Run("tool=dedupctl/run=repeat", func(b *testing.B) {
		repo := filepath.Join(b.TempDir(), "repo")
		dedupctlRun(b, repo, "init")
		dedupctlRun(b, repo, "backup", "bench/t/0", src)
		b.SetBytes(size)
		i := 0
		for b.Loop() {
			i++
			dedupctlRun(b, repo, "backup", fmt.Sprintf("bench/t/%d", i), src)
		}
	})
	if _, err := exec.LookPath("restic"); err != nil {
		return
	}
	restic := func(b *testing.B, repo string, args ...string) {
		cmd := exec.Command("restic", append([]string{"-r", repo, "-q"}, args...)...)
		cmd.Env = append(os.Environ(), "RESTIC_PASSWORD=bench", "RESTIC_CACHE_DIR="+filepath.Join(filepath.Dir(repo), "cache"))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("restic %v: %v: %s", args, err, out)
		}
	}
	b.Run("tool=restic/run=first", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			repo := filepath.Join(b.TempDir(), "restic")
			restic(b, repo, "init")
			b.StartTimer()
			restic(b, repo, "backup", src)
		}
	})
	b.Run("tool=restic/run=repeat", func(b *testing.B) {
		repo := filepath.Join(b.TempDir(), "restic")
		restic(b, repo, "init")
		restic(b, repo, "backup", src)
		b.SetBytes(size)
		for b.Loop() {
			restic(b, repo, "backup", src)
		}
	})
}

var (
	treeOnce sync.Once
	treeDir  string
	treeSize int64
	treeErr  error
)

// benchTree generates the tree once per process.
func benchTree(b *testing.B) (string, int64) {
	treeOnce.Do(func() {
		treeDir, treeErr = os.MkdirTemp("", "dedupctl-bench-tree-")
		if treeErr == nil {
			treeSize, treeErr = dataset.Tree(treeDir, 1, 20_000)
		}
	})
	if treeErr != nil {
		b.Fatal(treeErr)
	}
	return treeDir, treeSize
}

// dedupctlRun runs dedupctl in this process, as the command line would.
func dedupctlRun(b *testing.B, repo string, args ...string) {
	b.Helper()
	if code := run(context.Background(), append([]string{"--repo", repo, "--quiet"}, args...), nil, io.Discard, os.Stderr); code != 0 {
		b.Fatalf("dedupctl %v: exit %d", args, code)
	}
}
