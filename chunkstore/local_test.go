package chunkstore_test

import (
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/chunkstore/backendtest"
)

func TestLocal(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) chunkstore.Backend { return chunkstore.NewLocal(t.TempDir()) })
}
