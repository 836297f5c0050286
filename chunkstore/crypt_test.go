package chunkstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/internal/dataset"
)

var password = chunkstore.Secret{Password: []byte("correct horse")}

// newEncryptedStore creates an encrypted repository in a new directory.
func newEncryptedStore(t *testing.T, secret chunkstore.Secret) (*chunkstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Encryption = chunkstore.EncryptionAESGCM
	s, err := chunkstore.Create(context.Background(), local.New(dir), cfg, secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, dir
}

// readRaw reads an object's file as stored.
func readRaw(t *testing.T, dir, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeRaw(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(name)), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// An encrypted repository's chunks, trailers and objects read back
// exactly, with the password and only with it; and none of what was
// stored, nor its compressed form, can be found in any file.
func TestEncryptedRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, dir := newEncryptedStore(t, password)
	marker := []byte("SECRET-ROW-0123456789 ")
	text := bytes.Repeat(marker, 3000) // compresses: its zstd form holds the marker once
	pages := dataset.Pages(1, 4)
	packID, entries := writePack(t, s, text, pages)
	if err := s.Backend().Put(ctx, "manifests/db/b1", bytes.NewReader(marker)); err != nil {
		t.Fatal(err)
	}

	s2, err := chunkstore.Open(ctx, local.New(dir), password)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if !bytes.Equal(s2.Config().Key, s.Config().Key) || s2.Config().Encryption != chunkstore.EncryptionAESGCM || len(s2.Config().Chunker.Key) != 32 {
		t.Fatalf("reopened config %+v", s2.Config())
	}
	for i, want := range [][]byte{text, pages} {
		got, err := s2.LoadChunk(ctx, entries[i].ID, chunkstore.Location{Pack: packID, Blob: entries[i].Blob}, nil, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %d: %d bytes, %v", i, len(got), err)
		}
	}
	trailer, err := chunkstore.ReadPackTrailer(ctx, s2.Backend(), chunkstore.PackName(packID), packSize(t, dir, packID), s2.Cipher())
	if err != nil || !slices.EqualFunc(trailer, entries, func(a, b chunkstore.PackEntry) bool { return a.ID == b.ID && a.Blob == b.Blob }) {
		t.Fatalf("trailer %+v, %v; want %+v", trailer, err, entries)
	}
	if got := readObject(t, s2.Backend(), "manifests/db/b1"); !bytes.Equal(got, marker) {
		t.Fatalf("object read back as %q", got)
	}

	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if bytes.Contains(data, marker[:12]) || bytes.Contains(data, pages[100:132]) {
			t.Errorf("%s holds stored bytes in plain", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chunkstore.Open(ctx, local.New(dir), chunkstore.Secret{}); !errors.Is(err, chunkstore.ErrKeyRequired) {
		t.Errorf("opened without a password: %v, want ErrKeyRequired", err)
	}
	wrong := chunkstore.Secret{Password: []byte("wrong")}
	if _, err := chunkstore.Open(ctx, local.New(dir), wrong); !errors.Is(err, chunkstore.ErrWrongKey) || errors.Is(err, chunkstore.ErrCorrupt) {
		t.Errorf("opened with a wrong password: %v, want ErrWrongKey and not ErrCorrupt", err)
	}
	if _, err := chunkstore.Open(ctx, local.New(dir), chunkstore.Secret{KeyFile: bytes.Repeat([]byte("k"), 32)}); !errors.Is(err, chunkstore.ErrWrongKey) {
		t.Errorf("opened with a key file no slot has: %v, want ErrWrongKey", err)
	}
}

func packSize(t *testing.T, dir string, id chunkstore.ID) int64 {
	return int64(len(readRaw(t, dir, chunkstore.PackName(id))))
}

func readObject(t *testing.T, b chunkstore.Backend, name string) []byte {
	t.Helper()
	data, err := chunkstore.ReadObject(context.Background(), b, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A flipped bit anywhere in an encrypted repository's blobs, trailers,
// objects or config is found, as ErrCorrupt (never as a wrong key), and so
// is a sealed piece moved to where it does not belong; nothing wrong is
// ever returned.
func TestEncryptedTamper(t *testing.T) {
	ctx := context.Background()
	s, dir := newEncryptedStore(t, password)
	a, b := dataset.Pages(1, 4), dataset.Pages(2, 4)
	packID, entries := writePack(t, s, a, b)
	pack := chunkstore.PackName(packID)
	if err := s.Backend().Put(ctx, "manifests/db/b1", bytes.NewReader([]byte("files of b1"))); err != nil {
		t.Fatal(err)
	}
	if err := s.Backend().Put(ctx, "manifests/db/b2", bytes.NewReader([]byte("files of b2"))); err != nil {
		t.Fatal(err)
	}
	at := func(i int) chunkstore.Location { return chunkstore.Location{Pack: packID, Blob: entries[i].Blob} }
	orig := readRaw(t, dir, pack)
	size := int64(len(orig))

	// Every byte of a blob's sealed bytes.
	for off := at(0).Offset; off < at(0).Offset+at(0).Length; off += 97 {
		damaged := slices.Clone(orig)
		damaged[off] ^= 1
		writeRaw(t, dir, pack, damaged)
		if _, err := s.LoadChunk(ctx, entries[0].ID, at(0), nil, nil); !errors.Is(err, chunkstore.ErrCorrupt) {
			t.Fatalf("blob byte %d flipped: %v, want ErrCorrupt", off, err)
		}
	}
	writeRaw(t, dir, pack, orig)
	// A blob read as another chunk's: the associated data binds it.
	if _, err := s.LoadChunk(ctx, entries[0].ID, at(1), nil, nil); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Errorf("chunk 0 read from chunk 1's blob: %v, want ErrCorrupt", err)
	}
	// The sealed trailer, with its checksum made to match again: only the
	// seal can tell.
	trailerLen, err := chunkstore.ParsePackFooter(orig[size-16:], size, s.Cipher())
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{size - 16 - trailerLen, size - 16 - trailerLen + 30, size - 16 - 1} {
		damaged := slices.Clone(orig)
		damaged[off] ^= 1
		binary.LittleEndian.PutUint32(damaged[size-16:], crc32c(damaged[size-16-trailerLen:size-16]))
		if _, err := chunkstore.ParsePackTrailer(damaged[size-16-trailerLen:], size, s.Cipher()); !errors.Is(err, chunkstore.ErrCorrupt) {
			t.Errorf("trailer byte %d flipped: %v, want ErrCorrupt", off, err)
		}
	}
	// A sealed object, flipped or copied under another name.
	m1 := readRaw(t, dir, "manifests/db/b1")
	for _, off := range []int{0, len(m1) / 2, len(m1) - 1} {
		damaged := slices.Clone(m1)
		damaged[off] ^= 0x80
		writeRaw(t, dir, "manifests/db/b1", damaged)
		if _, err := chunkstore.ReadObject(ctx, s.Backend(), "manifests/db/b1", 0); !errors.Is(err, chunkstore.ErrCorrupt) {
			t.Errorf("object byte %d flipped: %v, want ErrCorrupt", off, err)
		}
	}
	writeRaw(t, dir, "manifests/db/b2", m1)
	if _, err := chunkstore.ReadObject(ctx, s.Backend(), "manifests/db/b2", 0); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Errorf("b1's manifest copied over b2's: %v, want ErrCorrupt", err)
	}
	// The wrapped key of the only key slot: damage, not a wrong password.
	slotName := chunkstore.KeyPrefix + s.KeyID()
	slot := readRaw(t, dir, slotName)
	writeRaw(t, dir, slotName, flipBase64(t, slot, "wrapped"))
	if _, err := chunkstore.Open(ctx, local.New(dir), password); !errors.Is(err, chunkstore.ErrCorrupt) || !strings.Contains(err.Error(), slotName) {
		t.Errorf("wrapped key flipped: %v, want ErrCorrupt naming %s", err, slotName)
	}
	writeRaw(t, dir, slotName, slot)
	// The sealed config.
	cfg := readRaw(t, dir, chunkstore.ConfigName)
	writeRaw(t, dir, chunkstore.ConfigName, flipBase64(t, cfg, "sealed"))
	if _, err := chunkstore.Open(ctx, local.New(dir), password); !errors.Is(err, chunkstore.ErrCorrupt) || errors.Is(err, chunkstore.ErrWrongKey) {
		t.Errorf("sealed config flipped: %v, want ErrCorrupt", err)
	}
}

// Keys: a second password and a key file open the repository too; a
// changed password replaces the old one; the key used cannot be removed;
// and the key slot a creator that lost the race to create the repository
// left is passed over.
func TestKeys(t *testing.T) {
	ctx := context.Background()
	s, dir := newEncryptedStore(t, password)
	open := func(secret chunkstore.Secret) (*chunkstore.Store, error) {
		s, err := chunkstore.Open(ctx, local.New(dir), secret)
		if err == nil {
			t.Cleanup(s.Close)
		}
		return s, err
	}
	second := chunkstore.Secret{Password: []byte("second")}
	keyFile := chunkstore.Secret{KeyFile: chunkstore.NewKeyFile()}
	if _, err := s.AddKey(ctx, second); err != nil {
		t.Fatal(err)
	}
	kf, err := s.AddKey(ctx, keyFile)
	if err != nil || kf.KDF != chunkstore.KDFKeyFile {
		t.Fatalf("key file slot %+v, %v", kf, err)
	}
	if _, err := s.AddKey(ctx, chunkstore.Secret{KeyFile: []byte("short")}); err == nil {
		t.Error("a key file of 5 bytes was added")
	}
	for _, secret := range []chunkstore.Secret{password, second, keyFile} {
		s2, err := open(secret)
		if err != nil || !bytes.Equal(s2.Config().Key, s.Config().Key) {
			t.Fatalf("open with %+v: %v", secret, err)
		}
	}
	if err := s.RemoveKey(ctx, s.KeyID()); err == nil {
		t.Error("the key in use was removed")
	}
	s2, _ := open(second)
	changed := chunkstore.Secret{Password: []byte("changed")}
	k, old, err := s2.ChangeKey(ctx, changed)
	if err != nil || old == k.ID || s2.KeyID() != k.ID {
		t.Fatalf("ChangeKey: %+v, %s, %v", k, old, err)
	}
	if _, err := open(second); !errors.Is(err, chunkstore.ErrWrongKey) {
		t.Errorf("the changed password still opens: %v", err)
	}
	if _, err := open(changed); err != nil {
		t.Errorf("the new password: %v", err)
	}
	if err := s.RemoveKey(ctx, kf.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := open(keyFile); !errors.Is(err, chunkstore.ErrWrongKey) {
		t.Errorf("a removed key file opens: %v", err)
	}
	keys, err := chunkstore.Keys(ctx, local.New(dir))
	if err != nil || len(keys) != 2 {
		t.Fatalf("Keys: %+v, %v", keys, err)
	}

	// A creator that lost the race left a slot wrapping its own master
	// key, under the same password.
	loser, loserDir := newEncryptedStore(t, password)
	for _, k := range must(chunkstore.Keys(ctx, local.New(loserDir))) {
		if k.ID != loser.KeyID() {
			continue
		}
		data, _ := json.Marshal(k)
		writeRaw(t, dir, chunkstore.KeyPrefix+"0000000000000000", data) // sorts first by ID; listed in any order
	}
	if s3, err := open(password); err != nil || !bytes.Equal(s3.Config().Key, s.Config().Key) {
		t.Errorf("open beside a stale slot: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// The chunker of an encrypted repository is keyed: its cut points are its
// own, and not those of an unencrypted repository or another key.
func TestEncryptedChunkerIsKeyed(t *testing.T) {
	data := dataset.Random(7, 4<<20)
	cuts := func(s *chunkstore.Store) []int {
		c, err := s.NewChunker(bytes.NewReader(data), make([]byte, s.Config().Chunker.BufferSize()))
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for {
			chunk, err := c.Next()
			if err == io.EOF {
				return out
			} else if err != nil {
				t.Fatal(err)
			}
			out = append(out, len(chunk))
		}
	}
	plain, _ := newStore(t)
	e1, _ := newEncryptedStore(t, password)
	e2, _ := newEncryptedStore(t, password)
	p, c1, c2 := cuts(plain), cuts(e1), cuts(e2)
	if slices.Equal(p, c1) || slices.Equal(c1, c2) || len(c1) < 20 {
		t.Errorf("cut points: plain %d chunks, encrypted %d and %d, some equal", len(p), len(c1), len(c2))
	}
	if again := cuts(e1); !slices.Equal(again, c1) {
		t.Error("a keyed chunker cut the same data differently twice")
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// flipBase64 changes one letter in the middle of the base64 field of a
// JSON object.
func flipBase64(t *testing.T, object []byte, field string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(object, &m); err != nil {
		t.Fatal(err)
	}
	b := []byte(m[field].(string))
	if b[len(b)/2] == 'A' {
		b[len(b)/2] = 'B'
	} else {
		b[len(b)/2] = 'A'
	}
	m[field] = string(b)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
