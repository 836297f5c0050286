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

// maxReadAhead bounds the fetches one reader runs ahead of its consumer.
const maxReadAhead = 8

// runBytes bounds the plain bytes of one fetch: consecutive chunks of a
// file stored back to back in one pack, as a first backup stores them, are
// read with one request, which matters on object storage.
const runBytes = 1 << 20

// reader streams a file's chunks in order. It fetches ahead in goroutines:
// the next run of chunks always, up to maxReadAhead more while the
// repository's read slots allow. Every chunk is verified against its ID
// before a byte of it is returned.
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
	cur   *fetch      // the run being returned
	part  int         // cur.parts[part] is the chunk being returned
	off   int
	err   error
}

// fetch loads a run of chunks, stored back to back in one pack as far as
// the index knew when the run was planned.
type fetch struct {
	refs  []index.Ref
	locs  []chunkstore.Location // as looked up; shorter than refs if a lookup failed
	done  chan struct{}
	buf   *[]byte  // from runBufs: the plain chunks
	parts [][]byte // each chunk's plain bytes, in buf
	slot  bool     // holds a read slot
	err   error
}

func (r *repo) newReader(ctx context.Context, h *handle, f index.File) *reader {
	rctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(r.ctx, cancel)
	return &reader{r: r, h: h, file: f, ctx: rctx, cancel: cancel, stop: stop}
}

func (rd *reader) Read(p []byte) (int, error) {
	for rd.err == nil {
		if rd.cur != nil && rd.part < len(rd.cur.parts) {
			if d := rd.cur.parts[rd.part]; rd.off < len(d) {
				n := copy(p, d[rd.off:])
				rd.off += n
				return n, nil
			}
			rd.part, rd.off = rd.part+1, 0
			continue
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
		rd.part, rd.off = 0, 0
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
		if len(rd.queue) > 0 || rd.cur != nil {
			if len(rd.queue) >= maxReadAhead {
				return nil
			}
			select {
			case rd.r.readSlots <- struct{}{}:
			default:
				return nil
			}
		}
		f := rd.planRun()
		f.slot = len(rd.queue) > 0 || rd.cur != nil
		rd.next += len(f.refs)
		rd.queue = append(rd.queue, f)
		go rd.r.load(rd.ctx, f)
	}
}

// planRun looks up the chunks from refs[next] on while they follow each
// other in one pack, up to runBytes.
func (rd *reader) planRun() *fetch {
	f := &fetch{done: make(chan struct{})}
	var plain uint32
	for _, ref := range rd.refs[rd.next:] {
		loc, found, err := rd.r.idx.Lookup(ref.ID)
		if n := len(f.locs); n > 0 && (err != nil || !found || !chunkstore.Follows(f.locs[n-1], loc) || plain+loc.PlainLength > runBytes) {
			break
		}
		f.refs = append(f.refs, ref)
		if err != nil || !found {
			break // load looks again, and reports it
		}
		f.locs = append(f.locs, loc)
		plain += loc.PlainLength
	}
	return f
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

// load fetches and verifies a run of chunks with one read. If that fails,
// it loads them one by one, looking each up again: a collection may have
// moved them (one of another process, that the index has not heard of yet).
func (r *repo) load(ctx context.Context, f *fetch) {
	defer close(f.done)
	synced := r.syncs.Load()
	scratch := r.runBufs.Get().(*[]byte)
	defer r.runBufs.Put(scratch)
	f.buf = r.runBufs.Get().(*[]byte)
	f.err = errors.New("chunk not in the index")
	if len(f.locs) == len(f.refs) {
		ids := make([]chunkstore.ID, len(f.refs))
		for i, ref := range f.refs {
			ids[i] = ref.ID
		}
		f.parts, f.err = r.store.LoadChunks(ctx, ids, f.locs, *scratch, *f.buf)
	}
	if f.err != nil && ctx.Err() == nil {
		// Best effort: a sync that fails leaves the index as it was, and
		// the chunks may still load from where it puts them.
		r.syncAfter(ctx, synced)
		f.parts, f.err = r.loadEach(ctx, f.refs, *scratch, *f.buf)
	}
	for i, part := range f.parts {
		if f.err == nil && len(part) != int(f.refs[i].Length) {
			f.err = fmt.Errorf("dedup: chunk %s has %d bytes, the file lists %d: %w", f.refs[i].ID, len(part), f.refs[i].Length, chunkstore.ErrCorrupt)
		}
	}
	f.err = asStorageErr(f.err)
}

// loadEach looks up and loads chunks one at a time, into buf one after
// the other. A chunk that fails to load from where the index locates it is
// loaded from its other copies, if it has any.
func (r *repo) loadEach(ctx context.Context, refs []index.Ref, scratch, buf []byte) ([][]byte, error) {
	parts := make([][]byte, len(refs))
	rest := buf[:0]
	for i, ref := range refs {
		locs, err := r.idx.Locations(ref.ID)
		if err == nil && len(locs) == 0 {
			err = fmt.Errorf("dedup: chunk %s is not in the index: %w", ref.ID, chunkstore.ErrCorrupt)
		}
		for j, loc := range locs {
			var lerr error
			if parts[i], lerr = r.store.LoadChunk(ctx, ref.ID, loc, scratch, rest); lerr == nil || ctx.Err() != nil {
				err = lerr
				break
			}
			if j == 0 {
				err = lerr // report the first copy's failure if none loads
			}
		}
		if err != nil {
			return nil, err
		}
		rest = rest[:cap(rest)]
		rest = rest[min(len(parts[i]), len(rest)):][:0]
	}
	return parts, nil
}

func (rd *reader) release(f *fetch) {
	if f == nil {
		return
	}
	<-f.done
	if f.buf != nil {
		rd.r.runBufs.Put(f.buf)
		f.buf, f.parts = nil, nil
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
