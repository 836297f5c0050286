package dedup_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// repairFiles is the content of the backups of the repair tests: pages
// shared between backups, and data of each file's own.
func repairFiles() map[string]map[string][]byte {
	shared := dataset.Pages(120, 60)
	out := map[string]map[string][]byte{}
	for i := range 5 {
		files := map[string][]byte{}
		for j := range 3 {
			files[fmt.Sprintf("f%d", j)] = append(append([]byte(nil), shared[:(j+1)*20*dataset.PageSize]...), dataset.Random(uint64(10*i+j), 40<<10)...)
		}
		out[fmt.Sprintf("b%d", i)] = files
	}
	return out
}

// readable returns which backup files read back exactly, as "backup/file".
func readable(s storage.BackupStorage, want map[string]map[string][]byte) map[string]bool {
	ok := map[string]bool{}
	bhs, err := s.ListBackups(ctx, "d")
	if err != nil {
		return ok
	}
	for _, bh := range bhs {
		for file, data := range want[bh.Name()] {
			rc, err := bh.ReadFile(ctx, file)
			if err != nil {
				continue
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err == nil && bytes.Equal(got, data) {
				ok[bh.Name()+"/"+file] = true
			}
		}
	}
	return ok
}

// TestDamageRepairCollect damages a repository at random (bytes flipped in
// packs, their trailers and manifests, packs cut short or grown, index.db
// destroyed), runs check, repair and a collection that keeps nothing dead,
// and rebuilds the index from scratch: whatever read back exactly before
// the repair still does, the repair lists every file it cannot restore,
// and it leaves nothing that stops a collection.
func TestDamageRepairCollect(t *testing.T) {
	want := repairFiles()
	pristine := filepath.Join(t.TempDir(), "repo")
	s := dedup.New(pristine, dedup.Options{PackSize: 128 << 10})
	for name, files := range want {
		backup(t, s, "d", name, files)
	}
	s.Close()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	for trial := range 25 {
		root := filepath.Join(t.TempDir(), "repo")
		if err := os.CopyFS(root, os.DirFS(pristine)); err != nil {
			t.Fatal(err)
		}
		var done []string
		for range 1 + rng.IntN(3) {
			done = append(done, damageAtRandom(t, rng, root))
		}
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			t.Logf("damage: %q", done)
			s := dedup.New(root, dedup.Options{PackSize: 128 << 10})
			defer s.Close()
			before := readable(s, want)
			if _, err := s.Check(ctx, check.Options{ReadData: true}); err != nil {
				t.Fatal(err)
			}
			rep, err := s.Repair(ctx, false)
			if err != nil {
				t.Fatalf("repair: %v", err)
			}
			lost := map[string]bool{}
			for _, f := range rep.Lost {
				lost[f.Name+"/"+f.File] = true
			}
			for _, m := range rep.Manifests {
				for _, f := range m.LostFiles {
					lost[fmt.Sprint(m.Manifest, "/", f)] = true
				}
			}
			collect(t, s, everything) // fails the test if gc refuses
			if _, err := s.RebuildIndex(ctx); err != nil {
				t.Fatal(err)
			}
			after := readable(s, want)
			for f := range before {
				if !after[f] {
					t.Errorf("%s read back before the repair and gc, and not after", f)
				}
			}
			for name, files := range want {
				for file := range files {
					f := name + "/" + file
					if !after[f] && !lost[f] && !manifestLost(rep, name) {
						t.Errorf("%s cannot be restored, and the repair did not say so (report %+v)", f, rep)
					}
				}
			}
			// What check still finds is the loss the repair reported.
			r, err := s.Check(ctx, check.Options{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range r.Problems {
				if p.Pack != "" || p.Manifest != "" {
					t.Errorf("check after repair and gc: %+v", p)
				}
			}
			for _, f := range r.Affected {
				if !lost[f.Name+"/"+f.File] {
					t.Errorf("check finds %s/%s damaged, which the repair did not report", f.Name, f.File)
				}
			}
		})
	}
}

// manifestLost reports whether the repair dealt with backup name's
// manifest without the index: files after the damage are unknown to it.
func manifestLost(rep dedup.RepairReport, name string) bool {
	for _, m := range rep.Manifests {
		if m.Manifest == "manifests/d/"+name && !m.FromIndex {
			return true
		}
	}
	return false
}

// damageAtRandom does one kind of damage to the local repository at root
// and says what it did.
func damageAtRandom(t *testing.T, rng *rand.Rand, root string) string {
	t.Helper()
	packs := packFiles(t, root)
	manifests, _ := filepath.Glob(filepath.Join(root, "manifests", "d", "*"))
	pack := packs[rng.IntN(len(packs))]
	switch kind := rng.IntN(8); kind {
	case 0, 1: // a byte anywhere in a pack
		damageFile(t, pack, func(d []byte) []byte { d[rng.IntN(len(d))] ^= byte(1 + rng.IntN(255)); return d })
	case 2: // a byte in a pack's trailer
		damageFile(t, pack, func(d []byte) []byte { d[len(d)-1-rng.IntN(min(len(d), 200))] ^= 1; return d })
	case 3:
		damageFile(t, pack, func(d []byte) []byte { return d[:len(d)-1-rng.IntN(len(d)/2)] })
	case 4:
		damageFile(t, pack, func(d []byte) []byte {
			return append(d, bytes.Repeat([]byte{byte(rng.IntN(256))}, 1+rng.IntN(5000))...)
		})
	case 5:
		m := manifests[rng.IntN(len(manifests))]
		damageFile(t, m, func(d []byte) []byte { d[rng.IntN(len(d))] ^= byte(1 + rng.IntN(255)); return d })
		return "manifest " + filepath.Base(m)
	case 6:
		if err := os.Truncate(filepath.Join(dedup.LocalCacheDir(root), "index.db"), 8192); err != nil {
			return "index.db already gone"
		}
		return "index.db truncated"
	case 7:
		os.Remove(filepath.Join(dedup.LocalCacheDir(root), "index.db"))
		return "index.db deleted"
	}
	return "pack " + filepath.Base(pack)
}

// A manifest damaged while the index still holds its backup is written
// again from the index: nothing is lost, and a rebuild from scratch finds
// the backup whole.
func TestRepairManifestFromIndex(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	files := map[string][]byte{"f": dataset.Random(130, 100<<10), "g": dataset.Random(131, 100<<10)}
	backup(t, s, "d", "a", files)
	damageFile(t, filepath.Join(root, "manifests", "d", "a"), func(d []byte) []byte { d[20] ^= 1; return d })
	if r := runCheck(t, s, check.Options{}); r.OK() {
		t.Fatal("check did not find the damaged manifest")
	}
	wantGCRefused(t, s, root)
	rep, err := s.Repair(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Manifests) != 1 || !rep.Manifests[0].FromIndex || rep.Damaged() {
		t.Fatalf("repair = %+v, want the manifest written again from the index", rep)
	}
	if _, err := os.Stat(filepath.Join(root, "quarantine", "manifests", "d", "a")); err != nil {
		t.Errorf("the damaged manifest was not kept in quarantine/: %v", err)
	}
	collect(t, s, everything)
	if _, err := s.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for f, data := range files {
		if got, err := readBack(t, s, "d", "a", f); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after repair, gc and rebuild: %v", f, err)
		}
	}
}

