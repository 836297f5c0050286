package dedup_test

import (
	"errors"

	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// Regression tests of issue 11: what reported success stays restorable,
// and damage is contained, never spread.

// Two agents using a new repository for the first time at once: one
// creates it, the other uses its config, and both backups read back (the
// loser once replaced the config, and its chunks no longer matched their
// IDs under the winner's key).
func TestConcurrentCreation(t *testing.T) {
	for trial := range 20 {
		objects := filepath.Join(t.TempDir(), "objects")
		opts := smallPacks
		opts.Shared, opts.Backend = true, chunkstore.NewLocal(objects)
		data := [][]byte{dataset.Random(uint64(2*trial), 300<<10), dataset.Random(uint64(2*trial+1), 300<<10)}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := dedup.New(t.TempDir(), opts)
				defer s.Close()
				bh, err := s.StartBackup(ctx, "d", fmt.Sprint(i))
				if err == nil {
					err = writeParallel(s, bh, map[string][]byte{"f": data[i]})
				}
				if err == nil {
					err = bh.EndBackup(ctx)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("trial %d: agent %d: %v", trial, i, err)
			}
		}
		s := dedup.New(t.TempDir(), opts)
		for i := range 2 {
			wantContent(t, s, "d", fmt.Sprint(i), data[i])
		}
		if r := runCheck(t, s, check.Options{ReadData: true}); !r.OK() {
			t.Fatalf("trial %d: check: %+v", trial, r.Problems)
		}
		s.Close()
	}
}

// Of two Inits at once, one creates the repository and the other is told
// it exists.
func TestConcurrentInit(t *testing.T) {
	for trial := range 20 {
		root := filepath.Join(t.TempDir(), "repo")
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = dedup.Init(ctx, root, dedup.Options{}) }()
		}
		wg.Wait()
		created := 0
		for _, err := range errs {
			switch {
			case err == nil:
				created++
			case !errors.Is(err, chunkstore.ErrExist):
				t.Fatalf("trial %d: Init: %v, want nil or ErrExist", trial, err)
			}
		}
		if created != 1 {
			t.Fatalf("trial %d: %d Inits reported creating the repository, want 1", trial, created)
		}
		s := dedup.New(root, dedup.Options{})
		backup(t, s, "d", "n", map[string][]byte{"f": []byte("x")})
		if _, err := readBack(t, s, "d", "n", "f"); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}
