package tree

import (
	"bytes"
	"slices"
	"testing"
)

// FuzzReadCatalog: whatever the bytes, Read returns an error or entries
// that are safe to restore and that write back to the same entries.
func FuzzReadCatalog(f *testing.F) {
	var buf bytes.Buffer
	Write(&buf, slices.Values([]Entry{
		{Path: "a", Type: Dir, Mode: 0o755},
		{Path: "a/x\xff", Type: File, Stored: "0", Size: 3},
		{Path: "a/y", Type: File, Stored: "0", HardLink: "a/x\xff"},
		{Path: "a/l", Type: Symlink, Target: "/etc"},
	}))
	f.Add(buf.Bytes())
	f.Add([]byte(`{"catalog":2}` + "\n" + `{"path":"../x","type":"dir"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, e := range entries {
			if !ValidPath(string(e.Path)) {
				t.Fatalf("Read accepted the path %q", e.Path)
			}
		}
		var again bytes.Buffer
		if err := Write(&again, slices.Values(entries)); err != nil {
			t.Fatal(err)
		}
		back, err := Read(&again)
		if err != nil || len(back) != len(entries) {
			t.Fatalf("written back: %d entries, %v; want %d", len(back), err, len(entries))
		}
		for i := range back {
			if back[i].Path != entries[i].Path || back[i].Target != entries[i].Target || back[i].Stored != entries[i].Stored {
				t.Fatalf("entry %d changed: %+v, then %+v", i, entries[i], back[i])
			}
		}
	})
}
