package s3_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// countingTransport counts PUT requests.
type countingTransport struct{ puts atomic.Int64 }

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut {
		c.puts.Add(1)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// BenchmarkBackends ingests and restores 128 MiB of database pages with the
// dedup storage on the local directory and on the S3 server, side by side,
// and reports the PUT requests per GiB ingested. The S3 repository is
// shared, as dedupctl opens it.
func BenchmarkBackends(b *testing.B) {
	data := dataset.Pages(400, 8192)
	for _, backend := range []string{"local", "s3"} {
		open := func(b *testing.B, ct *countingTransport) *dedup.Storage {
			root := filepath.Join(b.TempDir(), "repo")
			if backend == "local" {
				return dedup.New(root, dedup.Options{})
			}
			clean := newBackend(&testing.T{}, "repo")
			cfg, _ := s3.ParseLocation(fmt.Sprintf("s3:http://%s/%s/repo", endpoint, clean.Bucket()))
			cfg.AccessKey, cfg.SecretKey, cfg.Transport = access, secret, ct
			be, err := s3.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			return dedup.New(root, dedup.Options{Backend: chunkstore.Backend(be)})
		}
		b.Run("backend="+backend+"/op=ingest", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			ct := &countingTransport{}
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s := open(b, ct)
				b.StartTimer()
				put(b, s, data)
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(ct.puts.Load())/float64(b.N)/(float64(len(data))/(1<<30)), "PUTs/GiB")
		})
		b.Run("backend="+backend+"/op=restore", func(b *testing.B) {
			s := open(b, &countingTransport{})
			defer s.Close()
			put(b, s, data)
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				bhs, err := s.ListBackups(context.Background(), "d")
				if err != nil {
					b.Fatal(err)
				}
				rc, err := bhs[0].ReadFile(context.Background(), "f")
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, rc); err != nil || n != int64(len(data)) {
					b.Fatal(n, err)
				}
				rc.Close()
			}
		})
	}
}

func put(b *testing.B, s storage.BackupStorage, data []byte) {
	bh, err := s.StartBackup(context.Background(), "d", "n")
	if err != nil {
		b.Fatal(err)
	}
	w, _ := bh.AddFile(context.Background(), "f")
	if _, err := w.Write(data); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	if err := bh.EndBackup(context.Background()); err != nil {
		b.Fatal(err)
	}
}
