package chunkstore

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/zeebo/blake3"
)

// Encryption at rest. An encrypted repository has one random master key,
// which key slots (keys.go) wrap. Everything sealed is sealed with
// AES-256-GCM under a session key: each Cipher draws a random 16-byte
// session ID when it first seals (and a new one after 2^30 seals), and the
// session key is BLAKE3's key derivation of the master key and that ID.
// Nonces are random, and no session key seals more than 2^30 pieces, far
// inside GCM's bound of 2^32 random nonces per key however long the
// repository lives. Every sealed piece is
//
//	session ID [16] | nonce [12] | ciphertext | tag [16]
//
// with associated data that binds it to where it belongs:
//
//	blob in a pack:  "blob" | chunk ID | codec
//	pack trailer:    "trailer" | entry count u32
//	other objects:   "object" | object name
//	config:          "config" (the sealed config sits in a JSON envelope)
//	key slot:        "key" | slot ID (sealed under the slot's own key)
//
// So a blob moved under another chunk's ID, or a manifest copied under
// another backup's name, fails to open as a flipped bit does. Blob headers
// (chunk ID, lengths, codec) stay readable, so that a damaged pack can be
// salvaged chunk by chunk; chunk IDs are keyed hashes, which say nothing of
// the contents without the key.

// Encryption kinds of a repository's config.
const (
	EncryptionNone   = "none"
	EncryptionAESGCM = "aes-256-gcm"
)

// ErrKeyRequired is returned when an encrypted repository is opened without
// a password or key file.
var ErrKeyRequired = errors.New("the repository is encrypted: a password or key file is needed")

// ErrWrongKey is returned when no key slot of an encrypted repository opens
// with the password or key file given.
var ErrWrongKey = errors.New("wrong password or key file: it opens no key of the repository")

// masterKeySize is the size of a repository's master key.
const masterKeySize = 32

const (
	sessionIDSize = 16
	gcmNonceSize  = 12
	gcmTagSize    = 16
	sealPrefix    = sessionIDSize + gcmNonceSize
	// sessionSeals is how many pieces one session key seals.
	sessionSeals = 1 << 30
)

// Cipher seals and opens an encrypted repository's blobs and objects. A nil
// *Cipher is that of an unencrypted repository: it seals nothing, and
// opens what it is given as it is. A Cipher is safe for concurrent use.
type Cipher struct {
	master []byte
	mu     sync.Mutex
	id     [sessionIDSize]byte // the session sealing now
	aead   cipher.AEAD         // nil until the first seal
	seals  int
	keys   sync.Map // session ID → cipher.AEAD, for opening
}

func newCipher(master []byte) (*Cipher, error) {
	if len(master) != masterKeySize {
		return nil, fmt.Errorf("chunkstore: a key of %d bytes, want %d", len(master), masterKeySize)
	}
	return &Cipher{master: master}, nil
}

// sessionKey returns the AES-256-GCM of session id.
func (c *Cipher) sessionKey(id [sessionIDSize]byte) cipher.AEAD {
	if a, ok := c.keys.Load(id); ok {
		return a.(cipher.AEAD)
	}
	key := make([]byte, 32)
	blake3.DeriveKey("dedupstore 2026-12-04 aes-256-gcm session key", append(slices.Clip(c.master), id[:]...), key)
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // unreachable: the key has 32 bytes
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		panic(err) // unreachable: standard nonce and tag sizes
	}
	c.keys.Store(id, a)
	return a
}

// session returns the session to seal the next piece with.
func (c *Cipher) session() ([sessionIDSize]byte, cipher.AEAD) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aead == nil || c.seals >= sessionSeals {
		rand.Read(c.id[:])
		c.aead, c.seals = c.sessionKey(c.id), 0
	}
	c.seals++
	return c.id, c.aead
}

// Overhead is how many bytes sealing adds to a piece; 0 for a nil Cipher.
func (c *Cipher) Overhead() int {
	if c == nil {
		return 0
	}
	return sealPrefix + gcmTagSize
}

// begin returns dst emptied but for room for the session ID and nonce,
// which sealInPlace then fills: append the plaintext to it.
func (c *Cipher) begin(dst []byte) []byte {
	if c == nil {
		return dst[:0]
	}
	return append(dst[:0], make([]byte, sealPrefix)...)
}

