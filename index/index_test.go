package index_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
)

func open(t *testing.T) (*index.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "index.db")
	db, err := index.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func id(b byte) chunkstore.ID { var i chunkstore.ID; i[0], i[31] = b, b; return i }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestOpenInUse(t *testing.T) {
	_, path := open(t)
	if _, err := index.Open(path, 50*time.Millisecond); !errors.Is(err, index.ErrInUse) {
		t.Fatalf("second Open = %v, want ErrInUse", err)
	}
}

func TestPacksAndLookup(t *testing.T) {
	db, _ := open(t)
	e := []chunkstore.PackEntry{{ID: id(1), Blob: chunkstore.Blob{Offset: 0, Length: 10, PlainLength: 20, Codec: chunkstore.CodecZstd}}}
	if err := db.AddPack(index.Pack{ID: id(100), Size: 100, Chunks: 1, Created: time.Now()}, e); err != nil {
		t.Fatal(err)
	}
	// A second copy of the chunk keeps the first location.
	e2 := []chunkstore.PackEntry{{ID: id(1), Blob: chunkstore.Blob{Offset: 5, Length: 10, PlainLength: 20}}}
	if err := db.AddPack(index.Pack{ID: id(101), Size: 50, Chunks: 1, Created: time.Now()}, e2); err != nil {
		t.Fatal(err)
	}
	loc, found, err := db.Lookup(id(1))
	if err != nil || !found || loc != (chunkstore.Location{Pack: id(100), Blob: e[0].Blob}) {
		t.Errorf("Lookup = %+v, %v, %v", loc, found, err)
	}
	if _, found, _ := db.Lookup(id(2)); found {
		t.Error("Lookup of an unknown chunk found it")
	}
	if s := must(db.Stats()); s != (index.Stats{Chunks: 1, Packs: 2, StoredBytes: 150}) {
		t.Errorf("Stats = %+v", s)
	}
}

func refs(n int, seed byte) []index.Ref {
	out := make([]index.Ref, n)
	for i := range out {
		out[i] = index.Ref{ID: id(seed + byte(i)), Length: uint32(1000 + i)}
	}
	return out
}

func addFile(t *testing.T, db *index.DB, dir, name, file string, rs []index.Ref) index.ListID {
	t.Helper()
	var list index.ListID
	var size int64
	for _, r := range rs {
		size += int64(r.Length)
	}
	last := uint32(max(0, len(rs)-1) / index.SegmentRefs)
	for seg := uint32(0); seg < last; seg++ {
		list = must(db.PutSegment(list, index.Segment{Seq: seg, Refs: rs[seg*index.SegmentRefs : (seg+1)*index.SegmentRefs]}))
	}
	f := index.File{Name: file, List: list, Size: size, Chunks: int64(len(rs))}
	if found, err := db.CommitFiles(dir, name, []index.Commit{{File: f, Last: index.Segment{Seq: last, Refs: rs[last*index.SegmentRefs:]}}}); err != nil || !found {
		t.Fatalf("CommitFile = %v, %v", found, err)
	}
	got, _, _ := db.File(dir, name, file)
	return got.List
}

func readList(t *testing.T, db *index.DB, list index.ListID) []index.Ref {
	var out []index.Ref
	for seg := uint32(0); ; seg++ {
		var found bool
		var err error
		out, found, err = db.Segment(list, seg, out)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			return out
		}
	}
}

func TestBackupLifecycle(t *testing.T) {
	db, _ := open(t)
	now := time.Unix(1700000000, 0)
	if !must(db.StartBackup("ks/0", "b2", now)) || !must(db.StartBackup("ks/0", "b1", now)) || !must(db.StartBackup("ks/1", "b0", now)) {
		t.Fatal("StartBackup of new names failed")
	}
	if must(db.StartBackup("ks/0", "b1", now)) {
		t.Error("StartBackup of an existing name succeeded")
	}
	bs := must(db.Backups("ks/0", false))
	if len(bs) != 2 || bs[0].Name != "b1" || bs[1].Name != "b2" || bs[0].State != index.InProgress {
		t.Errorf("Backups(ks/0) = %+v", bs)
	}
	if all := must(db.Backups("", true)); len(all) != 3 {
		t.Errorf("all backups = %+v", all)
	}
	big := refs(2500, 0) // three segments
	l1 := addFile(t, db, "ks/0", "b1", "f", big)
	if got := readList(t, db, l1); len(got) != len(big) || got[2499] != big[2499] {
		t.Errorf("list read back %d refs", len(got))
	}
	// Re-adding replaces the file and drops the old list.
	addFile(t, db, "ks/0", "b1", "f", refs(3, 7))
	if got := readList(t, db, l1); len(got) != 0 {
		t.Errorf("replaced list still has %d refs", len(got))
	}
	f, found, _ := db.File("ks/0", "b1", "f")
	if !found || f.Chunks != 3 || f.Size != 3003 {
		t.Errorf("File = %+v, %v", f, found)
	}
	if found := must(db.EndBackup("ks/0", "b1", now.Add(time.Hour))); !found {
		t.Error("EndBackup did not find the backup")
	}
	b, _, _ := db.Backup("ks/0", "b1")
	if b.State != index.Ended || !b.Ended.Equal(now.Add(time.Hour)) {
		t.Errorf("after EndBackup: %+v", b)
	}
	if err := db.DeleteBackup("ks/0", "b1"); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := db.Backup("ks/0", "b1"); found {
		t.Error("deleted backup still found")
	}
	if found := must(db.CommitFiles("ks/0", "b1", []index.Commit{{File: index.File{Name: "g"}, Last: index.Segment{Refs: refs(1, 0)}}})); found {
		t.Error("CommitFile into a deleted backup succeeded")
	}
}

