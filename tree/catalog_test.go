package tree

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCatalogRoundTrip(t *testing.T) {
	when := time.Date(2024, 2, 29, 1, 2, 3, 456789, time.UTC)
	in := []Entry{
		{Path: "etc", Type: Dir, Mode: 0o755, MTime: when},
		{Path: "etc/x\xff", Type: File, Stored: "0", Size: 3, Mode: 0o4755, UID: 1, GID: 2, MTime: when, Sparse: true, Dev: 5, Inode: 6, CTime: when},
		{Path: "etc/x\xfe", Type: File, Stored: "0", HardLink: "etc/x\xff", Mode: 0o644, XAttrs: map[string][]byte{"user.a": {0, 1, 0xff}, "security.capability": {1, 2}}},
		{Path: `etc/back\slash`, Type: Symlink, Target: "../\xff/target", Mode: 0o777},
		{Path: "etc/null", Type: Char, Rdev: 0x103, Mode: 0o666},
		{Path: "etc/fifo", Type: FIFO, Mode: 0o600},
	}
	var buf bytes.Buffer
	if err := Write(&buf, slices.Values(in)); err != nil {
		t.Fatal(err)
	}
	out, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("read %d entries, wrote %d", len(out), len(in))
	}
	for i := range in {
		if !out[i].MTime.Equal(in[i].MTime) || !out[i].CTime.Equal(in[i].CTime) {
			t.Errorf("entry %d: times %v %v, want %v %v", i, out[i].MTime, out[i].CTime, in[i].MTime, in[i].CTime)
		}
		out[i].MTime, out[i].CTime, in[i].MTime, in[i].CTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if !reflect.DeepEqual(out[i], in[i]) {
			t.Errorf("entry %d: read %+v, wrote %+v", i, out[i], in[i])
		}
	}
}

func TestCatalogRefusesWhatCannotBeRestored(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries []Entry
	}{
		{"absolute", []Entry{{Path: "/etc", Type: Dir}}},
		{"climbing", []Entry{{Path: "../x", Type: Dir}}},
		{"inner climb", []Entry{{Path: "a/../../x", Type: Dir}}},
		{"dot", []Entry{{Path: ".", Type: Dir}}},
		{"empty part", []Entry{{Path: "a//b", Type: Dir}}},
		{"trailing slash", []Entry{{Path: "a/", Type: Dir}}},
		{"NUL", []Entry{{Path: "a\x00b", Type: Dir}}},
		{"twice", []Entry{{Path: "a", Type: Dir}, {Path: "a", Type: Dir}}},
		{"dangling hard link", []Entry{{Path: "a", Type: File, Stored: "0", HardLink: "b"}}},
		{"no data", []Entry{{Path: "a", Type: File}}},
		{"socket", []Entry{{Path: "a", Type: "socket"}}},
		{"mode", []Entry{{Path: "a", Type: Dir, Mode: 0o170000}}},
	} {
		var buf bytes.Buffer
		Write(&buf, slices.Values(c.entries))
		if _, err := Read(&buf); !errors.Is(err, ErrCatalog) {
			t.Errorf("%s: Read = %v, want ErrCatalog", c.name, err)
		}
	}
	if _, err := Read(strings.NewReader(`{"version":1,"files":[]}`)); !errors.Is(err, ErrCatalog) || !strings.Contains(err.Error(), "not migrated") {
		t.Errorf("a format 1 catalog: %v", err)
	}
}

// A catalog has no size limit: one of more than 256 MiB (about two million
// files) streams through in both directions.
func TestCatalogLarge(t *testing.T) {
	if raceDetector {
		t.Skip("a test of size, run without the race detector by make test")
	}
	long := strings.Repeat("p", 4000)
	const n = 70_000 // 70,000 entries of more than 4 KB
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(Write(pw, func(yield func(Entry) bool) {
			for i := range n {
				if !yield(Entry{Path: Name(long + "/" + strconv.Itoa(i)), Type: Dir}) {
					return
				}
			}
		}))
	}()
	cw := &countingReader{r: pr}
	out, err := Read(cw)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != n || cw.n <= 256<<20 {
		t.Errorf("read %d entries from %d bytes, want %d from more than 256 MiB", len(out), cw.n, n)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
