package chunkstore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/restic/chunker"
)

// FormatVersion is the repository format this build writes and reads.
// Version 3 named packs by the time they were written (see NewPackID);
// version 4 adds deltas: pack entries with bases or features; version 5
// keeps 4 features per chunk, not 16, in a slot of 64 bytes, not 128;
// version 6 adds encryption (crypt.go) and key slots.
const FormatVersion = 6

// ConfigName is the object name of the repository config.
const ConfigName = "config"

// maxConfigSize bounds how much of a config object is read.
const maxConfigSize = 1 << 20

// Config is the repository's fixed settings, written once at creation. Every
// field decides how bytes are named and cut, so none may change afterwards.
type Config struct {
	Version int `json:"version"`
	// Encryption is EncryptionNone or EncryptionAESGCM. An encrypted
	// repository's config object holds only the version and this, in
	// plain; the rest, keys included, is sealed.
	Encryption string `json:"encryption"`
	// Key is the 32-byte BLAKE3 key for chunk IDs; a repository's IDs say
	// nothing about content to anyone without it.
	Key         []byte        `json:"key"`
	Chunker     ChunkerParams `json:"chunker"`
	Compression Compression   `json:"compression"`
	// PackSize is the size at which a pack is sealed and written.
	PackSize int `json:"pack_size"`
	// Deltas: chunks stored whole carry their features, and new chunks
	// similar to stored ones may be stored as deltas against them.
	Deltas bool `json:"deltas"`
}

// DefaultPackSize is the pack size of a new repository: 16 MiB.
const DefaultPackSize = 16 << 20

// NewConfig returns the config of an unencrypted new repository (set
// Encryption to encrypt it: Create then keys its chunker): a fresh random
// key and the given settings, each zero field replaced by its default (FastCDC with
// 16 KiB / 64 KiB / 256 KiB, zstd at its fastest level, 16 MiB packs).
func NewConfig(params ChunkerParams, comp Compression, packSize int) (Config, error) {
	cfg := Config{Version: FormatVersion, Encryption: EncryptionNone, Key: make([]byte, 32), Chunker: params, Compression: comp, PackSize: packSize}
	if _, err := rand.Read(cfg.Key); err != nil {
		return Config{}, err
	}
	if cfg.Chunker.Kind == "" {
		cfg.Chunker = DefaultChunkerParams()
	}
	if cfg.Chunker.Kind == ChunkerRestic && cfg.Chunker.Polynomial == 0 {
		pol, err := chunker.RandomPolynomial()
		if err != nil {
			return Config{}, err
		}
		cfg.Chunker.Polynomial = uint64(pol)
	}
	if cfg.Compression.Level == "" {
		cfg.Compression.Level = LevelFastest
	}
	if cfg.PackSize == 0 {
		cfg.PackSize = DefaultPackSize
	}
	return cfg, cfg.Validate()
}

// Validate reports the first setting that this build cannot use.
func (c Config) Validate() error {
	if c.Version == 0 {
		return fmt.Errorf("chunkstore: config has no format version: %w", ErrCorrupt)
	}
	if c.Version != FormatVersion {
		return fmt.Errorf("chunkstore: repository format version %d, this build reads only %d (formats before v0.1.0 are not migrated: restore with the build that wrote it, or start a new repository): %w", c.Version, FormatVersion, ErrUnsupportedVersion)
	}
	if c.Encryption != EncryptionNone && c.Encryption != EncryptionAESGCM {
		return fmt.Errorf("chunkstore: unknown encryption %q (want %q or %q)", c.Encryption, EncryptionNone, EncryptionAESGCM)
	}
	if len(c.Key) != 32 {
		return fmt.Errorf("chunkstore: config key has %d bytes, want 32: %w", len(c.Key), ErrCorrupt)
	}
	if err := c.Chunker.Validate(); err != nil {
		return err
	}
	if _, err := c.Compression.encoderLevel(); err != nil {
		return err
	}
	if c.PackSize < 1<<10 || c.PackSize > 1<<30 {
		return fmt.Errorf("chunkstore: pack size %d outside 1 KiB..1 GiB", c.PackSize)
	}
	return nil
}