func TestDropOpenLists(t *testing.T) {
	db, _ := open(t)
	must(db.StartBackup("d", "n", time.Now()))
	committed := addFile(t, db, "d", "n", "f", refs(5, 0))
	open := must(db.PutSegment(0, index.Segment{Refs: refs(5, 50)}))
	if n := must(db.DropOpenLists()); n != 1 {
		t.Errorf("DropOpenLists dropped %d lists, want 1", n)
	}
	if got := readList(t, db, open); len(got) != 0 {
		t.Errorf("open list kept %d refs", len(got))
	}
	if got := readList(t, db, committed); len(got) != 5 {
		t.Errorf("committed list has %d refs, want 5", len(got))
	}
}

func TestManifestRoundTrip(t *testing.T) {
	db, _ := open(t)
	start := time.Unix(0, 1700000000123456789)
	must(db.StartBackup("ks/-80", "2026-11-25.070000.zone1-101", start))
	addFile(t, db, "ks/-80", "2026-11-25.070000.zone1-101", "a", refs(1500, 0))
	addFile(t, db, "ks/-80", "2026-11-25.070000.zone1-101", "empty", nil)
	var buf bytes.Buffer
	end := start.Add(time.Minute)
	if err := db.WriteManifest(&buf, "ks/-80", "2026-11-25.070000.zone1-101", end); err != nil {
		t.Fatal(err)
	}
	m, err := index.DecodeManifest(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if m.Backup.Dir != "ks/-80" || m.Backup.Name != "2026-11-25.070000.zone1-101" || !m.Backup.Started.Equal(start) || !m.Backup.Ended.Equal(end) {
		t.Errorf("manifest backup = %+v", m.Backup)
	}
	if len(m.Files) != 2 || m.Files[0].Name != "a" || len(m.Files[0].Refs) != 1500 || m.Files[0].Refs[1499] != refs(1500, 0)[1499] || m.Files[1].Name != "empty" {
		t.Errorf("manifest files wrong: %d files", len(m.Files))
	}
	data := buf.Bytes()
	for _, cut := range []int{0, 5, len(data) / 2, len(data) - 1} {
		if _, err := index.DecodeManifest(bytes.NewReader(data[:cut])); !errors.Is(err, chunkstore.ErrCorrupt) {
			t.Errorf("manifest cut at %d: %v, want ErrCorrupt", cut, err)
		}
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0x40
	if _, err := index.DecodeManifest(bytes.NewReader(flipped)); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Errorf("flipped manifest: %v, want ErrCorrupt", err)
	}
	if got := index.ManifestName("ks/-80", "n"); got != "manifests/ks%2F-80/n" {
		t.Errorf("ManifestName = %q", got)
	}
}

func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte("DDSMANI\x01\x00\x00\x00\x00\x01\x01f\x00\x00"))
	f.Add([]byte("DDSMANI\x01\x02ks\x01n\x00\x00\xff\xff\xff\xff\x0f"))
	var whole bytes.Buffer
	index.EncodeManifest(&whole, index.Manifest{Backup: index.Backup{Dir: "ks/0", Name: "n", State: index.Ended, Started: time.Unix(0, 5), Ended: time.Unix(0, 9)},
		Files: []index.ManifestFile{{Name: "f", Size: 3, Refs: []index.Ref{{ID: chunkstore.ID{1}, Length: 3}}}, {Name: "empty"}}})
	f.Add(whole.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := index.DecodeManifest(bytes.NewReader(data))
		if len(m.Files) > len(data) {
			t.Fatalf("%d files from %d bytes", len(m.Files), len(data))
		}
		if m.Backup.State != index.Ended {
			return // nothing decoded
		}
		// What decodes, whole or salvaged from damage, encodes to a
		// manifest that decodes to the same.
		var enc bytes.Buffer
		if err := index.EncodeManifest(&enc, m); err != nil {
			t.Fatal(err)
		}
		again, err2 := index.DecodeManifest(bytes.NewReader(enc.Bytes()))
		if err2 != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip of %+v (decoded with %v): %+v, %v", m, err, again, err2)
		}
		if err == nil && !bytes.Equal(enc.Bytes(), data) {
			t.Fatalf("a whole manifest re-encodes to other bytes")
		}
	})
}
