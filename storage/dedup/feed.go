package dedup

import (
	"io"
	"sync"
)

// feed carries a writer's bytes from the caller's Write to its chunking
// goroutine, as io.Pipe would, but with a few blocks of room between them:
// Write copies into a block and returns, so that the caller's next read
// (of a file, a socket, stdin) overlaps the chunking of what it wrote
// before. Through io.Pipe every Write waits until the chunker takes its
// bytes, and the chunker waits for every read of the caller: the two run
// one after the other, on one core.
//
// A feed holds at most feedQueue blocks queued, one being filled and one
// being read: (feedQueue+2) × its block size. Write and Close belong to one
// goroutine, Read to another; fail may be called from any.
type feed struct {
	blocks *sync.Pool    // *[]byte of the block size
	queue  chan []byte   // filled blocks, in order; closed by Close
	done   chan struct{} // closed by fail
	once   sync.Once
	err    error // why the feed failed; set before done is closed

	fill []byte // the block Write fills; Write's goroutine owns it
	held []byte // the block Read took; Read's goroutine owns it
	read []byte // what Read has left of held
}

// feedQueue is how many filled blocks a feed holds for its reader, and
// feedBlock the size of a block: a writer's feed holds at most 1 MiB.
const (
	feedQueue = 2
	feedBlock = 256 << 10
)

func newFeed(blocks *sync.Pool) *feed {
	return &feed{blocks: blocks, queue: make(chan []byte, feedQueue), done: make(chan struct{})}
}

// Write copies p into blocks, handing each full one to the reader. It
// fails, having written some of p or none, once the feed failed.
func (f *feed) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if f.failed() {
			return n, f.err
		}
		if f.fill == nil {
			f.fill = (*f.blocks.Get().(*[]byte))[:0]
		}
		c := copy(f.fill[len(f.fill):cap(f.fill)], p)
		f.fill = f.fill[:len(f.fill)+c]
		n += c
		p = p[c:]
		if len(f.fill) == cap(f.fill) {
			if err := f.send(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// send queues the block being filled.
func (f *feed) send() error {
	select {
	case f.queue <- f.fill:
		f.fill = nil
		return nil
	case <-f.done:
		return f.err
	}
}

// Close queues what was written last and ends the stream: the reader
// reads io.EOF after it. Write must not be called after Close.
func (f *feed) Close() error {
	if len(f.fill) > 0 {
		if err := f.send(); err != nil {
			return err
		}
	}
	close(f.queue)
	return nil
}

// Read reads what was written, in order, then io.EOF once Close was
// called, or the feed's error once it failed.
func (f *feed) Read(p []byte) (int, error) {
	if len(f.read) == 0 {
		f.release()
		select {
		case b, ok := <-f.queue:
			if !ok {
				return 0, io.EOF
			}
			f.held, f.read = b, b
		case <-f.done:
			return 0, f.err
		}
		if f.failed() { // both were ready: failure wins
			return 0, f.err
		}
	}
	n := copy(p, f.read)
	f.read = f.read[n:]
	return n, nil
}

// release gives the block Read finished back to the pool.
func (f *feed) release() {
	if f.held != nil {
		b := f.held[:0]
		f.blocks.Put(&b)
		f.held = nil
	}
}

// fail ends the feed with err: Write and Read return it from then on. The
// first failure is kept.
func (f *feed) fail(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.done)
	})
}

func (f *feed) failed() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}
