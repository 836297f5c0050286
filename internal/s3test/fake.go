package s3test

import (
	"net/http/httptest"
	"os"
	"strings"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// StartFake starts gofakes3, an S3 server written apart from the Versity
// gateway, keeping objects in memory, in this process on a loopback port;
// other processes reach it too. It returns its host:port and a function
// that stops it. Its clock is this host's: leases and collections that
// rely on the server's times and listings are tried against a second
// implementation of both.
func StartFake() (endpoint string, stop func(), err error) {
	if os.Getenv("DEDUP_SKIP_S3") == "1" {
		return "", nil, ErrSkip
	}
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	return strings.TrimPrefix(srv.URL, "http://"), srv.Close, nil
}
