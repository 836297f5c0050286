package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/internal/s3test"
)

// s3Repo starts the Versity gateway and returns a repository location on
// it, with the credentials set. The bucket does not exist: init creates it.
func s3Repo(t *testing.T) string {
	return s3RepoOn(t, func() (string, func(), error) { return s3test.Start("../..") })
}

// s3RepoOn is s3Repo on the server that start starts.
func s3RepoOn(t *testing.T, start func() (string, func(), error)) string {
	endpoint, stop, err := start()
	if errors.Is(err, s3test.ErrSkip) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.Secret)
	return fmt.Sprintf("s3:http://%s/backups/prod", endpoint)
}

// TestS3Repository runs dedupctl on a repository on a real S3 server, and
// rebuilds its index from the objects after the cache is deleted.
func TestS3Repository(t *testing.T) {
	repo := s3Repo(t)
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
	// Credentials by flag instead of the environment.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	if r := run(nil, "ls"); r.code == 0 {
		t.Error("ls without credentials succeeded")
	}
	if r := run(nil, "--s3-access-key-id", s3test.Access, "--s3-secret-access-key", s3test.Secret, "ls"); r.code != 0 || !strings.Contains(r.stdout, "db/0/b1") {
		t.Errorf("ls with credentials by flag: exit %d: %s", r.code, r.stderr)
	}
}

// TestS3ManyAgents runs manyProcesses on a repository on the Versity
// gateway, and TestFakeS3ManyAgents on gofakes3, an independent S3
// implementation; TestManyProcesses runs it on a local directory.
func TestS3ManyAgents(t *testing.T) {
	repo := s3Repo(t)
	cache := t.TempDir() // one cache root: concurrent processes get separate index caches in it
	manyProcesses(t, repo, "--cache-dir", cache)
}

func TestFakeS3ManyAgents(t *testing.T) {
	manyProcesses(t, s3RepoOn(t, s3test.StartFake), "--cache-dir", t.TempDir())
}

// slowReader pauses before each MiB of its data, so that a backup lasts
// long enough for collections to run during it.
type slowReader struct {
	data  []byte
	pause time.Duration
	given int
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.given%(1<<20) == 0 {
		time.Sleep(r.pause)
	}
	n := copy(p[:min(len(p), 1<<20-r.given%(1<<20))], r.data)
	r.data = r.data[n:]
	r.given += n
	return n, nil
}
