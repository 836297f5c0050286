package dedup_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// keyFile is a secret that opens without argon2id's cost. (The storage
// suite runs encrypted on gofakes3, in chunkstore/s3; every dedupctl test
// runs on an encrypted local repository.)
var keyFile = chunkstore.Secret{KeyFile: chunkstore.NewKeyFile()}

// An encrypted repository makes deltas, refuses to open without its key
// or with a wrong one (with storage's sentinels, changing nothing), and
// collects, checks and repairs as an unencrypted one does: a repack copies
// sealed chunks as they are, and a damaged sealed manifest is quarantined
// byte for byte and written again from the index.
func TestEncryptedRepository(t *testing.T) {
	opts := dedup.Options{Secret: keyFile, PackSize: 1 << 20}
	s, root := newStorage(t, opts)
	v1 := dataset.Pages(1, 256)
	v2 := dataset.Update(v1, 2, 0.05)
	backup(t, s, "ks/0", "b1", map[string][]byte{"f": v1})
	// b2's deltas share a pack with g, which only b2 has: removing b2
	// makes that pack worth rewriting, with the deltas b3 uses.
	backup(t, s, "ks/0", "b2", map[string][]byte{"f": v2, "g": dataset.Random(5, 300<<10)})
	backup(t, s, "ks/0", "b3", map[string][]byte{"f": v2})
	if countDeltas(s) == 0 {
		t.Fatal("no deltas were made")
	}
	s.Close()

	for _, tc := range []struct {
		secret chunkstore.Secret
		want   error
	}{
		{chunkstore.Secret{}, storage.ErrKeyRequired},
		{chunkstore.Secret{Password: []byte("guess")}, storage.ErrWrongKey},
		{chunkstore.Secret{KeyFile: chunkstore.NewKeyFile()}, storage.ErrWrongKey},
	} {
		other := dedup.New(root, dedup.Options{Secret: tc.secret})
		if _, err := other.ListBackups(ctx, "ks/0"); !errors.Is(err, tc.want) || errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("opened with %+v: %v, want %v", tc.secret, err, tc.want)
		}
		other.Close()
	}

	s = dedup.New(root, opts)
	defer s.Close()
	if st := stats(t, s); st.Encryption != chunkstore.EncryptionAESGCM || st.Backups != 3 {
		t.Errorf("stats: %+v", st)
	}
	if err := s.RemoveBackup(ctx, "ks/0", "b2"); err != nil {
		t.Fatal(err)
	}
	if _, res := collect(t, s, everything); res.Repacked == 0 {
		t.Errorf("collection repacked nothing: %+v", res)
	}
	for name, want := range map[string][]byte{"b1": v1, "b3": v2} {
		if got, err := readBack(t, s, "ks/0", name, "f"); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after a collection: %d bytes, %v", name, len(got), err)
		}
	}
	if r := runCheck(t, s, check.Options{ReadData: true}); !r.OK() {
		t.Fatalf("check after a collection: %+v", r.Problems)
	}

	name := filepath.Join(root, "manifests", "ks%2F0", "b3")
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	os.WriteFile(name, data, 0o644)
	if r := runCheck(t, s, check.Options{}); r.OK() || r.Problems[0].Manifest != "manifests/ks%2F0/b3" {
		t.Fatalf("check of a flipped sealed manifest: %+v", r.Problems)
	}
	rep, err := s.Repair(ctx, false)
	if err != nil || len(rep.Manifests) != 1 || !rep.Manifests[0].FromIndex {
		t.Fatalf("repair: %+v, %v", rep, err)
	}
	if q, err := os.ReadFile(filepath.Join(root, dedup.QuarantinePrefix, "manifests", "ks%2F0", "b3")); err != nil || !bytes.Equal(q, data) {
		t.Errorf("quarantined manifest differs from the damaged one: %v", err)
	}
	if r := runCheck(t, s, check.Options{ReadData: true}); !r.OK() {
		t.Fatalf("check after repair: %+v", r.Problems)
	}
	if got, err := readBack(t, s, "ks/0", "b3", "f"); err != nil || !bytes.Equal(got, v2) {
		t.Fatalf("after repair: %d bytes, %v", len(got), err)
	}
}
