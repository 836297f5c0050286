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

// keyFile is a secret that opens without argon2id's cost. (The storage
// suite runs encrypted on gofakes3, in chunkstore/s3; every dedupctl test
// runs on an encrypted local repository.)
var keyFile = chunkstore.Secret{KeyFile: chunkstore.NewKeyFile()}