// configEnvelope is the plain part of a config object: all of it for an
// unencrypted repository, and for an encrypted one the version, the
// encryption and the sealed config.
type configEnvelope struct {
	Version    int    `json:"version"`
	Encryption string `json:"encryption"`
	Sealed     []byte `json:"sealed,omitempty"`
}

var configAD = []byte("config")

// marshalConfig returns cfg's config object, sealed with c if it is
// encrypted.
func marshalConfig(cfg Config, c *Cipher) ([]byte, error) {
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil || cfg.Encryption == EncryptionNone {
		return data, err
	}
	return json.MarshalIndent(configEnvelope{Version: cfg.Version, Encryption: cfg.Encryption, Sealed: c.seal(data, configAD)}, "", "  ")
}

// unlocked is a repository's config and, if it is encrypted, its key.
type unlocked struct {
	cfg    Config
	cipher *Cipher // nil: unencrypted
	master []byte
	slot   string // the key slot that secret opened
}

// ReadConfig loads and validates the repository's config object, unlocking
// it with secret if the repository is encrypted. A missing config gives an
// error wrapping ErrNotExist; one that does not parse or open, ErrCorrupt;
// an unknown version, ErrUnsupportedVersion; an encrypted one without a
// secret, ErrKeyRequired, and with a secret that opens no key slot,
// ErrWrongKey. An unencrypted repository ignores secret.
func ReadConfig(ctx context.Context, b Backend, secret Secret) (Config, error) {
	u, err := readConfig(ctx, b, secret)
	return u.cfg, err
}

func readConfig(ctx context.Context, b Backend, secret Secret) (unlocked, error) {
	data, err := ReadObject(ctx, b, ConfigName, maxConfigSize)
	if err != nil {
		return unlocked{}, err
	}
	var env configEnvelope
	if err := json.Unmarshal(data, &env); err != nil {
		return unlocked{}, fmt.Errorf("chunkstore: config does not parse: %w: %w", ErrCorrupt, err)
	}
	if env.Version != FormatVersion && env.Version != 0 {
		return unlocked{}, (Config{Version: env.Version}).Validate()
	}
	if env.Encryption == EncryptionNone {
		cfg, err := ParseConfig(data)
		return unlocked{cfg: cfg}, err
	}
	if env.Encryption != EncryptionAESGCM {
		return unlocked{}, fmt.Errorf("chunkstore: config: unknown encryption %q: %w", env.Encryption, ErrCorrupt)
	}
	if secret.Empty() {
		return unlocked{}, ErrKeyRequired
	}
	var cfg Config
	master, slot, c, err := unlock(ctx, b, secret, func(c *Cipher) error {
		plain, err := c.open(nil, env.Sealed, configAD)
		if err != nil {
			return fmt.Errorf("chunkstore: config: %w", err)
		}
		if cfg, err = ParseConfig(plain); err == nil && (cfg.Version != env.Version || cfg.Encryption != env.Encryption) {
			err = fmt.Errorf("chunkstore: config: its sealed version and encryption differ from its plain ones: %w", ErrCorrupt)
		}
		return err
	})
	if err != nil {
		return unlocked{}, err
	}
	return unlocked{cfg: cfg, cipher: c, master: master, slot: slot}, nil
}

// ParseConfig decodes and validates a plain config's JSON.
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("chunkstore: config does not parse: %w: %w", ErrCorrupt, err)
	}
	if err := cfg.Validate(); err != nil {
		if errors.Is(err, ErrUnsupportedVersion) {
			return Config{}, err
		}
		return Config{}, fmt.Errorf("chunkstore: invalid config: %w: %w", ErrCorrupt, err)
	}
	return cfg, nil
}
