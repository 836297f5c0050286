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
// PATH): a first backup into an empty repository, an unchanged repeat, and a
// restore into an empty directory.
// make bench-tree runs it and compares.
func BenchmarkTree(b *testing.B) {
	src, size := benchTree(b)
	sh := func(b *testing.B, script string) {
		if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v: %s", script, err, out)
		}
	}
	b.Run("tool=tar-zstd/run=first", func(b *testing.B) {
		if _, err := exec.LookPath("zstd"); err != nil {
			b.Skip("no zstd")
		}
		b.SetBytes(size)
		for b.Loop() {
			sh(b, "tar -cf - -C "+src+" . | zstd -1 -T1 >/dev/null")
		}
	})
	b.Run("tool=tar-zstd/run=restore", func(b *testing.B) {
		if _, err := exec.LookPath("zstd"); err != nil {
			b.Skip("no zstd")
		}
		archive := filepath.Join(b.TempDir(), "tree.tar.zst")
		sh(b, "tar -cf - -C "+src+" . | zstd -1 -T1 -q -o "+archive)
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			target := filepath.Join(b.TempDir(), "target")
			os.Mkdir(target, 0o755)
			b.StartTimer()
			sh(b, "zstd -d -c "+archive+" | tar -xf - -C "+target)
		}
	})
	// A backup tool is what the first and repeat runs compare: how it
	// makes a repository and backs the tree up into it.
	type tool struct {
		name   string
		init   func(b *testing.B, repo string)
		backup func(b *testing.B, repo string, n int)
	}
	tools := []tool{{
		name: "dedupctl",
		init: func(b *testing.B, repo string) { dedupctlRun(b, repo, "init") },
		backup: func(b *testing.B, repo string, n int) {
			dedupctlRun(b, repo, "backup", fmt.Sprintf("bench/t/%d", n), src)
		},
	}}
	if _, err := exec.LookPath("restic"); err == nil {
		restic := func(b *testing.B, repo string, args ...string) {
			cmd := exec.Command("restic", append([]string{"-r", repo, "-q"}, args...)...)
			cmd.Env = append(os.Environ(), "RESTIC_PASSWORD=bench", "RESTIC_CACHE_DIR="+filepath.Join(filepath.Dir(repo), "cache"))
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("restic %v: %v: %s", args, err, out)
			}
		}
		tools = append(tools, tool{
			name:   "restic",
			init:   func(b *testing.B, repo string) { restic(b, repo, "init") },
			backup: func(b *testing.B, repo string, _ int) { restic(b, repo, "backup", src) },
		})
	}
	for _, t := range tools {
		b.Run("tool="+t.name+"/run=first", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				repo := filepath.Join(b.TempDir(), "repo")
				t.init(b, repo)
				b.StartTimer()
				t.backup(b, repo, 0)
			}
		})
		b.Run("tool="+t.name+"/run=repeat", func(b *testing.B) {
			repo := filepath.Join(b.TempDir(), "repo")
			t.init(b, repo)
			t.backup(b, repo, 0)
			b.SetBytes(size)
			n := 0
			for b.Loop() {
				n++
				t.backup(b, repo, n)
			}
		})
	}
	b.Run("tool=dedupctl/run=restore", func(b *testing.B) {
		repo := filepath.Join(b.TempDir(), "repo")
		dedupctlRun(b, repo, "init")
		dedupctlRun(b, repo, "backup", "bench/t/0", src)
		b.SetBytes(size)
		for b.Loop() {
			b.StopTimer()
			target := filepath.Join(b.TempDir(), "target")
			b.StartTimer()
			dedupctlRun(b, repo, "restore", "bench/t/0", "--target", target)
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
