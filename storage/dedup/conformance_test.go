package dedup_test

import (
	"testing"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/dedup"
	"github.com/dedupstore/dedupstore/storage/storagetest"
)

// smallPacks makes the conformance sizes cross many pack boundaries.
var smallPacks = dedup.Options{PackSize: 1 << 20}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, root string) storage.BackupStorage { return dedup.New(root, smallPacks) })
}
