package chunkstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/internal/faulty"
)

func shared(a, b []uint64) int {
	n := 0
	for i := range a {
		if a[i] == b[i] {
			n++
		}
	}
	return n
}

// A chunk with a few bytes changed keeps most features; an unrelated chunk
// shares none.
func TestFeaturesFindSimilarChunks(t *testing.T) {
	base := dataset.Pages(1, 4) // 64 KiB of pages
	similar := append([]byte(nil), base...)
	for _, off := range []int{100, 20000, 50000} {
		copy(similar[off:], "changed rows")
	}
	other := dataset.Pages(2, 4)
	fb, fs, fo := chunkstore.Features(base, 16), chunkstore.Features(similar, 16), chunkstore.Features(other, 16) // 16 to see the few parts a change touches
	if n := shared(fb, fs); n < 12 {
		t.Errorf("a chunk with 3 small changes shares %d of 16 features, want >= 12", n)
	}
	if n := shared(fb, fo); n > 1 {
		t.Errorf("an unrelated chunk shares %d of 16 features", n)
	}
	if got := chunkstore.Features([]byte("abc"), 16); len(got) != 3 {
		t.Errorf("3 bytes give %d features, want 3", len(got))
	}
}

// One encoder serves many bases in turn; a delta decodes with its bases
// only, and is far smaller than the chunk compressed alone.
func TestDeltaRoundTrip(t *testing.T) {
	enc, err := chunkstore.NewDeltaEncoder(chunkstore.LevelFastest, 256<<10, chunkstore.MaxDeltaBases)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var dec chunkstore.DeltaDecoder
	for seed := range uint64(4) {
		a, b := dataset.Pages(10+seed, 4), dataset.Pages(20+seed, 4)
		plain := append(append([]byte(nil), a[:32<<10]...), b[32<<10:]...)
		copy(plain[1000:], "a changed row")
		for _, bases := range [][][]byte{{a}, {a, b}} {
			delta, err := enc.Encode(nil, plain, bases...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := dec.Decode(nil, delta, bases...)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("seed %d, %d bases: decoded %d bytes, %v", seed, len(bases), len(got), err)
			}
			if len(bases) == 2 && len(delta) > len(plain)/50 {
				t.Errorf("seed %d: delta of %d bytes for a %d-byte chunk made of its bases", seed, len(delta), len(plain))
			}
			if wrong, err := dec.Decode(nil, delta, dataset.Pages(99, 4)); err == nil && bytes.Equal(wrong, plain) {
				t.Errorf("seed %d: a delta decoded right with the wrong base", seed)
			}
		}
	}
	if _, err := chunkstore.NewDeltaEncoder(chunkstore.LevelNone, 1<<20, 1); err == nil {
		t.Error("a delta encoder without compression was made")
	}
	if _, err := chunkstore.NewDeltaEncoder(chunkstore.LevelFastest, 1<<20, chunkstore.MaxDeltaBases+1); err == nil {
		t.Error("a delta encoder for too many bases was made")
	}
}

// createDeltaStore creates a repository that makes deltas on b, encrypted
// if secret is not empty.
func createDeltaStore(t *testing.T, b chunkstore.Backend, secret chunkstore.Secret) *chunkstore.Store {
	t.Helper()
	cfg, err := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Deltas = true
	if !secret.Empty() {
		cfg.Encryption = chunkstore.EncryptionAESGCM
	}
	s, err := chunkstore.Create(context.Background(), b, cfg, secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A repository that makes deltas stores a chunk's features beside it, and
// a delta's bases in its entry and its stored bytes; a delta loads with
// the base its locator finds and is checked against its ID like any chunk.
// So in an encrypted one.
func TestStoreDeltas(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testStoreDeltas(t, chunkstore.Secret{}) })
	t.Run("encrypted", func(t *testing.T) { testStoreDeltas(t, chunkstore.Secret{Password: []byte("pw")}) })
}

