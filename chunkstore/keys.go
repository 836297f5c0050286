package chunkstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
)

// KeyPrefix is where an encrypted repository's key slots are stored, one
// object each: keys/<slot id>. Each wraps the repository's master key with
// a key derived from a password (argon2id, with its parameters stored in
// the slot) or from a key file. IMPORTANT: a repository whose every
// password and key file is lost cannot be read by anyone.
const KeyPrefix = "keys/"

// Secret unlocks an encrypted repository: a password, or the contents of a
// key file (at least 32 bytes of which most are random, such as
// NewKeyFile writes). Set one of the two.
type Secret struct {
	Password []byte
	KeyFile  []byte
}

// Password returns the secret of a password read from a file or a
// command's output: p less one final newline (\n or \r\n). An empty
// password is refused.
func Password(p []byte) (Secret, error) {
	p = bytes.TrimSuffix(p, []byte("\n"))
	p = bytes.TrimSuffix(p, []byte("\r"))
	if len(p) == 0 {
		return Secret{}, errors.New("chunkstore: an empty password")
	}
	return Secret{Password: p}, nil
}

// Empty reports whether the secret holds neither.
func (s Secret) Empty() bool { return len(s.Password) == 0 && len(s.KeyFile) == 0 }

// KDFs of key slots.
const (
	KDFArgon2id = "argon2id"
	KDFKeyFile  = "keyfile" // BLAKE3 key derivation of the salt and the file: a key file needs no stretching
)

// Argon2Params are argon2id's parameters, stored with each slot that uses it.
type Argon2Params struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultArgon2 is what new password slots use: RFC 9106's second
// recommended setting with 2 lanes, about 0.12 s and 64 MiB on one core of
// this project's machine.
var DefaultArgon2 = Argon2Params{Time: 3, MemoryKiB: 64 << 10, Threads: 2}

// KeySlot is one key slot. All but Wrapped is public: Keys lists slots
// without a secret.
type KeySlot struct {
	ID      string        `json:"-"`
	Created time.Time     `json:"created"`
	Host    string        `json:"host"`
	KDF     string        `json:"kdf"`
	Argon2  *Argon2Params `json:"argon2,omitempty"`
	Salt    []byte        `json:"salt"`
	// Check tells whether a secret is this slot's without opening Wrapped,
	// so that a damaged Wrapped is reported as damage, not as a wrong key.
	Check   []byte `json:"check"`
	Wrapped []byte `json:"wrapped"` // the master key, sealed with the slot's key
}

// minKeyFile is the least a key file holds.
const minKeyFile = 32

// NewKeyFile returns the contents of a new key file: 64 random hex digits
// and a newline.
func NewKeyFile() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return []byte(hex.EncodeToString(k) + "\n")
}

// slotKey derives a slot's key from secret, and its check value; ok is
// false if the secret is not of the slot's kind.
func (k KeySlot) slotKey(secret Secret) (c *Cipher, check []byte, ok bool, err error) {
	var key []byte
	switch {
	case k.KDF == KDFArgon2id && len(secret.Password) > 0 && k.Argon2 != nil:
		p := k.Argon2
		if p.Time == 0 || p.Time > 100 || p.MemoryKiB < 8 || p.MemoryKiB > 1<<20 || p.Threads == 0 {
			return nil, nil, false, fmt.Errorf("chunkstore: key %s%s: argon2id parameters %+v out of range: %w", KeyPrefix, k.ID, *p, ErrCorrupt)
		}
		key = argon2.IDKey(secret.Password, k.Salt, p.Time, p.MemoryKiB, p.Threads, masterKeySize)
	case k.KDF == KDFKeyFile && len(secret.KeyFile) > 0:
		key = make([]byte, masterKeySize)
		blake3.DeriveKey("dedupstore 2026-12-04 key file slot", append(slices.Clip(k.Salt), secret.KeyFile...), key)
	default:
		return nil, nil, false, nil
	}
	check = make([]byte, 16)
	blake3.DeriveKey("dedupstore 2026-12-04 key slot check", key, check)
	c, err = newCipher(key)
	return c, check, err == nil, err
}

func slotAD(id string) []byte { return []byte("key" + id) }

