package main

import (
	"errors"
	"fmt"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
)

type initOptions struct {
	chunker     string
	minSize     string
	avgSize     string
	maxSize     string
	compression string
	packSize    string
	deltas      bool
	plain       bool // --no-encryption
}

// chunkerKinds maps the CLI's chunker names to the repository's.
var chunkerKinds = map[string]string{"fastcdc": chunkstore.ChunkerFastCDC, "restic": chunkstore.ChunkerRestic}

func (a *app) initCommand() *cobra.Command {
	var o initOptions
	def := chunkstore.DefaultChunkerParams()
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a repository",
		Long: `Create a repository in the --repo directory, which must be missing or empty,
or at an s3: location (creating the bucket if it is missing).
The chunker, its sizes, the compression, the pack size and deltas are fixed
for the repository's life; dedupctl bench chunker and dedupctl bench deltas
help choose them. With deltas, a new chunk that differs from a stored one in
a few bytes (a database page whose rows changed) is stored as a delta
against it, a fraction of its compressed size.

A new repository is encrypted (AES-256-GCM under keys derived from a
random master key) unless --no-encryption says otherwise. Its first key is the password
from --password-file, --password-command or $DEDUP_PASSWORD, asked twice on
a terminal otherwise, or the key file --key-file names (at least 32 random
bytes, such as head -c 32 /dev/urandom writes); dedupctl key adds more.
IMPORTANT: without one of its passwords or key files, nobody can read the
repository again.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error { return a.runInit(cmd, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.chunker, "chunker", "fastcdc", "chunker: fastcdc or restic")
	f.StringVar(&o.minSize, "min-size", humanize.IBytes(uint64(def.MinSize)), "minimum chunk size")
	f.StringVar(&o.avgSize, "avg-size", humanize.IBytes(uint64(def.AvgSize)), "average chunk size (a power of two)")
	f.StringVar(&o.maxSize, "max-size", humanize.IBytes(uint64(def.MaxSize)), "maximum chunk size")
	f.StringVar(&o.compression, "compression", chunkstore.LevelFastest, "zstd level: none, fastest, default, better or best")
	f.StringVar(&o.packSize, "pack-size", humanize.IBytes(chunkstore.DefaultPackSize), "size of pack files")
	f.BoolVar(&o.deltas, "delta", true, "store new chunks similar to stored ones as deltas against them")
	f.BoolVar(&o.plain, "no-encryption", false, "store the repository unencrypted: anyone who can read its files reads the backups")
	return cmd
}

func parseSize(flag, v string) (int, error) {
	n, err := humanize.ParseBytes(v)
	if err != nil || n > 1<<40 {
		return 0, usagef("--%s %q: want a size such as 64KiB", flag, v)
	}
	return int(n), nil
}

func (a *app) runInit(cmd *cobra.Command, o initOptions) error {
	root, backend, err := a.location()
	if err != nil {
		return err
	}
	kind, ok := chunkerKinds[o.chunker]
	if !ok {
		return usagef("--chunker %q: want fastcdc or restic", o.chunker)
	}
	if b, ok := backend.(*s3.Backend); ok {
		if err := b.MakeBucket(cmd.Context()); err != nil {
			return err
		}
	}
	opts := a.options(backend)
	opts.Chunker.Kind = kind
	for _, s := range []struct {
		flag, v string
		dst     *int
	}{{"min-size", o.minSize, &opts.Chunker.MinSize}, {"avg-size", o.avgSize, &opts.Chunker.AvgSize}, {"max-size", o.maxSize, &opts.Chunker.MaxSize}, {"pack-size", o.packSize, &opts.PackSize}} {
		if *s.dst, err = parseSize(s.flag, s.v); err != nil {
			return err
		}
	}
	opts.Compression.Level = o.compression
	opts.NoDeltas = !o.deltas
	if _, err := chunkstore.NewConfig(opts.Chunker, opts.Compression, opts.PackSize); err != nil {
		return usageError{err}
	}
	if !o.plain {
		if opts.Secret, err = a.secret(true); errors.Is(err, errNoSecret) {
			return usagef("a new repository is encrypted, and there is %v; --no-encryption creates an unencrypted one", err)
		} else if err != nil {
			return err
		}
	}
	opts.Logf = func(string, ...any) {} // init says itself whether it encrypts
	cfg, err := dedup.Init(cmd.Context(), root, opts)
	if errors.Is(err, chunkstore.ErrExist) {
		return fmt.Errorf("a repository already exists at %s", a.repo)
	} else if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(initJSON{Repository: a.repo, Chunker: cfg.Chunker.Kind, MinSize: cfg.Chunker.MinSize, AvgSize: cfg.Chunker.AvgSize, MaxSize: cfg.Chunker.MaxSize, Compression: cfg.Compression.Level, PackSize: cfg.PackSize, Deltas: cfg.Deltas, Encryption: cfg.Encryption})
	}
	deltas := "deltas on"
	if !cfg.Deltas {
		deltas = "no deltas"
	}
	encryption := "encrypted (" + cfg.Encryption + ")"
	if cfg.Encryption == chunkstore.EncryptionNone {
		encryption = "UNENCRYPTED (--no-encryption)"
	}
	a.info("created repository %s, %s: chunker %s %s / %s / %s, zstd %s, %s packs, %s", a.repo, encryption, cfg.Chunker.Kind,
		size(int64(cfg.Chunker.MinSize)), size(int64(cfg.Chunker.AvgSize)), size(int64(cfg.Chunker.MaxSize)), cfg.Compression.Level, size(int64(cfg.PackSize)), deltas)
	return nil
}

type initJSON struct {
	Repository  string `json:"repository"`
	Chunker     string `json:"chunker"`
	MinSize     int    `json:"min_size"`
	AvgSize     int    `json:"avg_size"`
	MaxSize     int    `json:"max_size"`
	Compression string `json:"compression"`
	PackSize    int    `json:"pack_size"`
	Deltas      bool   `json:"deltas"`
	Encryption  string `json:"encryption"`
}
