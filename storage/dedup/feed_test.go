package dedup

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func testFeed() *feed {
	return newFeed(&sync.Pool{New: func() any { b := make([]byte, feedBlock); return &b }})
}

// A feed reads back what was written, in order, whatever the sizes of the
// writes and reads.
func TestFeedRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 5*feedBlock+12345)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	f := testFeed()
	go func() {
		p := data
		for len(p) > 0 {
			n := min(len(p), 1+rng.IntN(2*feedBlock))
			if _, err := f.Write(p[:n]); err != nil {
				t.Error(err)
				return
			}
			p = p[n:]
		}
		f.Close()
	}()
	var got bytes.Buffer
	buf := make([]byte, 100000)
	for {
		n, err := f.Read(buf[:1+len(got.Bytes())%len(buf)])
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read %d bytes, not the %d written", got.Len(), len(data))
	}
}

// Writes return before the reader takes their bytes, up to the queue:
// what lets a caller's reads overlap the chunking.
func TestFeedWritesAhead(t *testing.T) {
	f := testFeed()
	done := make(chan error)
	go func() {
		_, err := f.Write(make([]byte, feedQueue*feedBlock+feedBlock/2))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write waited for a reader with room in the queue")
	}
}

// A failure unblocks a Write waiting for room and a Read waiting for
// bytes, and both return it from then on, even with blocks still queued.
func TestFeedFail(t *testing.T) {
	boom := errors.New("boom")
	f := testFeed()
	written := make(chan error)
	go func() {
		_, err := f.Write(make([]byte, (feedQueue+2)*feedBlock)) // more than the queue holds
		written <- err
	}()
	time.Sleep(10 * time.Millisecond)
	f.fail(boom)
	if err := <-written; !errors.Is(err, boom) {
		t.Fatalf("blocked Write returned %v, want the failure", err)
	}
	if _, err := f.Read(make([]byte, 10)); !errors.Is(err, boom) {
		t.Fatalf("Read after the failure returned %v, want it", err)
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, boom) {
		t.Fatalf("Write after the failure returned %v, want it", err)
	}

	g := testFeed()
	read := make(chan error)
	go func() {
		_, err := g.Read(make([]byte, 10))
		read <- err
	}()
	time.Sleep(10 * time.Millisecond)
	g.fail(boom)
	if err := <-read; !errors.Is(err, boom) {
		t.Fatalf("blocked Read returned %v, want the failure", err)
	}
}