func testStoreDeltas(t *testing.T, secret chunkstore.Secret) {
	ctx := context.Background()
	s := createDeltaStore(t, local.New(t.TempDir()), secret)
	defer s.Close()
	base, other := dataset.Pages(1, 4), dataset.Pages(2, 4)
	plain := bytes.Clone(base)
	copy(plain[5000:], "an updated row")
	baseID, otherID, id := s.Hash(base), s.Hash(other), s.Hash(plain)
	enc, err := chunkstore.NewDeltaEncoder(chunkstore.LevelFastest, 256<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var p chunkstore.PackBuilder
	whole := s.Encode(nil, baseID, base)
	whole.Features = chunkstore.Features(base, chunkstore.DeltaFeatures)
	p.Add(whole)
	p.Add(s.Encode(nil, otherID, other))
	d, err := s.EncodeDelta(enc, nil, id, plain, []chunkstore.ID{baseID}, [][]byte{base})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Data) > 200 {
		t.Errorf("a delta of %d bytes for 14 changed bytes", len(d.Data))
	}
	p.Add(d)
	packID, entries, size, err := s.WritePack(ctx, &p)
	if err != nil {
		t.Fatal(err)
	}
	trailer, err := chunkstore.ReadPackTrailer(ctx, s.Backend(), chunkstore.PackName(packID), size, s.Cipher())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(trailer, entries) || trailer[2].Codec != chunkstore.CodecDelta || !reflect.DeepEqual(trailer[2].Bases, []chunkstore.ID{baseID}) || !reflect.DeepEqual(trailer[0].Features, whole.Features) || trailer[1].Features != nil {
		t.Fatalf("trailer %+v, want %+v", trailer, entries)
	}
	at := func(i int) chunkstore.Location { return chunkstore.Location{Pack: packID, Blob: entries[i].Blob} }
	loc := at(2)
	if _, err := s.LoadChunk(ctx, id, loc, nil, nil); err == nil {
		t.Error("a delta loaded without a base locator")
	}
	locateAt := func(i int) chunkstore.BaseLocator {
		return func(context.Context, chunkstore.ID) (chunkstore.Location, int64, error) { return at(i), size, nil }
	}
	s.SetBaseLocator(locateAt(0), 0)
	got, err := s.LoadChunk(ctx, id, loc, nil, nil)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("delta loaded as %d bytes, %v", len(got), err)
	}
	c, err := s.CopyChunk(ctx, id, loc, nil, nil)
	if err != nil || c.Codec != chunkstore.CodecDelta {
		t.Fatalf("copied delta %+v, %v", c, err)
	}
	var copyPack chunkstore.PackBuilder // a repack keeps the delta's bases
	if e := copyPack.Add(c); !reflect.DeepEqual(e.Bases, []chunkstore.ID{baseID}) {
		t.Errorf("a copied delta's entry names bases %v", e.Bases)
	}
	// A base found where another chunk is stored, or where a delta is, is
	// damage, and the error names the base.
	for _, i := range []int{1, 2} {
		s.SetBaseLocator(locateAt(i), 0)
		if _, err := s.LoadChunk(ctx, id, loc, nil, nil); !errors.Is(err, chunkstore.ErrCorrupt) || !strings.Contains(err.Error(), "base "+baseID.String()) {
			t.Errorf("a delta decoded with the base at entry %d: %v, want ErrCorrupt naming the base", i, err)
		}
	}
	s.SetBaseLocator(func(context.Context, chunkstore.ID) (chunkstore.Location, int64, error) {
		return chunkstore.Location{}, 0, context.DeadlineExceeded
	}, 0)
	if _, err := s.LoadChunk(ctx, id, loc, nil, nil); errors.Is(err, chunkstore.ErrCorrupt) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a base that failed to load: %v, want its error and not ErrCorrupt", err)
	}
	// The headers and blobs alone name a delta's bases, for a pack whose
	// trailer is lost.
	s.SetBaseLocator(locateAt(0), 0)
	rc, err := s.Backend().Get(ctx, chunkstore.PackName(packID), 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if intact, lost := s.Salvage(ctx, data, chunkstore.ScanPack(data)); len(intact) != 3 || lost != 0 || !reflect.DeepEqual(intact[2].Bases, []chunkstore.ID{baseID}) {
		t.Errorf("Salvage found %+v, lost %d", intact, lost)
	}
}

