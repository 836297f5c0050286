// Package s3test runs S3 servers for tests: the Versity gateway on a posix
// directory, on a free loopback port (Start), and gofakes3, a second,
// independent implementation, in the test's process (StartFake). make installs the gateway into
// .tools and names it in DEDUP_VERSITYGW; DEDUP_SKIP_S3=1 is the only way
// to skip the tests that need it. DEDUP_S3_ENDPOINT=HOST:PORT runs them
// against a server already running instead (SeaweedFS, MinIO, ...), which
// must accept the keys Access and Secret.
package s3test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Access and Secret are the gateway's credentials.
const Access, Secret = "dedupstore", "dedupstore-secret"

// ErrSkip is returned by Start when DEDUP_SKIP_S3=1.
var ErrSkip = errors.New("DEDUP_SKIP_S3=1: S3 tests skipped")

// Start starts a gateway and returns its host:port and a function that
// stops it and removes its data. moduleRoot is the path from the calling
// test's directory to the module root, where .tools is.
func Start(moduleRoot string) (endpoint string, stop func(), err error) {
	if os.Getenv("DEDUP_SKIP_S3") == "1" {
		return "", nil, ErrSkip
	}
	if ep := os.Getenv("DEDUP_S3_ENDPOINT"); ep != "" {
		return ep, func() {}, nil
	}
	bin := os.Getenv("DEDUP_VERSITYGW")
	if bin == "" {
		bin = filepath.Join(moduleRoot, ".tools", "versitygw")
	}
	if _, err := os.Stat(bin); err != nil {
		return "", nil, fmt.Errorf("no S3 server to test against: %w (make test installs versitygw; DEDUP_SKIP_S3=1 skips)", err)
	}
	dir, err := os.MkdirTemp("", "versitygw-")
	if err != nil {
		return "", nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	endpoint = l.Addr().String()
	l.Close()
	log, err := os.Create(dir + ".log") // the gateway logs every request
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "--access", Access, "--secret", Secret, "--port", endpoint, "posix", dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		os.RemoveAll(dir)
		os.Remove(log.Name())
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", endpoint); err == nil {
			c.Close()
			return endpoint, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, errors.New("versitygw did not start")
		}
	}
}
