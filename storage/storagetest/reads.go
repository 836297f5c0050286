package storagetest

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/dedupstore/dedupstore/storage"
)

// The properties of reading a file back.

func testSmallFileOneRead(t *testing.T, e *env) {
	bh := e.start("d", "n")
	want := []byte("abcdefghijklmnopqrstuvwxyz") // 26 bytes
	write(t, bh, "file1", want)
	e.end(bh)
	rc, err := e.find("d", "n").ReadFile(ctx, "file1")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 36)
	n, err := rc.Read(buf)
	if (err != nil && err != io.EOF) || n != 26 || !bytes.Equal(buf[:n], want) {
		t.Fatalf("one Read of 36 bytes = %d, %v (%q); want all 26 bytes", n, err, buf[:n])
	}
	if n, err := rc.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("Read after the end = %d, %v; want 0, EOF", n, err)
	}
}

func testMissingFile(t *testing.T, e *env) {
	bh := e.start("d", "n")
	e.end(bh)
	if _, err := read(t, e.find("d", "n"), "nothere"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ReadFile of a missing file: %v, want ErrNotFound", err)
	}
}

// testCopy: io.Copy, which uses the file's WriteTo where it has one, reads
// the same bytes as Read does, from where Read stopped; a Writer's error
// comes back from io.Copy, with the count of the bytes the Writer took.
func testCopy(t *testing.T, e *env) {
	want := content(3, 3<<20+5)
	bh := e.start("d", "n")
	write(t, bh, "f", want)
	e.end(bh)
	bh = e.find("d", "n")

	rc, err := bh.ReadFile(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 100_001)
	if _, err := io.ReadFull(rc, got); err != nil {
		t.Fatal(err)
	}
	rest := bytes.NewBuffer(got)
	n, err := io.Copy(rest, rc)
	rc.Close()
	if err != nil || n != int64(len(want)-len(got)) || !bytes.Equal(rest.Bytes(), want) {
		t.Fatalf("Read of %d bytes, then io.Copy: %d bytes, %v; equal to the file: %v", len(got), n, err, bytes.Equal(rest.Bytes(), want))
	}

	rc, err = bh.ReadFile(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	w := &fullWriter{room: 1<<20 + 7}
	n, err = io.Copy(w, rc)
	if !errors.Is(err, errFull) || n != 1<<20+7 || !bytes.Equal(w.got, want[:n]) {
		t.Fatalf("io.Copy to a Writer that takes %d bytes: %d bytes, %v; want %d and its error", 1<<20+7, n, err, 1<<20+7)
	}
}

var errFull = errors.New("writer full")

// fullWriter takes room bytes, then fails.
type fullWriter struct {
	room int
	got  []byte
}

func (w *fullWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.room)
	w.got, w.room = append(w.got, p[:n]...), w.room-n
	if n < len(p) {
		return n, errFull
	}
	return n, nil
}
