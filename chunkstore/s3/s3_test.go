package s3_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/backendtest"
	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/internal/s3test"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/storage/storagetest"
	"github.com/minio/minio-go/v7"
)

// The tests run against a real S3 server, the Versity gateway, started
// once for the package; the storage conformance suite runs against
// gofakes3, an independent implementation, too. (The backend suite does
// not pass there for a quirk of gofakes3 1.2.0 that AWS and the gateway do
// not have: an empty PUT from minio-go, which sends no Content-Length, is
// refused with MissingContentLength. Its other quirk, listing the uploads
// of a bucket with none failing with NoSuchUpload, ListPartial takes as
// none.)

const access, secret = s3test.Access, s3test.Secret

var endpoint, fakeEndpoint string

func TestMain(m *testing.M) {
	var stop, stopFake func()
	var err error
	endpoint, stop, err = s3test.Start("../..")
	if err == nil {
		fakeEndpoint, stopFake, err = s3test.StartFake()
	}
	if errors.Is(err, s3test.ErrSkip) {
		fmt.Println(err)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	stopFake()
	os.Exit(code)
}

var buckets atomic.Int64

// newBackend returns a backend on a new, empty bucket of the gateway.
func newBackend(t *testing.T, prefix string) *s3.Backend {
	t.Helper()
	return newBackendOn(t, endpoint, prefix)
}

// newBackendOn returns a backend on a new, empty bucket of the server at
// host:port ep.
func newBackendOn(t *testing.T, ep, prefix string) *s3.Backend {
	t.Helper()
	cfg, err := s3.ParseLocation(fmt.Sprintf("s3:http://%s/test-%d/%s", ep, buckets.Add(1), prefix))
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

// TestDedupOnFakeS3 runs the storage conformance suite on gofakes3, with
// the repository encrypted (TestDedupOnS3 runs it unencrypted).
func TestDedupOnFakeS3(t *testing.T) {
	backends := map[string]*s3.Backend{}
	keyFile := chunkstore.Secret{KeyFile: chunkstore.NewKeyFile()}
	storagetest.Run(t, func(t *testing.T, root string) storage.BackupStorage {
		b, ok := backends[root]
		if !ok {
			b = newBackendOn(t, fakeEndpoint, "repo")
			backends[root] = b
		}
		return dedup.New(root, dedup.Options{Backend: b, PackSize: 1 << 20, Secret: keyFile})
	})
}

func TestConformanceUnderPrefix(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) chunkstore.Backend { return newBackend(t, "repos/one") })
}

// An incomplete multipart upload, as a killed agent leaves, is listed by
// ListPartial and aborted by DeletePartial.
func TestPartialUploads(t *testing.T) {
	b := newBackend(t, "repo")
	ctx := context.Background()
	id, err := minio.Core{Client: b.Client()}.NewMultipartUpload(ctx, b.Bucket(), "repo/data/ab/pack", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var partial []chunkstore.ObjectInfo
	if err := b.ListPartial(ctx, func(o chunkstore.ObjectInfo) error { partial = append(partial, o); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(partial) != 1 || !strings.HasPrefix(partial[0].Name, "data/ab/pack") || !strings.Contains(partial[0].Name, id) {
		t.Fatalf("ListPartial = %+v, want the upload %s", partial, id)
	}
	if err := b.DeletePartial(ctx, partial[0].Name); err != nil {
		t.Fatal(err)
	}
	b.ListPartial(ctx, func(o chunkstore.ObjectInfo) error { t.Errorf("still listed after DeletePartial: %+v", o); return nil })
}

func TestParseLocation(t *testing.T) {
	cfg, err := s3.ParseLocation("s3:https://s3.example:9000/bkt/a/b")
	if err != nil || cfg.Endpoint != "s3.example:9000" || !cfg.Secure || cfg.Bucket != "bkt" || cfg.Prefix != "a/b/" {
		t.Errorf("ParseLocation = %+v, %v", cfg, err)
	}
	for _, bad := range []string{"", "http://h/b", "s3:ftp://h/b", "s3:http:///b", "s3:http://h/", "s3:http://h"} {
		if _, err := s3.ParseLocation(bad); err == nil {
			t.Errorf("ParseLocation(%q) succeeded", bad)
		}
	}
}

// TestDedupOnS3 runs the storage conformance suite on the dedup storage
// with its objects on S3: with index.db in the local root, and as a shared
// repository, with index caches there.
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
