package chunkstore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// Encryption at rest. An encrypted repository has one random master key,
// which key slots (keys.go) wrap, and which is the XChaCha20-Poly1305 key of
// everything sealed:
//
//	blob in a pack:  nonce [24] | ciphertext of the stored bytes | tag [16]; associated data "blob" | chunk ID | codec
//	pack trailer:    nonce [24] | ciphertext of the entries | tag [16];      associated data "trailer" | entry count u32
//	other objects:   nonce [24] | ciphertext of the object | tag [16];       associated data "object" | object name
//	config:          a JSON envelope holding the sealed config;              associated data "config"
//
// Nonces are random: 24 bytes leave no practical bound on how many blobs
// one key seals. The associated data binds every sealed piece to where it
// belongs, so a blob moved under another chunk's ID, or a manifest copied
// under another backup's name, fails to open like a flipped bit does.
// Blob headers (chunk ID, lengths, codec) stay readable, so that a damaged
// pack can be salvaged chunk by chunk; chunk IDs are keyed hashes, which
// say nothing of the contents without the key.

// Encryption kinds of a repository's config.
const (
	EncryptionNone    = "none"
	EncryptionXChaCha = "xchacha20-poly1305"
)

// ErrKeyRequired is returned when an encrypted repository is opened without
// a password or key file.
var ErrKeyRequired = errors.New("the repository is encrypted: a password or key file is needed")

// ErrWrongKey is returned when no key slot of an encrypted repository opens
// with the password or key file given.
var ErrWrongKey = errors.New("wrong password or key file: it opens no key of the repository")

// masterKeySize is the size of a repository's master key.
const masterKeySize = chacha20poly1305.KeySize

// Cipher seals and opens an encrypted repository's blobs and objects. A nil
// *Cipher is that of an unencrypted repository: it seals nothing, and
// opens what it is given as it is. A Cipher is safe for concurrent use.
type Cipher struct {
	aead cipher.AEAD
}

func newCipher(master []byte) (*Cipher, error) {
	aead, err := chacha20poly1305.NewX(master)
	if err != nil {
		return nil, err
	}
	return &Cipher{aead: aead}, nil
}

// NonceSize is how many bytes a sealed piece starts with; 0 for a nil
// Cipher.
func (c *Cipher) NonceSize() int {
	if c == nil {
		return 0
	}
	return c.aead.NonceSize()
}

// Overhead is how many bytes sealing adds to a piece; 0 for a nil Cipher.
func (c *Cipher) Overhead() int {
	if c == nil {
		return 0
	}
	return c.aead.NonceSize() + c.aead.Overhead()
}

// begin returns dst emptied but for room for a nonce, which sealInPlace
// then fills: append the plaintext to it.
func (c *Cipher) begin(dst []byte) []byte {
	return append(dst[:0], make([]byte, c.NonceSize())...)
}

// sealInPlace seals buf[NonceSize():], writing a fresh nonce into
// buf[:NonceSize()] and the ciphertext over the plaintext, and returns the
// sealed piece (buf grows by the tag).
func (c *Cipher) sealInPlace(buf, ad []byte) []byte {
	if c == nil {
		return buf
	}
	n := c.aead.NonceSize()
	if _, err := rand.Read(buf[:n]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return c.aead.Seal(buf[:n], buf[:n], buf[n:], ad)
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
	n := c.aead.NonceSize()
	if len(sealed) < c.Overhead() {
		return nil, fmt.Errorf("sealed data of %d bytes, shorter than its nonce and tag: %w", len(sealed), ErrCorrupt)
	}
	out, err := c.aead.Open(dst, sealed[:n], sealed[n:], ad)
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
	if passes(name) {
		return s.Backend.Put(ctx, name, r)
	}
	sealed, err := s.sealObject(name, r)
	if err != nil {
		return err
	}
	return s.Backend.Put(ctx, name, bytes.NewReader(sealed))
}

func (s sealedBackend) Create(ctx context.Context, name string, r io.Reader) error {
	if passes(name) {
		return s.Backend.Create(ctx, name, r)
	}
	sealed, err := s.sealObject(name, r)
	if err != nil {
		return err
	}
	return s.Backend.Create(ctx, name, bytes.NewReader(sealed))
}

func (s sealedBackend) sealObject(name string, r io.Reader) ([]byte, error) {
	buf := bytes.NewBuffer(s.c.begin(nil))
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return s.c.sealInPlace(buf.Bytes(), objectAD(name)), nil
}

func (s sealedBackend) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if passes(name) || length == 0 {
		return s.Backend.Get(ctx, name, offset, length)
	}
	if offset != 0 || length > 0 {
		return nil, fmt.Errorf("chunkstore: %s is sealed and is read whole, not bytes %d+%d", name, offset, length)
	}
	rc, err := s.Backend.Get(ctx, name, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	sealed, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("chunkstore: read %s: %w", name, err)
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
