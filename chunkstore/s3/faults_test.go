package s3_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/dedupstore/dedupstore/check"
	"github.com/dedupstore/dedupstore/chunkstore/s3"
	"github.com/dedupstore/dedupstore/internal/dataset"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
)

// faultyTransport breaks every n-th request on the wire: a 500 or 503
// answer, a connection reset, or a response body cut in half.
// Requests pass untouched until it is armed.
type faultyTransport struct {
	base  http.RoundTripper
	mode  string
	every int64
	armed atomic.Bool
	calls atomic.Int64
	hits  atomic.Int64
}

func (f *faultyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !f.armed.Load() || f.calls.Add(1)%f.every != 0 {
		return f.base.RoundTrip(req)
	}
	f.hits.Add(1)
	switch f.mode {
	case "500", "503":
		code, status := "InternalError", "500 Internal Server Error"
		if f.mode == "503" {
			code, status = "SlowDown", "503 Slow Down"
		}
		body := "<Error><Code>" + code + "</Code><Message>injected</Message></Error>"
		return &http.Response{StatusCode: int(status[0]-'0')*100 + int(status[2]-'0'), Status: status, Header: http.Header{"Content-Type": {"application/xml"}},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}, nil
	case "reset":
		return nil, fmt.Errorf("injected: %w", syscall.ECONNRESET)
	default: // truncate
		resp, err := f.base.RoundTrip(req)
		if err == nil && resp.ContentLength > 1 {
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.LimitReader(resp.Body, resp.ContentLength/2), resp.Body}
		}
		return resp, err
	}
}

// TestFaultsOnTheWire backs up and reads back through a connection that
// breaks every few requests. Each operation either succeeds, with exact
// bytes, or fails with an error; afterwards, over a clean connection, the
// repository checks clean and every backup that ended reads back exactly.
// Two backups stored over a clean connection first are read through the
// faults too, so that reads meet every kind of fault even when none of the
// backups through the faults ends (a body cut in half breaks most writes).
func TestFaultsOnTheWire(t *testing.T) {
	data := map[string][]byte{"a": dataset.Pages(300, 100), "b": dataset.Random(301, 1<<20)}
	for _, mode := range []string{"500", "503", "reset", "truncate"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			clean := newBackend(t, "repo")
			cleanOpts := dedup.Options{Backend: clean, PackSize: 1 << 20}
			s := dedup.New(t.TempDir(), cleanOpts)
			ended := []string{"clean0", "clean1"}
			for _, name := range ended {
				bh, err := s.StartBackup(ctx, "d", name)
				if err != nil {
					t.Fatal(err)
				}
				for file, content := range data {
					w, err := bh.AddFile(ctx, file)
					if err != nil {
						t.Fatal(err)
					}
					w.Write(content)
					if err := w.Close(); err != nil {
						t.Fatal(err)
					}
				}
				if err := bh.EndBackup(ctx); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()

			ft := &faultyTransport{base: http.DefaultTransport, mode: mode, every: 7}
			cfg, _ := s3.ParseLocation(fmt.Sprintf("s3:http://%s/%s/repo", endpoint, clean.Bucket()))
			cfg.AccessKey, cfg.SecretKey, cfg.Transport = access, secret, ft
			faulty, err := s3.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			s = dedup.New(root, dedup.Options{Backend: faulty, PackSize: 1 << 20})
			opened := mustList(t, s) // opened and synced over a clean wire
			ft.armed.Store(true)
			var readOK, readFailed, readHits int64
			for i := range 2 {
				name := fmt.Sprintf("b%d", i)
				if bh, err := s.StartBackup(ctx, "d", name); err != nil {
					t.Logf("start %s: %v", name, err) // and read all the same
				} else {
					ok := true
					for file, content := range data {
						w, err := bh.AddFile(ctx, file)
						if err == nil {
							_, err = w.Write(content)
							if cerr := w.Close(); err == nil {
								err = cerr
							}
						}
						ok = ok && err == nil
					}
					if ok && bh.EndBackup(ctx) == nil {
						ended = append(ended, name)
					} else {
						bh.AbortBackup(ctx)
					}
				}
				// Reads through the faults: exact bytes or an error.
				bhs, err := s.ListBackups(ctx, "d")
				if err != nil {
					t.Logf("list: %v", err)
					bhs = opened
				}
				for _, bh := range bhs {
					for file, want := range data {
						hits := ft.hits.Load()
						rc, err := bh.ReadFile(ctx, file)
						var got []byte
						if err == nil {
							got, err = io.ReadAll(rc)
							rc.Close()
						}
						readHits += ft.hits.Load() - hits
						switch {
						case err != nil:
							readFailed++
						case !bytes.Equal(got, want):
							t.Fatalf("%s/%s: wrong bytes without an error", bh.Name(), file)
						default:
							readOK++
						}
					}
				}
			}
			s.Close()
			t.Logf("%s: %d of %d requests broken, %d of them in reads; %d reads exact, %d failed; backups ended: %v", mode, ft.hits.Load(), ft.calls.Load(), readHits, readOK, readFailed, ended)
			if readHits == 0 || readOK == 0 {
				t.Fatalf("reads met %d faults and %d read back exactly: the test reads nothing through faults", readHits, readOK)
			}
			// Over a clean connection every backup that ended is intact.
			s = dedup.New(root, cleanOpts)
			defer s.Close()
			if r, err := s.Check(ctx, check.Options{ReadData: true}); err != nil || !r.OK() {
				t.Fatalf("check after the faults: %v %+v", err, r.Problems)
			}
			listed := map[string]storage.BackupHandle{}
			for _, bh := range mustList(t, s) {
				listed[bh.Name()] = bh
			}
			for _, name := range ended {
				bh, ok := listed[name]
				if !ok {
					t.Fatalf("backup %s ended but is not listed", name)
				}
				for file, want := range data {
					rc, err := bh.ReadFile(ctx, file)
					if err != nil {
						t.Fatalf("%s/%s: %v", name, file, err)
					}
					got, _ := io.ReadAll(rc)
					rc.Close()
					if !bytes.Equal(got, want) {
						t.Fatalf("%s/%s differs after the faults", name, file)
					}
				}
			}
		})
	}
}
