package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/internal/s3test"
	"github.com/minio/minio-go/v7"
)

// TestS3Repository runs dedupctl on a repository on a real S3 server, and
// rebuilds its index from the objects after the cache is deleted.
func TestS3Repository(t *testing.T) {
	endpoint, stop, err := s3test.Start("../..")
	if errors.Is(err, s3test.ErrSkip) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.Secret)
	repo := fmt.Sprintf("s3:http://%s/backups/prod", endpoint)
	cfg, _ := s3.ParseLocation(repo)
	b, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Client().MakeBucket(context.Background(), "backups", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	run := func(stdin []byte, args ...string) result {
		return dedupctl(t, repo, bytes.NewReader(stdin), append([]string{"--cache-dir", cache}, args...)...)
	}
	if r := run(nil, "ls"); r.code != 3 {
		t.Errorf("ls before init: exit %d, %s", r.code, r.stderr)
	}
	if r := run(nil, "init"); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	data := dataset.Pages(500, 300)
	if r := run(data, "backup", "db/0/b1", "--stdin", "--name", "xbstream"); r.code != 0 {
		t.Fatalf("backup: %s", r.stderr)
	}
	if r := run(nil, "cat", "db/0/b1", "xbstream"); r.code != 0 || r.stdout != string(data) {
		t.Fatalf("cat: exit %d, %d bytes: %s", r.code, len(r.stdout), r.stderr)
	}
	entries, _ := os.ReadDir(cache)
	if len(entries) != 1 {
		t.Fatalf("cache holds %d entries", len(entries))
	}
	os.RemoveAll(filepath.Join(cache, entries[0].Name())) // a new host: the index is rebuilt from S3
	if r := run(nil, "ls"); r.code != 0 || !strings.Contains(r.stdout, "db/0/b1") {
		t.Fatalf("ls after the cache was deleted: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run(nil, "check", "--read-data"); r.code != 0 {
		t.Fatalf("check: %s%s", r.stdout, r.stderr)
	}
	if r := run(nil, "cat", "db/0/b1", "xbstream"); r.stdout != string(data) {
		t.Fatal("cat after the rebuild differs")
	}
}
