package s3_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/backendtest"
	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/storage/storagetest"
	"github.com/minio/minio-go/v7"
)

// The tests run against a real S3 server: the Versity gateway on a posix
// directory, started once for the package on a free loopback port. make
// installs it (DEDUP_VERSITYGW names the binary); only DEDUP_SKIP_S3=1
// skips these tests.

const access, secret = "dedupstore", "dedupstore-secret"

var endpoint string

func TestMain(m *testing.M) {
	if os.Getenv("DEDUP_SKIP_S3") == "1" {
		fmt.Println("DEDUP_SKIP_S3=1: S3 tests skipped")
		os.Exit(0)
	}
	bin := os.Getenv("DEDUP_VERSITYGW")
	if bin == "" {
		bin, _ = filepath.Abs("../../.tools/versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintf(os.Stderr, "no S3 server to test against: %v (make test installs versitygw; DEDUP_SKIP_S3=1 skips)\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "versitygw-")
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	endpoint = l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--access", access, "--secret", secret, "--port", endpoint, "posix", dir)
	log, err := os.Create(dir + ".log") // the gateway logs every request
	if err != nil {
		panic(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", endpoint); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			panic("versitygw did not start")
		}
	}
	code := m.Run()
	cmd.Process.Kill()
	cmd.Wait()
	os.RemoveAll(dir)
	os.Remove(log.Name())
	os.Exit(code)
}

var buckets atomic.Int64

// newBackend returns a backend on a new, empty bucket.
func newBackend(t *testing.T, prefix string) *s3.Backend {
	t.Helper()
	cfg, err := s3.ParseLocation(fmt.Sprintf("s3:http://%s/test-%d/%s", endpoint, buckets.Add(1), prefix))
	if err != nil {
		t.Fatal(err)
	}
	cfg.AccessKey, cfg.SecretKey = access, secret
	b, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Client().MakeBucket(context.Background(), cfg.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) chunkstore.Backend { return newBackend(t, "") })
}

func TestConformanceUnderPrefix(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) chunkstore.Backend { return newBackend(t, "repos/one") })
}

func TestParseLocation(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "ak")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "sk")
	cfg, err := s3.ParseLocation("s3:https://s3.example:9000/bkt/a/b")
	if err != nil || cfg.Endpoint != "s3.example:9000" || !cfg.Secure || cfg.Bucket != "bkt" || cfg.Prefix != "a/b/" || cfg.AccessKey != "ak" || cfg.SecretKey != "sk" {
		t.Errorf("ParseLocation = %+v, %v", cfg, err)
	}
	for _, bad := range []string{"", "http://h/b", "s3:ftp://h/b", "s3:http:///b", "s3:http://h/", "s3:http://h"} {
		if _, err := s3.ParseLocation(bad); err == nil {
			t.Errorf("ParseLocation(%q) succeeded", bad)
		}
	}
}

// TestDedupOnS3 runs the storage conformance suite on the dedup storage
// with its objects on S3 (index.db stays in the local root).
func TestDedupOnS3(t *testing.T) {
	backends := map[string]*s3.Backend{}
	storagetest.Run(t, func(t *testing.T, root string) storage.BackupStorage {
		b, ok := backends[root]
		if !ok {
			b = newBackend(t, "repo")
			backends[root] = b
		}
		return dedup.New(root, dedup.Options{Backend: b, PackSize: 1 << 20})
	})
}

func mustList(t *testing.T, s *dedup.Storage) []storage.BackupHandle {
	t.Helper()
	bhs, err := s.ListBackups(context.Background(), "d")
	if err != nil {
		t.Fatal(err)
	}
	return bhs
}
