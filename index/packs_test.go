package index_test

import (
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
)

func entry(chunk byte, off uint32) chunkstore.PackEntry {
	return chunkstore.PackEntry{ID: id(chunk), Blob: chunkstore.Blob{Offset: off, Length: 10, PlainLength: 10}}
}

func addPack(t *testing.T, db *index.DB, pack byte, entries ...chunkstore.PackEntry) {
	t.Helper()
	if err := db.AddPack(index.Pack{ID: id(pack), Size: 100, Chunks: len(entries), Created: time.Now()}, entries); err != nil {
		t.Fatal(err)
	}
}

// wantAt checks where Lookup finds a chunk (pack 0: nowhere) and whether a
// writer may deduplicate against it.
func wantAt(t *testing.T, db *index.DB, chunk, pack byte, usable bool) {
	t.Helper()
	loc, found, err := db.Lookup(id(chunk))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case pack == 0 && found:
		t.Errorf("chunk %d found in pack %x, want gone", chunk, loc.Pack[0])
	case pack != 0 && (!found || loc.Pack != id(pack)):
		t.Errorf("chunk %d: found %v in pack %x, want pack %d", chunk, found, loc.Pack[0], pack)
	}
	if got := must(db.Usable(id(chunk))); got != usable {
		t.Errorf("chunk %d: Usable = %v, want %v", chunk, got, usable)
	}
}

// A chunk stored twice, by two agents at once or by a collection's copy,
// survives the loss of either pack, and writers never deduplicate against
// a condemned pack while a good copy exists or after it is gone.
func TestCopiesAndCondemned(t *testing.T) {
	db, _ := open(t)
	addPack(t, db, 100, entry(1, 0), entry(2, 10))
	addPack(t, db, 101, entry(1, 0), entry(3, 10)) // chunk 1 again
	wantAt(t, db, 1, 100, true)

	// Condemning 100 moves chunk 1 to its copy; chunk 2 has none.
	if err := db.SetCondemned([]chunkstore.ID{id(100)}, false); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 101, true)
	wantAt(t, db, 2, 100, false)

	// A new copy of a chunk whose only location is condemned takes over.
	addPack(t, db, 102, entry(2, 0))
	wantAt(t, db, 2, 102, true)

	// Another agent deletes 101 and 102: chunk 1 falls back to condemned 100
	// (readable, not usable), chunk 3 leaves the index.
	if err := db.DropPacks([]chunkstore.ID{id(101), id(102)}); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 100, false)
	wantAt(t, db, 2, 100, false)
	wantAt(t, db, 3, 0, false)

	// A sync that lists only what is new adds to the condemned packs and
	// never drops one: it cannot tell a spared pack from a deleted one.
	if err := db.SetCondemned(nil, true); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 100, false)

	// Spared by the collection, 100 is usable again after a full sync.
	if err := db.SetCondemned(nil, false); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 100, true)
	if err := db.DropPacks([]chunkstore.ID{id(100)}); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 0, false)
	if s := must(db.Stats()); s != (index.Stats{}) {
		t.Errorf("Stats after dropping every pack = %+v", s)
	}
}

// SyncedAt reads back what SetSyncedAt recorded, and Reset forgets it.
func TestSyncedAt(t *testing.T) {
	db, _ := open(t)
	if _, ok, err := db.SyncedAt(); err != nil || ok {
		t.Fatalf("SyncedAt of a new index = %v, %v", ok, err)
	}
	at := time.Date(2026, 11, 28, 8, 0, 0, 123, time.UTC)
	if err := db.SetSyncedAt(at); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := db.SyncedAt(); err != nil || !ok || !got.Equal(at) {
		t.Errorf("SyncedAt = %v, %v, %v, want %v", got, ok, err, at)
	}
	if err := db.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.SyncedAt(); err != nil || ok {
		t.Errorf("SyncedAt after Reset = %v, %v", ok, err)
	}
}

// ReplacePack moves the retired pack's chunks to the new pack, and to
// copies elsewhere when the new pack lacks them.
func TestReplacePack(t *testing.T) {
	db, _ := open(t)
	addPack(t, db, 100, entry(1, 0), entry(2, 10), entry(3, 20))
	addPack(t, db, 101, entry(3, 0))
	next := index.Pack{ID: id(102), Size: 50, Chunks: 1, Created: time.Unix(0, 1e18)}
	if err := db.ReplacePack(id(100), []chunkstore.ID{id(1), id(2), id(3)}, &next, []chunkstore.PackEntry{entry(1, 0)}); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 102, true)
	wantAt(t, db, 2, 0, false)
	wantAt(t, db, 3, 101, true)
	if _, found, err := db.Pack(id(100)); err != nil || found {
		t.Errorf("retired pack still listed (%v)", err)
	}
	if p, found, err := db.Pack(id(102)); err != nil || !found || p != next {
		t.Errorf("Pack = %+v, %v, %v; want %+v", p, found, err, next)
	}
}

// A pack replaced by a repack moves its chunks to the replacement's copy,
// as ReplacePack promises, even when an older copy sorts first: the old
// one is the dead duplicate a final collection left behind before.
func TestReplacePackPrefersTheReplacement(t *testing.T) {
	db, _ := open(t)
	addPack(t, db, 200, entry(1, 0))
	addPack(t, db, 1, entry(1, 0)) // a copy in a pack whose ID sorts before the replacement's
	replacement := index.Pack{ID: id(150), Size: 100, Chunks: 1, Created: time.Now()}
	if err := db.ReplacePack(id(200), []chunkstore.ID{id(1)}, &replacement, []chunkstore.PackEntry{entry(1, 0)}); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 150, true)
}

func deltaEntry(chunk, base byte) chunkstore.PackEntry {
	e := entry(chunk, 0)
	e.Codec, e.Bases = chunkstore.CodecDelta, []chunkstore.ID{id(base)}
	return e
}

// Of a chunk's copies, one stored whole is its location over deltas,
// whichever pack came first: a chunk that is a delta's base must be found
// whole, and a collection keeps the located copy. Two agents that stored
// one new chunk at once, one as a delta and one whole, made a restore fail
// with "a delta's base is itself a delta".
func TestWholeCopyIsLocated(t *testing.T) {
	db, _ := open(t)
	addPack(t, db, 99, entry(7, 0), entry(8, 10), entry(9, 20)) // the deltas' bases
	addPack(t, db, 100, deltaEntry(1, 9), deltaEntry(2, 9), deltaEntry(3, 9))
	addPack(t, db, 101, entry(1, 0))
	wantAt(t, db, 1, 101, true)
	addPack(t, db, 102, entry(2, 0))
	addPack(t, db, 103, deltaEntry(2, 8)) // after the whole copy
	wantAt(t, db, 2, 102, true)

	// Condemning the whole copy's pack moves the chunk to its delta copy;
	// a new whole copy then takes over again.
	if err := db.SetCondemned([]chunkstore.ID{id(101)}, false); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 100, true)
	if err := db.SetCondemned(nil, false); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 1, 101, true)

	// Dropping the located pack moves the chunk to a whole copy if it has
	// one: chunk 3 has only its delta, chunk 2 one of each after 102 goes.
	addPack(t, db, 104, deltaEntry(2, 7), entry(3, 0))
	addPack(t, db, 105, entry(2, 0))
	if err := db.DropPacks([]chunkstore.ID{id(102)}); err != nil {
		t.Fatal(err)
	}
	wantAt(t, db, 2, 105, true)
	wantAt(t, db, 3, 104, true)
}
