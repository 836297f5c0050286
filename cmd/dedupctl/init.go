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
against it, a fraction of its compressed size.`,
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
	if err := dedup.Init(cmd.Context(), root, opts); errors.Is(err, chunkstore.ErrExist) {
		return fmt.Errorf("a repository already exists at %s", a.repo)
	} else if err != nil {
		return err
	}
	cfg, err := chunkstore.ReadConfig(cmd.Context(), backend)
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(initJSON{Repository: a.repo, Chunker: cfg.Chunker.Kind, MinSize: cfg.Chunker.MinSize, AvgSize: cfg.Chunker.AvgSize, MaxSize: cfg.Chunker.MaxSize, Compression: cfg.Compression.Level, PackSize: cfg.PackSize, Deltas: cfg.Deltas})
	}
	deltas := "deltas on"
	if !cfg.Deltas {
		deltas = "no deltas"
	}
	a.info("created repository %s: chunker %s %s / %s / %s, zstd %s, %s packs, %s", a.repo, cfg.Chunker.Kind,
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
}
