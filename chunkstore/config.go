package chunkstore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/restic/chunker"
)

// FormatVersion is the repository format this build writes and reads.
// Version 3 named packs by the time they were written (see NewPackID);
// version 4 adds deltas: pack entries with bases or features; version 5
// keeps 4 features per chunk, not 16, in a slot of 64 bytes, not 128.
const FormatVersion = 5

// ConfigName is the object name of the repository config.
const ConfigName = "config"

// maxConfigSize bounds how much of a config object is read.
const maxConfigSize = 1 << 20

// Config is the repository's fixed settings, written once at creation. Every
// field decides how bytes are named and cut, so none may change afterwards.
type Config struct {
	Version int `json:"version"`
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

// NewConfig returns the config of a new repository: a fresh random key and
// the given settings, each zero field replaced by its default (FastCDC with
// 16 KiB / 64 KiB / 256 KiB, zstd at its fastest level, 16 MiB packs).
func NewConfig(params ChunkerParams, comp Compression, packSize int) (Config, error) {
	cfg := Config{Version: FormatVersion, Key: make([]byte, 32), Chunker: params, Compression: comp, PackSize: packSize}
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

// ReadConfig loads and validates the repository's config object. A missing
// config gives an error wrapping ErrNotExist; one that does not parse,
// ErrCorrupt; an unknown version, ErrUnsupportedVersion.
func ReadConfig(ctx context.Context, b Backend) (Config, error) {
	rc, err := b.Get(ctx, ConfigName, 0, -1)
	if err != nil {
		return Config{}, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("chunkstore: read config: %w", err)
	}
	return ParseConfig(data)
}

// ParseConfig decodes and validates a config object's bytes.
func ParseConfig(data []byte) (Config, error) {
	if len(data) > maxConfigSize {
		return Config{}, fmt.Errorf("chunkstore: config larger than %d bytes: %w", maxConfigSize, ErrCorrupt)
	}
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
