package gc_test

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/gc"
	"github.com/dedupstore/dedupstore/index"
	"github.com/zeebo/blake3"
)

var planChunks = flag.String("plan-chunks", "1000000", "comma-separated chunk counts for BenchmarkPlan")

// BenchmarkPlan marks and sweeps an index of n chunks, 90 % of them live,
// and reports the memory the plan keeps per live chunk and the peak heap.
func BenchmarkPlan(b *testing.B) {
	for _, field := range strings.Split(*planChunks, ",") {
		n, err := strconv.Atoi(field)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("chunks=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			idx, live := buildIndex(b, dir, n)
			defer idx.Close()
			cfg, _ := chunkstore.NewConfig(chunkstore.ChunkerParams{}, chunkstore.Compression{}, 0)
			store, err := chunkstore.Create(context.Background(), local.New(filepath.Join(dir, "objects")), cfg, chunkstore.Secret{})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			// The index stands for the whole repository: nothing to sync.
			c := &gc.Collector{Store: store, Index: idx, Claims: gc.NoClaims{}, Sync: func(context.Context) error { return nil }}
			var retained, peak uint64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				base := ms.HeapAlloc
				done := make(chan uint64)
				go samplePeak(base, done)
				b.StartTimer()
				p, err := c.Plan(context.Background())
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				peak = max(peak, <-done)
				runtime.GC()
				runtime.ReadMemStats(&ms)
				retained = 0 // the setup's garbage, collected now, can outweigh the plan
				if ms.HeapAlloc > base {
					retained = ms.HeapAlloc - base
				}
				if p.Live != live {
					b.Fatalf("plan found %d live chunks, want %d", p.Live, live)
				}
				p.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(retained)/float64(live), "B/live-chunk")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

func samplePeak(base uint64, done chan uint64) {
	var peak uint64
	var ms runtime.MemStats
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case done <- peak:
			return
		case <-t.C:
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > base {
				peak = max(peak, ms.HeapAlloc-base)
			}
		}
	}
}

// buildIndex indexes n chunks in packs of 8192 and puts every one but each
// tenth on a chunk list.
func buildIndex(b *testing.B, dir string, n int) (*index.DB, int) {
	idx, err := index.Open(filepath.Join(dir, "index.db"), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	var (
		list    index.ListID
		entries []chunkstore.PackEntry
		refs    []index.Ref
		seg     uint32
		live    int
	)
	for i := 0; i < n; i++ {
		var buf [8]byte
		binary.LittleEndian.PutUint64(buf[:], uint64(i))
		id := chunkstore.ID(blake3.Sum256(buf[:]))
		entries = append(entries, chunkstore.PackEntry{ID: id, Blob: chunkstore.Blob{Offset: uint32(len(entries)) * 30000, Length: 30000, PlainLength: 65536}})
		if i%10 != 0 {
			refs = append(refs, index.Ref{ID: id, Length: 65536})
			live++
		}
		if len(entries) == 8192 || i == n-1 {
			pack := chunkstore.ID(blake3.Sum256(id[:]))
			if err := idx.AddPack(index.Pack{ID: pack, Size: int64(len(entries)) * 30045, Chunks: len(entries), Created: time.Now()}, entries); err != nil {
				b.Fatal(err)
			}
			entries = entries[:0]
		}
		if len(refs) == index.SegmentRefs || (i == n-1 && len(refs) > 0) {
			if list, err = idx.PutSegment(list, index.Segment{Seq: seg, Refs: refs}); err != nil {
				b.Fatal(err)
			}
			seg++
			refs = refs[:0]
		}
	}
	return idx, live
}