// sealInPlace seals buf[sealPrefix:], which begin started, writing the
// session ID and a fresh nonce before it and the ciphertext over it, and
// returns the sealed piece (buf grows by the tag).
func (c *Cipher) sealInPlace(buf, ad []byte) []byte {
	if c == nil {
		return buf
	}
	id, aead := c.session()
	copy(buf, id[:])
	nonce := buf[sessionIDSize:sealPrefix]
	rand.Read(nonce)
	return aead.Seal(buf[:sealPrefix], nonce, buf[sealPrefix:], ad)
}

// seal returns plain sealed, in a new buffer.
func (c *Cipher) seal(plain, ad []byte) []byte {
	return c.sealInPlace(append(c.begin(make([]byte, 0, c.Overhead()+len(plain))), plain...), ad)
}

// open appends the plaintext of a sealed piece to dst. A piece that does
// not open (damaged, forged, or moved from where its associated data
// binds it) gives an error wrapping ErrCorrupt.
func (c *Cipher) open(dst, sealed, ad []byte) ([]byte, error) {
	if c == nil {
		return append(dst, sealed...), nil
	}
	if len(sealed) < c.Overhead() {
		return nil, fmt.Errorf("sealed data of %d bytes, shorter than its header and tag: %w", len(sealed), ErrCorrupt)
	}
	aead := c.sessionKey([sessionIDSize]byte(sealed[:sessionIDSize]))
	out, err := aead.Open(dst, sealed[sessionIDSize:sealPrefix], sealed[sealPrefix:], ad)
	if err != nil {
		return nil, fmt.Errorf("decryption failed (damaged or tampered with): %w", ErrCorrupt)
	}
	return out, nil
}

// blobAD is the associated data of a blob: it binds the stored bytes to
// the chunk and codec their header names.
func blobAD(id ID, c Codec) []byte {
	return append(append([]byte("blob"), id[:]...), byte(c))
}

// sealedBackend seals and opens the objects of an encrypted repository as
// they pass: every object but packs (whose blobs and trailer the Store
// seals, so that ranged reads work), the config (sealed in its envelope)
// and key slots (wrapped by their own keys). A sealed object is read whole:
// Get takes offset 0 and length -1, or length 0 to ask whether it exists.
// A sealed object that does not open is returned by Get as a reader whose
// reads fail with an error wrapping ErrCorrupt.
type sealedBackend struct {
	Backend
	c *Cipher
}

// passes reports whether object name is stored as it is.
func passes(name string) bool {
	return strings.HasPrefix(name, PackPrefix) || name == ConfigName || strings.HasPrefix(name, KeyPrefix)
}

func objectAD(name string) []byte { return []byte("object" + name) }

func (s sealedBackend) Put(ctx context.Context, name string, r io.Reader) error {
	sealed, err := s.seal(name, r)
	if err != nil {
		return err
	}
	return s.Backend.Put(ctx, name, sealed)
}

func (s sealedBackend) Create(ctx context.Context, name string, r io.Reader) error {
	sealed, err := s.seal(name, r)
	if err != nil {
		return err
	}
	return s.Backend.Create(ctx, name, sealed)
}

// seal returns what to store for object name: r sealed, or r itself if
// the object passes as it is.
func (s sealedBackend) seal(name string, r io.Reader) (io.Reader, error) {
	if passes(name) {
		return r, nil
	}
	buf := bytes.NewBuffer(s.c.begin(nil))
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return bytes.NewReader(s.c.sealInPlace(buf.Bytes(), objectAD(name))), nil
}

func (s sealedBackend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if passes(name) || length == 0 {
		return s.Backend.Get(ctx, name, offset, length)
	}
	if offset != 0 || length > 0 {
		return nil, fmt.Errorf("chunkstore: %s is sealed and is read whole, not bytes %d+%d", name, offset, length)
	}
	sealed, err := ReadObject(ctx, s.Backend, name, 0)
	if err != nil {
		return nil, err
	}
	plain, err := s.c.open(nil, sealed, objectAD(name))
	if err != nil {
		// The object is there: reading it fails, as reading damaged bytes
		// of an unencrypted object would fail to decode.
		return io.NopCloser(failedReader{fmt.Errorf("chunkstore: object %s: %w", name, err)}), nil
	}
	return io.NopCloser(bytes.NewReader(plain)), nil
}

// failedReader fails every read with its error.
type failedReader struct{ err error }

func (f failedReader) Read([]byte) (int, error) { return 0, f.err }