// The bases of consecutive deltas, stored one after the other, come from
// one read of the pack when bases are read in runs (what makes deltas
// affordable on object storage); a pack shorter than its index record
// still gives its bases.
func TestDeltaBasesReadInRuns(t *testing.T) {
	ctx := context.Background()
	b := faulty.New(local.New(t.TempDir()))
	s := createDeltaStore(t, b, chunkstore.Secret{})
	defer s.Close()
	enc, err := chunkstore.NewDeltaEncoder(chunkstore.LevelFastest, 256<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var bases, deltas chunkstore.PackBuilder
	var plains [][]byte
	for i := range uint64(4) {
		base := dataset.Pages(30+i, 4)
		plain := bytes.Clone(base)
		copy(plain[7000:], "an updated row")
		bases.Add(s.Encode(nil, s.Hash(base), base))
		d, err := s.EncodeDelta(enc, nil, s.Hash(plain), plain, []chunkstore.ID{s.Hash(base)}, [][]byte{base})
		if err != nil {
			t.Fatal(err)
		}
		deltas.Add(d)
		plains = append(plains, plain)
	}
	basePack, baseEntries, baseSize, err := s.WritePack(ctx, &bases)
	if err != nil {
		t.Fatal(err)
	}
	deltaPack, deltaEntries, _, err := s.WritePack(ctx, &deltas)
	if err != nil {
		t.Fatal(err)
	}
	locate := func(packSize int64) chunkstore.BaseLocator {
		return func(_ context.Context, id chunkstore.ID) (chunkstore.Location, int64, error) {
			for _, e := range baseEntries {
				if e.ID == id {
					return chunkstore.Location{Pack: basePack, Blob: e.Blob}, packSize, nil
				}
			}
			return chunkstore.Location{}, 0, chunkstore.ErrCorrupt
		}
	}
	for _, c := range []struct {
		runBytes  int
		packSize  int64
		wantReads int // 0: not counted
	}{
		{0, baseSize, 2 * len(deltaEntries)},
		{1 << 20, baseSize, len(deltaEntries) + 1},
		{1 << 20, baseSize + 1000, 0},
	} {
		s, err := chunkstore.Open(ctx, b, chunkstore.Secret{}) // no runs kept yet
		if err != nil {
			t.Fatal(err)
		}
		s.SetBaseLocator(locate(c.packSize), c.runBytes)
		b.Arm(1<<30, faulty.Refuse, faulty.Get) // counts reads
		for i, e := range deltaEntries {
			got, err := s.LoadChunk(ctx, e.ID, chunkstore.Location{Pack: deltaPack, Blob: e.Blob}, nil, nil)
			if err != nil || !bytes.Equal(got, plains[i]) {
				t.Fatalf("%+v: delta %d loaded as %d bytes, %v", c, i, len(got), err)
			}
		}
		if reads, _ := b.Disarm(); c.wantReads != 0 && reads != c.wantReads {
			t.Errorf("%+v: %d deltas took %d reads", c, len(deltaEntries), reads)
		}
		s.Close()
	}
}

// A delta whose base is damaged does not load, even where the delta would
// decode right because it uses none of the damaged bytes: otherwise check
// would pass it, and a repair that drops the damaged base would lose it
// without saying so.
func TestDeltaOfADamagedBaseDoesNotLoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := createDeltaStore(t, local.New(dir), chunkstore.Secret{})
	defer s.Close()
	base := dataset.Random(5, 64<<10) // stored raw: its bytes are where they are damaged
	plain := append(bytes.Clone(base[:32<<10]), dataset.Random(6, 32<<10)...)
	baseID, id := s.Hash(base), s.Hash(plain)
	enc, err := chunkstore.NewDeltaEncoder(chunkstore.LevelFastest, 256<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var p chunkstore.PackBuilder
	p.Add(s.Encode(nil, baseID, base))
	d, err := s.EncodeDelta(enc, nil, id, plain, []chunkstore.ID{baseID}, [][]byte{base})
	if err != nil {
		t.Fatal(err)
	}
	p.Add(d)
	packID, entries, size, err := s.WritePack(ctx, &p)
	if err != nil {
		t.Fatal(err)
	}
	if entries[0].Codec != chunkstore.CodecRaw {
		t.Fatalf("the base is stored as codec %v, not raw", entries[0].Codec)
	}
	s.SetBaseLocator(func(context.Context, chunkstore.ID) (chunkstore.Location, int64, error) {
		return chunkstore.Location{Pack: packID, Blob: entries[0].Blob}, size, nil
	}, 0)
	path := filepath.Join(dir, filepath.FromSlash(chunkstore.PackName(packID)))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[entries[0].Offset+60000] ^= 1 // in the half of the base the delta does not use
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.LoadChunk(ctx, id, chunkstore.Location{Pack: packID, Blob: entries[1].Blob}, nil, nil)
	if !errors.Is(err, chunkstore.ErrCorrupt) || !strings.Contains(err.Error(), "base "+baseID.String()) {
		t.Errorf("a delta of a damaged base loaded: %v, want ErrCorrupt naming the base", err)
	}
}
