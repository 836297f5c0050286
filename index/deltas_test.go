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
// ForEachDelta lists every delta's bases until its pack goes.
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
