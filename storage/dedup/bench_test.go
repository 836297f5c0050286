package dedup_test

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

var syncPacks = flag.String("sync-packs", "1000", "comma-separated pack counts for BenchmarkSyncNothingNew (issue 13 asks for 10000,100000)")

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

// BenchmarkSyncNothingNew measures what an agent of a shared repository
// pays to bring its index up to date when no other agent wrote anything:
// the listing requests, the objects listed and the reads, per sync, with n
// packs in the repository. Today a sync lists every object (on S3, one
// LIST request per 1000), so the cost grows with the repository.
func BenchmarkSyncNothingNew(b *testing.B) {
	for _, field := range strings.Split(*syncPacks, ",") {
		n, err := strconv.Atoi(field)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("packs=%d", n), func(b *testing.B) {
			objects := filepath.Join(b.TempDir(), "objects")
			cfg, _ := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0)
			store, err := chunkstore.Create(ctx, local.New(objects), cfg)
			if err != nil {
				b.Fatal(err)
			}
			pb := chunkstore.NewPackBuilder(1 << 10)
			for i := range n {
				data := binary.LittleEndian.AppendUint64(nil, uint64(i))
				pb.Add(store.Encode(nil, store.Hash(data), data))
				if _, _, _, err := store.WritePack(ctx, pb); err != nil {
					b.Fatal(err)
				}
				pb.Reset()
			}
			store.Close()
			cb := &counting{Backend: local.New(objects)}
			s := dedup.New(b.TempDir(), dedup.Options{Shared: true, Backend: cb})
			defer s.Close()
			if _, err := s.ListBackups(ctx, "d"); err != nil { // opens: the first sync reads every pack
				b.Fatal(err)
			}
			cb.lists.Store(0)
			cb.listed.Store(0)
			cb.gets.Store(0)
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.ListBackups(ctx, "d"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cb.lists.Load())/float64(b.N), "lists/op")
			b.ReportMetric(float64(cb.listed.Load())/float64(b.N), "objects-listed/op")
			b.ReportMetric(float64(cb.gets.Load())/float64(b.N), "gets/op")
		})
	}
}