// newSlot wraps master for secret in a new slot.
func newSlot(master []byte, secret Secret) (KeySlot, error) {
	if len(secret.KeyFile) > 0 && len(secret.KeyFile) < minKeyFile {
		return KeySlot{}, fmt.Errorf("chunkstore: a key file of %d bytes: want at least %d random bytes (dedupctl key add --new-key-file writes one)", len(secret.KeyFile), minKeyFile)
	}
	id := make([]byte, 8)
	rand.Read(id)
	host, _ := os.Hostname()
	k := KeySlot{ID: hex.EncodeToString(id), Created: time.Now().UTC(), Host: host, Salt: make([]byte, 16)}
	rand.Read(k.Salt)
	if len(secret.Password) > 0 {
		k.KDF, k.Argon2 = KDFArgon2id, &DefaultArgon2
	} else {
		k.KDF = KDFKeyFile
	}
	c, check, ok, err := k.slotKey(secret)
	if err != nil || !ok {
		return KeySlot{}, cmpErr(err, errors.New("chunkstore: no password or key file for the new key"))
	}
	k.Check, k.Wrapped = check, c.seal(master, slotAD(k.ID))
	return k, nil
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// writeSlot stores a new slot; it never replaces one.
func writeSlot(ctx context.Context, b Backend, k KeySlot) error {
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	if err := b.Create(ctx, KeyPrefix+k.ID, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("chunkstore: write key %s: %w", k.ID, err)
	}
	return nil
}

// Keys lists the key slots of the repository on b, oldest first. It needs
// no secret. A slot that does not parse gives an error wrapping ErrCorrupt.
func Keys(ctx context.Context, b Backend) ([]KeySlot, error) {
	var names []string
	err := b.List(ctx, KeyPrefix, "", func(o ObjectInfo) error {
		names = append(names, o.Name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var slots []KeySlot
	for _, name := range names {
		data, err := ReadObject(ctx, b, name, 1<<16)
		if errors.Is(err, ErrNotExist) {
			continue // removed meanwhile
		} else if err != nil {
			return nil, err
		}
		k := KeySlot{ID: name[len(KeyPrefix):]}
		if err := json.Unmarshal(data, &k); err != nil {
			return nil, fmt.Errorf("chunkstore: key slot %s does not parse: %w: %w", name, ErrCorrupt, err)
		}
		slots = append(slots, k)
	}
	slices.SortFunc(slots, func(x, y KeySlot) int { return x.Created.Compare(y.Created) })
	return slots, nil
}

// unlock finds the master key that secret unwraps from a slot and that
// opens the config (try decides), trying every slot of the secret's kind.
// A slot another creator left when it lost a race to create the
// repository unwraps a master key that does not open the config, and is
// passed over. It returns ErrWrongKey if the secret is no slot's, and an
// error wrapping ErrCorrupt if it is some slot's but that slot's wrapped
// key does not open (a damaged slot), or none of the keys it unwrapped
// opened the config.
func unlock(ctx context.Context, b Backend, secret Secret, try func(*Cipher) error) (master []byte, slot string, c *Cipher, err error) {
	slots, err := Keys(ctx, b)
	if err != nil {
		return nil, "", nil, err
	}
	var tryErr error
	for _, k := range slots {
		kc, check, ok, err := k.slotKey(secret)
		if err != nil {
			return nil, "", nil, err
		} else if !ok || !bytes.Equal(check, k.Check) {
			continue
		}
		master, err := kc.open(nil, k.Wrapped, slotAD(k.ID))
		if err == nil && len(master) != masterKeySize {
			err = fmt.Errorf("a master key of %d bytes: %w", len(master), ErrCorrupt)
		}
		if err != nil {
			tryErr = fmt.Errorf("chunkstore: key %s%s: %w", KeyPrefix, k.ID, err)
			continue
		}
		c, err := newCipher(master)
		if err != nil {
			return nil, "", nil, err
		}
		if tryErr = try(c); tryErr == nil {
			return master, k.ID, c, nil
		}
	}
	if tryErr != nil {
		return nil, "", nil, tryErr
	}
	return nil, "", nil, ErrWrongKey
}

// AddKey stores a new key slot that secret opens, wrapping s's master key,
// and returns it. It fails for an unencrypted repository.
func (s *Store) AddKey(ctx context.Context, secret Secret) (KeySlot, error) {
	if s.master == nil {
		return KeySlot{}, errors.New("chunkstore: the repository is not encrypted: it has no keys")
	}
	k, err := newSlot(s.master, secret)
	if err != nil {
		return KeySlot{}, err
	}
	return k, writeSlot(ctx, s.backend, k)
}

// ChangeKey replaces the key slot that opened s with a new one that secret
// opens: it stores the new slot, then deletes the old one, so that a crash
// between leaves both, never neither. It returns the new slot and the old
// slot's ID.
func (s *Store) ChangeKey(ctx context.Context, secret Secret) (KeySlot, string, error) {
	k, err := s.AddKey(ctx, secret)
	if err != nil {
		return KeySlot{}, "", err
	}
	old := s.slot
	s.slot = k.ID
	if err := s.backend.Delete(ctx, KeyPrefix+old); err != nil {
		return k, old, fmt.Errorf("chunkstore: added key %s, but could not remove the old key %s: %w", k.ID, old, err)
	}
	return k, old, nil
}

// KeyID is the ID of the slot that opened s; empty for an unencrypted
// repository.
func (s *Store) KeyID() string { return s.slot }

// RemoveKey deletes key slot id. It refuses to delete the slot that opened
// s (add another and open with it first), so that the repository always
// keeps a key someone holds.
func (s *Store) RemoveKey(ctx context.Context, id string) error {
	if id == s.slot {
		return fmt.Errorf("chunkstore: key %s is the one this process opened the repository with: open it with another key to remove this one", id)
	}
	slots, err := Keys(ctx, s.backend)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(slots, func(k KeySlot) bool { return k.ID == id }) {
		return fmt.Errorf("chunkstore: no key %s: %w", id, ErrNotExist)
	}
	return s.backend.Delete(ctx, KeyPrefix+id)
}
