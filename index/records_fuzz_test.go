package index

import "testing"

// FuzzRecords feeds arbitrary bytes to every decoder of index.db records:
// they must return an error or a value, never panic.
func FuzzRecords(f *testing.F) {
	f.Add([]byte("ks/0\x00name"), encodeBackup(Backup{State: Ended}))
	f.Add([]byte("file"), encodeFile(File{List: 3, Size: 10, Chunks: 1}))
	f.Add(make([]byte, 32), encodePack(Pack{Size: 5, Chunks: 1}))
	f.Add([]byte{}, make([]byte, RefSize*2))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		decodeBackup(key, value)
		decodeFile(key, value)
		decodePack(key, value)
		decodeLocation(value)
		if refs, err := decodeRefs(value, nil); err == nil && len(refs)*RefSize != len(value) {
			t.Fatalf("%d refs from %d bytes", len(refs), len(value))
		}
	})
}
