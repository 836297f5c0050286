package testlib

import (
	"flag"
	"os"
	"testing"
)

// TestMain lets go test's flags reach Vitess's wrangler/testlib tests:
// vitess-tests.sh adds this file to that package with go test -overlay.
// The package's init (fake_tablet.go, through servenv.ParseFlagsForTests)
// parses the flags before the testing package defines its own, with
// os.Args cut to the program's name, so -run and -v went unread and every
// test of the package ran, the reparent tests too, which touch no backup
// storage. Parsing again here, once testing has defined its flags, is what
// go test's generated main would have done.
func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(m.Run())
}
