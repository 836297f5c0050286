package s3_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore/s3"
)

// Without keys in Config, credentials come from the standard chain: here a
// profile of a shared credentials file.
func TestCredentialsFromProfile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials")
	os.WriteFile(file, fmt.Appendf(nil, "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[backup]\naws_access_key_id = %s\naws_secret_access_key = %s\n", access, secret), 0o600)
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "AWS_SESSION_TOKEN"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-config"))
	bucket := newBackend(t, "") // made with the gateway's keys
	for _, c := range []struct {
		profile string
		works   bool
	}{{"backup", true}, {"default", false}} {
		t.Setenv("AWS_PROFILE", c.profile)
		cfg, _ := s3.ParseLocation(fmt.Sprintf("s3:http://%s/%s/", endpoint, bucket.Bucket()))
		b, err := s3.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Put(context.Background(), "config", bytes.NewReader([]byte("x")))
		if (err == nil) != c.works {
			t.Errorf("profile %s: Put = %v, want success %v", c.profile, err, c.works)
		}
	}
}

// headers records the headers of every PUT request.
type headers struct {
	mu  sync.Mutex
	put []http.Header
}

func (h *headers) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut {
		h.mu.Lock()
		h.put = append(h.put, r.Header.Clone())
		h.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(r)
}

// Server-side encryption and the storage class are asked of every write.
func TestWriteOptions(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyFile, bytes.Repeat([]byte{7}, 32), 0o600)
	for _, c := range []struct {
		sse, header, value string
	}{
		{"AES256", "X-Amz-Server-Side-Encryption", "AES256"},
		{"aws:kms", "X-Amz-Server-Side-Encryption", "aws:kms"},
		{"aws:kms:my-key", "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id", "my-key"},
	} {
		rec := &headers{}
		cfg, _ := s3.ParseLocation(fmt.Sprintf("s3:http://%s/%s/", endpoint, newBackend(t, "").Bucket()))
		cfg.AccessKey, cfg.SecretKey = access, secret
		cfg.ServerSideEncryption, cfg.StorageClass, cfg.Transport = c.sse, "STANDARD_IA", rec
		b, err := s3.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		b.Put(context.Background(), "config", bytes.NewReader([]byte("x"))) // the gateway may refuse what it does not implement
		if len(rec.put) == 0 || rec.put[0].Get(c.header) != c.value || rec.put[0].Get("X-Amz-Storage-Class") != "STANDARD_IA" {
			t.Errorf("%s: PUT headers %v", c.sse, rec.put)
		}
	}
	for _, bad := range []string{"aes", "sse_c:" + filepath.Join(t.TempDir(), "missing"), "sse_c:" + os.Args[0]} {
		cfg, _ := s3.ParseLocation("s3:http://127.0.0.1:1/b")
		cfg.ServerSideEncryption = bad
		if _, err := s3.New(cfg); err == nil {
			t.Errorf("server-side encryption %q accepted", bad)
		}
	}
	cfg, _ := s3.ParseLocation("s3:http://127.0.0.1:1/b")
	cfg.ServerSideEncryption = "sse_c:" + keyFile
	if _, err := s3.New(cfg); err != nil {
		t.Errorf("a 32-byte customer key: %v", err)
	}
}
