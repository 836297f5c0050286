package index_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
)

// Similar finds indexed chunks stored whole by their features, most votes
// first, and never a delta, a chunk in a condemned pack or one gone;
// ForEachDelta lists every delta's bases until its pack goes; UsableBase
// holds for the chunks Similar may find, and not for a delta, which a
// writer may still deduplicate against (Usable).
func TestSimilarAndDeltas(t *testing.T) {
	d, _ := open(t)
	feats := func(start uint64) []uint64 {
		f := make([]uint64, chunkstore.DeltaFeatures)
		for i := range f {
			f[i] = start + uint64(i)
		}
		return f
	}
	const n, shared = chunkstore.DeltaFeatures, chunkstore.DeltaFeatures / 4
	a, b, delta := chunkstore.ID{1}, chunkstore.ID{2}, chunkstore.ID{3}
	p1, p2 := chunkstore.ID{0xa1}, chunkstore.ID{0xa2}
	blob := chunkstore.Blob{Offset: 61, Length: 10, PlainLength: 10}
	deltaBlob := blob
	deltaBlob.Codec = chunkstore.CodecDelta
	err := d.AddPacks([]index.PackEntries{
		{Pack: index.Pack{ID: p1, Size: 1000, Chunks: 2, Created: time.Now()}, Entries: []chunkstore.PackEntry{
			{ID: a, Blob: blob, Features: feats(100)},
			{ID: b, Blob: blob, Features: feats(100 + n - shared)}, // takes shared of a's features
		}},
		{Pack: index.Pack{ID: p2, Size: 1000, Chunks: 1, Created: time.Now()}, Entries: []chunkstore.PackEntry{
			{ID: delta, Blob: deltaBlob, Bases: []chunkstore.ID{a, b}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Similar(feats(100), 1, 2)
	if err != nil || !reflect.DeepEqual(got, []chunkstore.ID{a, b}) {
		t.Fatalf("Similar = %v, %v; want a then b", got, err)
	}
	for _, c := range []struct {
		id         chunkstore.ID
		usable, as bool
	}{{a, true, true}, {delta, true, false}, {chunkstore.ID{9}, false, false}} {
		if u, b := must(d.Usable(c.id)), must(d.UsableBase(c.id)); u != c.usable || b != c.as {
			t.Errorf("chunk %v: Usable %v, UsableBase %v; want %v, %v", c.id, u, b, c.usable, c.as)
		}
	}
	if got, _ := d.Similar(feats(100), shared+1, 2); !reflect.DeepEqual(got, []chunkstore.ID{a}) {
		t.Errorf("Similar with %d votes needed = %v, want a", shared+1, got)
	}
	var deltas []chunkstore.ID
	d.ForEachDelta(func(id chunkstore.ID, bases []chunkstore.ID) error {
		if !reflect.DeepEqual(bases, []chunkstore.ID{a, b}) {
			t.Errorf("delta %v has bases %v", id, bases)
		}
		deltas = append(deltas, id)
		return nil
	})
	if !reflect.DeepEqual(deltas, []chunkstore.ID{delta}) {
		t.Errorf("deltas %v", deltas)
	}
	if err := d.SetCondemned([]chunkstore.ID{p1}, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Similar(feats(100), 1, 2); len(got) != 0 {
		t.Errorf("Similar in a condemned pack = %v", got)
	}
	if must(d.UsableBase(a)) || must(d.Usable(delta)) {
		t.Error("a chunk in a condemned pack is usable as a base, or its delta usable")
	}
	if err := d.DropPacks([]chunkstore.ID{p1, p2}); err != nil {
		t.Fatal(err)
	}
	d.SetCondemned([]chunkstore.ID{p1}, false)
	if got, _ := d.Similar(feats(100), 1, 2); len(got) != 0 {
		t.Errorf("Similar after the pack went = %v", got)
	}
	d.ForEachDelta(func(id chunkstore.ID, bases []chunkstore.ID) error {
		t.Errorf("delta %v listed after its pack went", id)
		return nil
	})
}

// A base stored whole and, by a second agent, as a delta keeps being read
// whole when the pack of its whole copy is condemned and its location
// moves to the delta.
func TestBaseLocation(t *testing.T) {
	d, _ := open(t)
	base, other := chunkstore.ID{1}, chunkstore.ID{2}
	p1, p2 := chunkstore.ID{0xa1}, chunkstore.ID{0xa2}
	whole := chunkstore.Blob{Offset: 61, Length: 10, PlainLength: 10}
	delta := whole
	delta.Codec = chunkstore.CodecDelta
	err := d.AddPacks([]index.PackEntries{
		{Pack: index.Pack{ID: p1, Size: 1000, Chunks: 2, Created: time.Now()}, Entries: []chunkstore.PackEntry{{ID: base, Blob: whole}, {ID: other, Blob: whole}}},
		{Pack: index.Pack{ID: p2, Size: 1000, Chunks: 1, Created: time.Now()}, Entries: []chunkstore.PackEntry{{ID: base, Blob: delta, Bases: []chunkstore.ID{other}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := chunkstore.Location{Pack: p1, Blob: whole}
	if err := d.SetCondemned([]chunkstore.ID{p1}, true); err != nil {
		t.Fatal(err)
	}
	if loc, _, _ := d.Lookup(base); loc.Pack != p2 {
		t.Fatalf("the location of a chunk whose pack is condemned stays in it: %v", loc)
	}
	if loc, found, err := d.BaseLocation(base); !found || err != nil || loc != want {
		t.Errorf("BaseLocation = %v, %v, %v; want %v", loc, found, err, want)
	}
	if err := d.DropPacks([]chunkstore.ID{p1}); err != nil {
		t.Fatal(err)
	}
	if loc, found, err := d.BaseLocation(base); found || err != nil {
		t.Errorf("BaseLocation of a chunk left only as a delta = %v, %v, %v", loc, found, err)
	}
}
