package dedup_test

import (
	"testing"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/storage/storagetest"
)

// smallPacks makes the conformance sizes cross many pack boundaries.
var smallPacks = dedup.Options{PackSize: 1 << 20}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, root string) storage.BackupStorage { return dedup.New(root, smallPacks) })
}

// keyFile is a secret that opens without argon2id's cost, for the many
// opens of the suites.
var keyFile = chunkstore.Secret{KeyFile: chunkstore.NewKeyFile()}

// An encrypted repository keeps the whole contract.
func TestConformanceEncrypted(t *testing.T) {
	opts := smallPacks
	opts.Secret = keyFile
	storagetest.Run(t, func(t *testing.T, root string) storage.BackupStorage { return dedup.New(root, opts) })
}
