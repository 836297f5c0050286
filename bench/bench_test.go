package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/storage/file"
)

var ctx = context.Background()

const streamSize = 128 << 20

var inputs = map[string]func() []byte{
	"random": func() []byte { return dataset.Random(1, streamSize) },
	"pages":  func() []byte { return dataset.Pages(1, streamSize/dataset.PageSize) },
}

var storages = []struct {
	name string
	open func(root string) storage.BackupStorage
}{
	{"dedup", func(root string) storage.BackupStorage { return dedup.New(root, dedup.Options{}) }},
	// Encrypted, with a key file: what sealing and opening cost, without
	// a password's key derivation (a fixed cost per open, about 0.2 s).
	{"dedup-encrypted", func(root string) storage.BackupStorage {
		return dedup.New(root, dedup.Options{Secret: benchKeyFile})
	}},
	{"file", func(root string) storage.BackupStorage { return file.New(root) }},
}

var benchKeyFile = chunkstore.Secret{KeyFile: chunkstore.NewKeyFile()}

var (
	dataMu sync.Mutex
	data   = map[string][]byte{}
)

func input(kind string) []byte {
	dataMu.Lock()
	defer dataMu.Unlock()
	if data[kind] == nil {
		data[kind] = inputs[kind]()
	}
	return data[kind]
}

func writeBackup(b *testing.B, s storage.BackupStorage, name string, files ...io.Reader) {
	bh, err := s.StartBackup(ctx, "bench/0", name)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, r := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := bh.AddFile(ctx, fmt.Sprintf("f%d", i))
			if err == nil {
				_, err = io.CopyBuffer(w, r, make([]byte, 1<<20))
			}
			if err == nil {
				err = w.Close()
			}
			if err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := bh.EndBackup(ctx); err != nil {
		b.Fatal(err)
	}
}

func readBackup(b *testing.B, s storage.BackupStorage, name string) int64 {
	bhs, err := s.ListBackups(ctx, "bench/0")
	if err != nil {
		b.Fatal(err)
	}
	for _, bh := range bhs {
		if bh.Name() == name {
			rc, err := bh.ReadFile(ctx, "f0")
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(io.Discard, rc, make([]byte, 1<<20))
			rc.Close()
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("backup %s not listed", name)
	return 0
}

type bytesReader struct {
	b []byte
}

func (r *bytesReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// BenchmarkIngest: a first backup of new data, into an empty repository.
func BenchmarkIngest(b *testing.B) {
	for _, kind := range []string{"random", "pages"} {
		for _, st := range storages {
			b.Run("data="+kind+"/store="+st.name, func(b *testing.B) {
				d := input(kind)
				b.SetBytes(int64(len(d)))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					s := st.open(filepath.Join(b.TempDir(), "repo"))
					b.StartTimer()
					writeBackup(b, s, "b", &bytesReader{d})
					b.StopTimer()
					s.Close()
					b.StartTimer()
				}
			})
		}
		b.Run("data="+kind+"/store="+zstdStore, func(b *testing.B) { zstdBaseline(b, kind, false) })
	}
}

// BenchmarkReingest: a second backup of data the repository already holds.
func BenchmarkReingest(b *testing.B) {
	for _, st := range storages {
		b.Run("data=pages/store="+st.name, func(b *testing.B) {
			d := input("pages")
			s := holding(b, st.open, "first", d)
			for i := 0; i < b.N; i++ {
				writeBackup(b, s, fmt.Sprintf("again-%d", i), &bytesReader{d})
			}
		})
	}
	// A compressor stores again what it stored before: its repeated
	// ingest is its first.
	b.Run("data=pages/store="+zstdStore, func(b *testing.B) { zstdBaseline(b, "pages", false) })
}

// holding opens a storage on a new repository that holds d as backup
// name, then starts timing, with d's length as the bytes of one op.
func holding(b *testing.B, open func(root string) storage.BackupStorage, name string, d []byte) storage.BackupStorage {
	s := open(filepath.Join(b.TempDir(), "repo"))
	b.Cleanup(func() { s.Close() })
	writeBackup(b, s, name, &bytesReader{d})
	b.SetBytes(int64(len(d)))
	b.ReportAllocs()
	b.ResetTimer()
	return s
}

// BenchmarkRestore: reading a backed-up file back in full.
func BenchmarkRestore(b *testing.B) {
	for _, kind := range []string{"random", "pages"} {
		for _, st := range storages {
			b.Run("data="+kind+"/store="+st.name, func(b *testing.B) {
				d := input(kind)
				s := holding(b, st.open, "b", d)
				for i := 0; i < b.N; i++ {
					if n := readBackup(b, s, "b"); n != int64(len(d)) {
						b.Fatalf("read %d bytes, want %d", n, len(d))
					}
				}
			})
		}
		b.Run("data="+kind+"/store="+zstdStore, func(b *testing.B) { zstdBaseline(b, kind, true) })
	}
}

// zstdStore names the zstd command's sub-benchmarks, the plain compressor
// a backup store must keep up with: `zstd -1 -T1` from a file to a file,
// and `zstd -d` from that file to /dev/null, at the command's own speed,
// in the same run as the storages. They are skipped without the command.
const zstdStore = "zstd-1-T1"

// zstdBaseline times compressing the input of kind, or with restore
// decompressing it, with the zstd command.
func zstdBaseline(b *testing.B, kind string, restore bool) {
	if _, err := exec.LookPath("zstd"); err != nil {
		b.Skip("no zstd command")
	}
	dir := b.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "in.zst")
	if err := os.WriteFile(in, input(kind), 0o600); err != nil {
		b.Fatal(err)
	}
	compress := exec.Command("zstd", "-1", "-T1", "-q", "-f", in, "-o", out)
	decompress := exec.Command("zstd", "-d", "-q", "-c", out) // to /dev/null
	run := func(cmd *exec.Cmd) {
		c := exec.Command(cmd.Args[0], cmd.Args[1:]...) // stdout: /dev/null
		var msg strings.Builder
		c.Stderr = &msg
		if err := c.Run(); err != nil {
			b.Fatalf("%s: %v: %s", c, err, msg.String())
		}
	}
	cmd := compress
	if restore {
		run(compress)
		cmd = decompress
	}
	b.SetBytes(int64(len(input(kind))))
	b.ResetTimer()
	for range b.N {
		run(cmd)
	}
}

// BenchmarkOpen: opening a repository that holds one backup and listing
// its backups, as a command-line run or an agent's restart does.
func BenchmarkOpen(b *testing.B) {
	for _, st := range storages {
		b.Run("data=pages/store="+st.name, func(b *testing.B) {
			root := filepath.Join(b.TempDir(), "repo")
			s := st.open(root)
			writeBackup(b, s, "b", &bytesReader{input("pages")})
			s.Close()
			for b.Loop() {
				s := st.open(root)
				if bhs, err := s.ListBackups(ctx, "bench/0"); err != nil || len(bhs) != 1 {
					b.Fatalf("ListBackups = %d, %v", len(bhs), err)
				}
				s.Close()
			}
		})
	}
}

// newStream yields n bytes of new, incompressible data without holding them:
// a random block whose every 4 KiB carries a running counter.
type newStream struct {
	block []byte
	left  int64
	ctr   uint64
	seed  uint64
}

func (s *newStream) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && s.left > 0 {
		n := copy(p, s.block[int(s.ctr*4096)%len(s.block):])
		n = min(n, int(s.left), 4096)
		for i := 0; i < 8 && i < n; i++ {
			p[i] ^= byte(s.ctr>>(i*8)) ^ byte(s.seed)
		}
		s.ctr++
		s.left -= int64(n)
		total += n
		p = p[n:]
	}
	return total, nil
}

