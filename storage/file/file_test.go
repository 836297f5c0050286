package file_test

import (
	"testing"

	"github.com/dedupstore/dedupstore/storage"
	"github.com/dedupstore/dedupstore/storage/file"
	"github.com/dedupstore/dedupstore/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, root string) storage.BackupStorage { return file.New(root) })
}
