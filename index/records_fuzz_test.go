package index

import (
	"bytes"
	"testing"
)

// FuzzRecords feeds arbitrary bytes to every decoder of index.db records:
// they must return an error or a value that encodes back to the same
// bytes, never panic.
func FuzzRecords(f *testing.F) {
	f.Add([]byte("ks/0\x00name"), encodeBackup(Backup{State: Ended}))
	f.Add([]byte("file"), encodeFile(File{List: 3, Size: 10, Chunks: 1}))
	f.Add(make([]byte, 32), encodePack(Pack{Size: 5, Chunks: 1}))
	f.Add([]byte{}, make([]byte, RefSize*2))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		// Whatever decodes encodes back to the same record.
		if b, err := decodeBackup(key, value); err == nil {
			if !bytes.Equal(backupKey(b.Dir, b.Name), key) || !bytes.Equal(encodeBackup(b), value) {
				t.Fatalf("backup record %q %x re-encodes differently: %+v", key, value, b)
			}
		}
		if f, err := decodeFile(key, value); err == nil && (!bytes.Equal(encodeFile(f), value) || f.Name != string(key)) {
			t.Fatalf("file record %x re-encodes differently", value)
		}
		if p, err := decodePack(key, value); err == nil && (!bytes.Equal(encodePack(p), value) || !bytes.Equal(p.ID[:], key)) {
			t.Fatalf("pack record %x re-encodes differently", value)
		}
		if l, err := decodeLocation(value); err == nil && !bytes.Equal(encodeLocation(l), value) {
			t.Fatalf("location %x re-encodes differently", value)
		}
		if refs, err := decodeRefs(value, nil); err == nil && len(refs)*RefSize != len(value) {
			t.Fatalf("%d refs from %d bytes", len(refs), len(value))
		}
	})
}