// BenchmarkPeakHeap: four 1 GiB streams of new data at once. It reports the
// peak live heap (what the garbage collector found reachable, sampled every
// 10 ms) and the peak heap including garbage not yet collected, both above
// what the process held before the backup started. With -short (make
// test's run of every benchmark once) the streams are 64 MiB: the figures
// come from make bench.
func BenchmarkPeakHeap(b *testing.B) {
	perFile, size := int64(1<<30), "1GiB"
	if testing.Short() {
		perFile, size = 64<<20, "64MiB"
	}
	block := dataset.Random(9, 8<<20)
	for _, st := range storages {
		b.Run("data=4x"+size+"/store="+st.name, func(b *testing.B) {
			b.SetBytes(4 * perFile)
			var peak heapPeak
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s := st.open(filepath.Join(b.TempDir(), "repo"))
				done := make(chan struct{})
				sampled := make(chan struct{})
				go func() { peak.sample(done); close(sampled) }()
				b.StartTimer()
				var files []io.Reader
				for f := range 4 {
					files = append(files, &newStream{block: block, left: perFile, seed: uint64(f)})
				}
				writeBackup(b, s, "b", files...)
				b.StopTimer()
				close(done)
				<-sampled
				s.Close()
			}
			b.ReportMetric(float64(peak.live)/(1<<20), "peak-live-MiB")
			b.ReportMetric(float64(peak.heap)/(1<<20), "peak-heap-MiB")
		})
	}
}

type heapPeak struct{ live, heap uint64 }

// sample records peaks above the heap at its start until done is closed.
func (p *heapPeak) sample(done chan struct{}) {
	runtime.GC()
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(samples)
	baseLive, baseHeap := samples[0].Value.Uint64(), samples[1].Value.Uint64()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			metrics.Read(samples)
			if v := samples[0].Value.Uint64(); v > baseLive {
				p.live = max(p.live, v-baseLive)
			}
			if v := samples[1].Value.Uint64(); v > baseHeap {
				p.heap = max(p.heap, v-baseHeap)
			}
		}
	}
}