// A manifest damaged after its backup left the index (a rebuild): the
// repair keeps the files whose chunks are all stored, names the file whose
// chunk ID the damage changed, and gc then runs without deleting what the
// salvaged files use.
func TestRepairSalvagesManifest(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	files := map[string][]byte{"a": dataset.Random(132, 50<<10), "b": dataset.Random(133, 50<<10), "c": dataset.Random(134, 50<<10)}
	backup(t, s, "d", "x", files)
	// The chunk ID of file b: its first byte after the header and file a.
	damageFile(t, filepath.Join(root, "manifests", "d", "x"), func(d []byte) []byte {
		i := bytes.Index(d, []byte("\x01b")) + 2 // name "b", then size and count varints
		for d[i]&0x80 != 0 {
			i++
		}
		i++ // size done
		for d[i]&0x80 != 0 {
			i++
		}
		i++ // count done
		d[i] ^= 0xff
		return d
	})
	if res, err := s.RebuildIndex(ctx); err != nil || len(res.DamagedManifests) != 1 {
		t.Fatalf("rebuild: %+v, %v", res, err)
	}
	rep, err := s.Repair(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Manifests) != 1 || rep.Manifests[0].Files != 2 || fmt.Sprint(rep.Manifests[0].LostFiles) != "[b]" || !rep.Damaged() {
		t.Fatalf("repair = %+v, want a and c salvaged and b lost", rep)
	}
	collect(t, s, everything)
	for _, f := range []string{"a", "c"} {
		if got, err := readBack(t, s, "d", "x", f); err != nil || !bytes.Equal(got, files[f]) {
			t.Fatalf("%s after repair and gc: %v", f, err)
		}
	}
	if _, err := readBack(t, s, "d", "x", "b"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("lost file b: %v, want ErrNotFound", err)
	}
}

// A missing manifest of a backup the index holds is written again by a
// repair; removing a backup whose manifest is damaged clears the damage.
func TestRepairMissingManifest(t *testing.T) {
	s, root := newStorage(t, dedup.Options{})
	files := map[string][]byte{"f": dataset.Random(135, 80<<10)}
	backup(t, s, "d", "a", files)
	backup(t, s, "d", "b", files)
	if err := os.Remove(filepath.Join(root, "manifests", "d", "a")); err != nil {
		t.Fatal(err)
	}
	damageFile(t, filepath.Join(root, "manifests", "d", "b"), func(d []byte) []byte { d[10] ^= 1; return d })
	if r := runCheck(t, s, check.Options{}); r.OK() {
		t.Fatal("check did not find the missing and damaged manifests")
	}
	if err := s.RemoveBackup(ctx, "d", "b"); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Repair(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Manifests) != 1 || rep.Manifests[0].Manifest != "manifests/d/a" || !rep.Manifests[0].FromIndex || rep.Damaged() {
		t.Fatalf("repair = %+v, want d/a's manifest written from the index", rep)
	}
	collect(t, s, everything)
	if _, err := s.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	wantContent(t, s, "d", "a", files["f"])
}
