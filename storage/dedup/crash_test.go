package dedup_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

var writeKills = flag.Int("write-kills", 50, "how many times TestBackupKilled kills a writing process")

// crashFiles is the deterministic content of backup i: three files sharing
// database pages, a few of whose rows backup i updates (chunks stored as
// deltas), each with its own tail.
func crashFiles(i int) map[string][]byte {
	shared := dataset.Update(dataset.Pages(80, 40), uint64(i), 0.1)
	files := map[string][]byte{}
	for j := range 3 {
		own := dataset.Random(uint64(1000*i+j), (100+97*((i+j)%5))<<10)
		files[fmt.Sprintf("f%d", j)] = append(shared[:(j+1)*dataset.PageSize*10:(j+1)*dataset.PageSize*10], own...)
	}
	return files
}

func crashName(i int) string { return fmt.Sprintf("b%04d", i) }

// openCrashRepo opens the repository of TestBackupKilled: at root, or,
// onBackend, with its objects in root/objects and the index caches of the
// agent named cache in root/cache.
func openCrashRepo(root string, onBackend bool, cache string) *dedup.Storage {
	opts := dedup.Options{PackSize: 256 << 10}
	if !onBackend {
		return dedup.New(root, opts)
	}
	opts.Backend = local.New(filepath.Join(root, "objects"))
	return dedup.New(filepath.Join(root, cache), opts)
}

// writeHelper writes backups crashName(start), crashName(start+1), ... with
// their files in parallel, printing "started N" once StartBackup returned
// and "ended N" once EndBackup did, until killed.
func writeHelper(root string, onBackend bool, start int) {
	s := openCrashRepo(root, onBackend, "writer")
	for i := start; ; i++ {
		bh, err := s.StartBackup(ctx, "d", crashName(i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("started", i)
		var wg sync.WaitGroup
		for file, data := range crashFiles(i) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := bh.AddFile(ctx, file)
				for off := 0; err == nil && off < len(data); off += 50000 {
					_, err = w.Write(data[off:min(len(data), off+50000)])
				}
				if err == nil {
					err = w.Close()
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
			}()
		}
		wg.Wait()
		if err := bh.EndBackup(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		fmt.Println("ended", i)
	}
}

// TestBackupKilled kills a process writing backups at random moments, many
// times on one repository. After every kill the repository opens, check
// finds nothing wrong, every backup that had ended reads back exactly, the
// interrupted one is gone, and its name can be used again. With the
// objects on a Backend, an agent with a cache of its own sees the same.
func TestBackupKilled(t *testing.T) {
	for _, onBackend := range []bool{false, true} {
		t.Run(fmt.Sprint("backend=", onBackend), func(t *testing.T) { backupKilled(t, onBackend) })
	}
}

func backupKilled(t *testing.T, onBackend bool) {
	root := filepath.Join(t.TempDir(), "repo")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	var ended []int
	next, midBackup := 0, 0
	for round := range *writeKills {
		cmd, lines, stderr := startHelper(t, "DEDUP_WRITE_HELPER_ROOT="+root, "DEDUP_WRITE_HELPER_START="+strconv.Itoa(next), fmt.Sprint("DEDUP_WRITE_HELPER_SHARED=", onBackend))
		var thisRound []int
		last := "" // the helper's last line: where the kill landed
		read := func() bool {
			if !lines.Scan() {
				return false
			}
			last = lines.Text()
			if n, ok := strings.CutPrefix(last, "ended "); ok {
				i, err := strconv.Atoi(n)
				if err != nil {
					t.Fatalf("helper said %q", last)
				}
				thisRound = append(thisRound, i)
			}
			return true
		}
		// Let it end none or one backup, then kill it a random moment
		// after its next StartBackup returned.
		for k := 1 + 2*rng.IntN(2); k > 0 && read(); k-- {
		}
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		cmd.Process.Kill()
		for read() {
		}
		if strings.HasPrefix(last, "started ") {
			midBackup++
		}
		cmd.Wait()
		if stderr.Len() > 0 {
			t.Fatalf("round %d: the writing process failed: %s", round, stderr.String())
		}
		ended = append(ended, thisRound...)
		interrupted := next + len(thisRound)

		s := openCrashRepo(root, onBackend, "writer")
		if r, err := s.Check(ctx, check.Options{}); err != nil || !r.OK() {
			t.Fatalf("round %d: check after the kill: %v %+v", round, err, r.Problems)
		}
		for _, i := range thisRound {
			backups{crashName(i): crashFiles(i)}.verify(t, s, fmt.Sprintf("round %d", round))
		}
		if len(ended) > 0 { // and one older backup, at random
			i := ended[rng.IntN(len(ended))]
			backups{crashName(i): crashFiles(i)}.verify(t, s, fmt.Sprintf("round %d", round))
		}
		bhs, err := s.ListBackups(ctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		listed := false
		for _, bh := range bhs {
			listed = listed || bh.Name() == crashName(interrupted)
		}
		if listed {
			// Killed after EndBackup returned but before it said so: the
			// backup ended, and must be whole.
			backups{crashName(interrupted): crashFiles(interrupted)}.verify(t, s, fmt.Sprintf("round %d, ended unannounced", round))
			ended = append(ended, interrupted)
			next = interrupted + 1
			s.Close()
			continue
		}
		backup(t, s, "d", crashName(interrupted), crashFiles(interrupted)) // its name is free
		ended = append(ended, interrupted)
		next = interrupted + 1
		s.Close()
	}
	all := backups{}
	for _, i := range ended {
		all[crashName(i)] = crashFiles(i)
	}
	agents := []string{"writer"}
	if onBackend {
		agents = append(agents, "another agent")
	}
	for _, agent := range agents {
		s := openCrashRepo(root, onBackend, agent)
		defer s.Close()
		all.verify(t, s, "at the end, for "+agent)
		if r, err := s.Check(ctx, check.Options{ReadData: true}); err != nil || !r.OK() {
			t.Fatalf("final check --read-data by %s: %v %+v", agent, err, r.Problems)
		}
		if countDeltas(s) == 0 {
			t.Errorf("%s: the backups made no deltas", agent)
		}
	}
	t.Logf("%d kills, %d of them inside a backup; %d backups ended, %d of them by the killed processes", *writeKills, midBackup, len(ended), len(ended)-*writeKills)
	if midBackup < *writeKills*3/4 {
		t.Errorf("only %d of %d kills landed inside a backup", midBackup, *writeKills)
	}
}
