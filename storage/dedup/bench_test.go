package dedup_test

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

var syncPacks = flag.String("sync-packs", "1000", "comma-separated pack counts for BenchmarkSync (issue 13 asks for 10000,100000)")

// counting counts what a backend is asked for.
type counting struct {
	chunkstore.Backend
	lists, listed, packsListed, gets atomic.Int64
}

func (c *counting) List(ctx context.Context, prefix, after string, fn func(chunkstore.ObjectInfo) error) error {
	c.lists.Add(1)
	return c.Backend.List(ctx, prefix, after, func(o chunkstore.ObjectInfo) error {
		c.listed.Add(1)
		if strings.HasPrefix(o.Name, chunkstore.PackPrefix) {
			c.packsListed.Add(1)
		}
		return fn(o)
	})
}

func (c *counting) reset() {
	c.lists.Store(0)
	c.listed.Store(0)
	c.packsListed.Store(0)
	c.gets.Store(0)
}

func (c *counting) Get(ctx context.Context, name string, off, n int64) (io.ReadCloser, error) {
	c.gets.Add(1)
	return c.Backend.Get(ctx, name, off, n)
}

// BenchmarkSync measures what an agent of a shared repository pays to
// bring its index up to date, with n packs written over the past months:
// the listing calls, the objects listed and the reads per sync, and the
// time. nothing-new: no other agent wrote anything since the last sync.
// cold-open: an agent opens with an empty index cache. added-1GiB: another
// agent added what 1 GiB of new data makes (64 packs of 256 chunks); a
// sync lists again what was added within the hour before the last one.
func BenchmarkSync(b *testing.B) {
	for _, field := range strings.Split(*syncPacks, ",") {
		n, err := strconv.Atoi(field)
		if err != nil {
			b.Fatal(err)
		}
		objects := filepath.Join(b.TempDir(), "objects")
		cfg, _ := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0)
		store, err := chunkstore.Create(ctx, local.New(objects), cfg, chunkstore.Secret{})
		if err != nil {
			b.Fatal(err)
		}
		// Packs of one chunk each, named over the last 90 days.
		start := time.Now().Add(-90 * 24 * time.Hour)
		for i := range n {
			writePack(b, store, objects, start.Add(time.Duration(i)*90*24*time.Hour/time.Duration(n)), uint64(i), 1)
		}
		open := func(b *testing.B, cache string) (*dedup.Storage, *counting) {
			cb := &counting{Backend: local.New(objects)}
			s := dedup.New(cache, dedup.Options{Backend: cb})
			if _, err := s.ListBackups(ctx, "d"); err != nil {
				b.Fatal(err)
			}
			return s, cb
		}
		report := func(b *testing.B, cb *counting) {
			b.ReportMetric(float64(cb.lists.Load())/float64(b.N), "lists/op")
			b.ReportMetric(float64(cb.listed.Load())/float64(b.N), "listed/op")
			b.ReportMetric(float64(cb.gets.Load())/float64(b.N), "gets/op")
		}
		b.Run(fmt.Sprintf("nothing-new/packs=%d", n), func(b *testing.B) {
			s, cb := open(b, b.TempDir())
			defer s.Close()
			cb.reset()
			for b.Loop() {
				if _, err := s.ListBackups(ctx, "d"); err != nil {
					b.Fatal(err)
				}
			}
			report(b, cb)
		})
		b.Run(fmt.Sprintf("cold-open/packs=%d", n), func(b *testing.B) {
			var total counting
			for b.Loop() {
				s, cb := open(b, b.TempDir())
				s.Close()
				total.lists.Add(cb.lists.Load())
				total.listed.Add(cb.listed.Load())
				total.gets.Add(cb.gets.Load())
			}
			report(b, &total)
		})
		b.Run(fmt.Sprintf("added-1GiB/packs=%d", n), func(b *testing.B) {
			s, cb := open(b, b.TempDir())
			defer s.Close()
			cb.reset()
			next := uint64(n)
			for b.Loop() {
				b.StopTimer()
				for range 64 {
					writePack(b, store, objects, time.Now(), next, 256)
					next += 256
				}
				b.StartTimer()
				if _, err := s.ListBackups(ctx, "d"); err != nil {
					b.Fatal(err)
				}
			}
			report(b, cb)
		})
		store.Close()
	}
}

// writePack writes a pack of chunks distinct chunks, numbered from first,
// named at t, straight into the directory (without Put's fsyncs, which
// would make setting up 100,000 packs take minutes).
func writePack(b *testing.B, store *chunkstore.Store, objects string, t time.Time, first uint64, chunks int) {
	pb := chunkstore.NewPackBuilder(chunks * 64)
	for i := range uint64(chunks) {
		data := binary.LittleEndian.AppendUint64(nil, first+i)
		pb.Add(store.Encode(nil, store.Hash(data), data))
	}
	data, _ := pb.Finish(nil)
	id, err := chunkstore.NewPackID(t)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(objects, filepath.FromSlash(chunkstore.PackName(id)))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
}
