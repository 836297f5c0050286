package faulty_test

import (
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/backendtest"
	"github.com/dedupstore/dedupstore/chunkstore/local"
	"github.com/dedupstore/dedupstore/internal/faulty"
)

// A disarmed wrapper is a conforming backend.
func TestDisarmedConforms(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) chunkstore.Backend { return faulty.New(local.New(t.TempDir())) })
}
