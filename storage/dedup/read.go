package dedup

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/storage"
)

// maxReadAhead bounds the chunks one reader fetches ahead of its consumer.
const maxReadAhead = 8

// reader streams a file's chunks in order. It fetches ahead in goroutines:
// the next chunk always, up to maxReadAhead more while the repository's read
// slots allow. Every chunk is verified against its ID before a byte of it is
// returned.
type reader struct {
	r      *repo
	h      *handle
	file   index.File
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool

	seg   uint32
	refs  []index.Ref // the current segment
	next  int         // refs[next] is the next chunk to fetch
	last  bool        // no segment after the current one
	queue []*fetch    // fetches in file order
	cur   *fetch      // the chunk being returned
	off   int
	err   error
}

type fetch struct {
	ref  index.Ref
	done chan struct{}
	buf  *[]byte
	data []byte
	slot bool // holds a read slot
	err  error
}

func (r *repo) newReader(ctx context.Context, h *handle, f index.File) *reader {
	rctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(r.ctx, cancel)
	return &reader{r: r, h: h, file: f, ctx: rctx, cancel: cancel, stop: stop}
}

func (rd *reader) Read(p []byte) (int, error) {
	for rd.err == nil {
		if rd.cur != nil && rd.off < len(rd.cur.data) {
			n := copy(p, rd.cur.data[rd.off:])
			rd.off += n
			return n, nil
		}
		rd.release(rd.cur)
		rd.cur = nil
		if err := rd.fill(); err != nil {
			rd.err = err
			break
		}
		if len(rd.queue) == 0 {
			rd.err = io.EOF
			break
		}
		rd.cur, rd.queue = rd.queue[0], rd.queue[1:]
		rd.off = 0
		select {
		case <-rd.cur.done:
			if rd.cur.err != nil {
				rd.err = rd.cur.err
			}
		case <-rd.ctx.Done():
			rd.err = rd.ctxErr()
		}
		if err := rd.fill(); err != nil && rd.err == nil {
			rd.err = err
		}
	}
	return 0, rd.err
}

func (rd *reader) ctxErr() error {
	if rd.r.ctx.Err() != nil {
		return fmt.Errorf("dedup: %w", storage.ErrClosed)
	}
	return rd.ctx.Err()
}

// fill starts fetches until the read-ahead is full or the file's chunks are
// all started.
func (rd *reader) fill() error {
	for {
		if rd.next == len(rd.refs) {
			if rd.last {
				return nil
			}
			if err := rd.loadSegment(); err != nil {
				return err
			}
			continue
		}
		f := &fetch{ref: rd.refs[rd.next], done: make(chan struct{})}
		if len(rd.queue) > 0 || rd.cur != nil {
			if len(rd.queue) >= maxReadAhead {
				return nil
			}
			select {
			case rd.r.readSlots <- struct{}{}:
				f.slot = true
			default:
				return nil
			}
		}
		rd.next++
		rd.queue = append(rd.queue, f)
		go rd.r.load(rd.ctx, f)
	}
}

func (rd *reader) loadSegment() error {
	refs, found, err := rd.r.idx.Segment(rd.file.List, rd.seg, rd.refs[:0])
	if err != nil {
		return asStorageErr(err)
	}
	if !found && rd.seg*index.SegmentRefs < uint32(rd.file.Chunks) {
		return fmt.Errorf("dedup: %s/%s: file %s: chunk list ends early (backup removed?): %w", rd.h.dir, rd.h.name, rd.file.Name, storage.ErrNotFound)
	}
	rd.refs, rd.next, rd.last = refs, 0, !found || len(refs) < index.SegmentRefs
	rd.seg++
	return nil
}

// load fetches and verifies one chunk.
func (r *repo) load(ctx context.Context, f *fetch) {
	defer close(f.done)
	synced := r.syncs.Load()
	loc, found, err := r.idx.Lookup(f.ref.ID)
	if err == nil && !found {
		err = fmt.Errorf("dedup: chunk %s is not in the index: %w", f.ref.ID, chunkstore.ErrCorrupt)
	}
	if err != nil {
		f.err = asStorageErr(err)
		return
	}
	scratch := r.chunkBufs.Get().(*[]byte)
	defer r.chunkBufs.Put(scratch)
	f.buf = r.chunkBufs.Get().(*[]byte)
	f.data, f.err = r.store.LoadChunk(ctx, f.ref.ID, loc, *scratch, *f.buf)
	if f.err != nil && ctx.Err() == nil {
		// A collection may have moved the chunk since it was looked up:
		// on a shared repository, one the index has not heard of yet.
		if r.opts.Shared {
			if err := r.syncAfter(ctx, synced); err != nil {
				f.err = err
			}
		}
		if moved, found, err := r.idx.Lookup(f.ref.ID); err == nil && found && moved != loc {
			f.data, f.err = r.store.LoadChunk(ctx, f.ref.ID, moved, *scratch, *f.buf)
		}
	}
	if f.err == nil && len(f.data) != int(f.ref.Length) {
		f.err = fmt.Errorf("dedup: chunk %s has %d bytes, the file lists %d: %w", f.ref.ID, len(f.data), f.ref.Length, chunkstore.ErrCorrupt)
	}
	f.err = asStorageErr(f.err)
}

func (rd *reader) release(f *fetch) {
	if f == nil {
		return
	}
	<-f.done
	if f.buf != nil {
		rd.r.chunkBufs.Put(f.buf)
		f.buf, f.data = nil, nil
	}
	if f.slot {
		<-rd.r.readSlots
		f.slot = false
	}
}

// Close stops the read-ahead and releases its buffers.
func (rd *reader) Close() error {
	if errors.Is(rd.err, errReaderClosed) {
		return nil
	}
	rd.cancel()
	rd.release(rd.cur)
	for _, f := range rd.queue {
		rd.release(f)
	}
	rd.cur, rd.queue, rd.err = nil, nil, errReaderClosed
	rd.stop()
	return nil
}

var errReaderClosed = errors.New("dedup: read from a closed file")
