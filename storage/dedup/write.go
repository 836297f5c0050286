package dedup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/dedupstore/dedupstore/chunkstore"
	"github.com/dedupstore/dedupstore/index"
	"github.com/dedupstore/dedupstore/storage"
)

// The write path. Each writer runs one goroutine that cuts its stream into
// chunks and hands them, in order, to the worker pool; workers hash each
// chunk, look it up, and compress and pack only the new ones; the uploader
// writes sealed packs and indexes them. A writer keeps the chunk list of its
// file in order and stores it segment by segment; Close stages the file,
// and the backup's end commits it once the packs it needs are durable.

// job is one chunk on its way through a worker.
type job struct {
	data []byte // the plain chunk, in a buffer from chunkBufs
	buf  *[]byte
	done chan struct{}
	// Set by the worker before done is closed:
	ref  index.Ref
	pack *pack // the pending pack holding the chunk, nil if already indexed
	err  error
}

// encoder is what a worker compresses a new chunk with. There are fewer
// encoders than workers (see Options.Workers): a worker takes one only for
// a chunk the repository does not have, so that workers waiting on a pack
// or a lock leave the cores to the others without each holding buffers
// and a delta encoder.
type encoder struct {
	scratch []byte
	// Unless the repository makes deltas, delta is nil and the rest unset.
	delta        *chunkstore.DeltaEncoder
	deltaScratch []byte
	bases        [][]byte // deltaBases buffers for the bases' plain bytes
}

func (r *repo) newEncoder() *encoder {
	cfg := r.store.Config()
	size := cfg.Chunker.MaxSize + cfg.Chunker.MaxSize/8 + 1024
	e := &encoder{scratch: make([]byte, 0, size)}
	if cfg.Deltas {
		var err error
		if e.delta, err = chunkstore.NewDeltaEncoder(cfg.Compression.DeltaLevel(), cfg.Chunker.MaxSize, deltaBases); err != nil {
			panic(err) // unreachable: the config validated its level
		}
		e.deltaScratch = make([]byte, 0, size)
		for range deltaBases {
			e.bases = append(e.bases, make([]byte, 0, cfg.Chunker.MaxSize))
		}
	}
	return e
}

// takeEncoder waits for a free encoder, made on first use.
func (r *repo) takeEncoder() (*encoder, error) {
	select {
	case e := <-r.encoders:
		if e == nil {
			e = r.newEncoder()
		}
		return e, nil
	case <-r.ctx.Done():
		return nil, r.alive()
	}
}

// closeEncoders closes the encoders once no worker runs.
func (r *repo) closeEncoders() {
	for range cap(r.encoders) {
		if e := <-r.encoders; e != nil && e.delta != nil {
			e.delta.Close()
		}
	}
}

func (r *repo) worker() {
	defer r.workers.Done()
	for {
		select {
		case j := <-r.jobs:
			j.err = r.ingest(j)
			r.chunkBufs.Put(j.buf)
			<-r.slots
			close(j.done)
		case <-r.ctx.Done():
			return
		}
	}
}

// ingest names a chunk and, unless the repository already has it, compresses
// it into the current pack. The lookup is repeated after compressing, so
// that two workers given the same new chunk at once store it once.
func (r *repo) ingest(j *job) error {
	id := r.store.Hash(j.data)
	j.ref = index.Ref{ID: id, Length: uint32(len(j.data))}
	r.mu.Lock()
	p, known, err := r.lookupLocked(id)
	if known {
		r.claimLocked(id)
	}
	r.mu.Unlock()
	if err != nil || known {
		j.pack = p
		return err
	}

	ws, err := r.takeEncoder()
	if err != nil {
		return err
	}
	defer func() { r.encoders <- ws }() // after Add copied enc out of ws
	enc, bases := r.encode(ws, id, j.data)
	r.mu.Lock()
	for {
		if p, known, err := r.lookupLocked(id); err != nil || known {
			if known {
				r.claimLocked(id)
			}
			r.mu.Unlock()
			j.pack = p
			return err
		}
		if bases != nil {
			ok, err := r.claimBasesLocked(bases)
			if err != nil {
				r.mu.Unlock()
				return err
			}
			if !ok { // a base went meanwhile: store the chunk whole
				r.mu.Unlock()
				enc, bases = r.encodeWhole(ws, id, j.data, chunkstore.Features(j.data, chunkstore.DeltaFeatures)), nil
				r.mu.Lock()
				continue
			}
		}
		if r.cur != nil {
			break
		}
		// Wait for a free pack builder without holding the lock, then
		// look again: another worker may have stored the chunk meanwhile.
		r.releaseLocked(bases) // claimed again, if still usable
		r.mu.Unlock()
		b, err := r.takeBuilder()
		if err != nil {
			return err
		}
		r.mu.Lock()
		if r.cur == nil {
			r.cur = &pack{b: b, done: make(chan struct{})}
		} else {
			r.builders <- b
		}
	}
	p = r.cur
	p.b.Add(enc)
	r.pending[id] = p
	r.claimLocked(id)
	j.pack = p
	full := p.b.Len() >= r.store.Config().PackSize
	r.mu.Unlock()
	if full {
		return r.seal(p)
	}
	return nil
}

// takeBuilder waits for a free pack builder: the bound on packs in memory.
func (r *repo) takeBuilder() (*chunkstore.PackBuilder, error) {
	select {
	case b := <-r.builders:
		if b == nil {
			cfg := r.store.Config()
			b = chunkstore.NewPackBuilder(cfg.PackSize + cfg.Chunker.MaxSize + int(chunkstore.PackOverhead(cfg.PackSize/cfg.Chunker.MinSize+1, r.store.Cipher())))
		}
		return b, nil
	case <-r.ctx.Done():
		return nil, r.alive()
	}
}

// lookupLocked reports whether the repository has chunk id for a writer to
// deduplicate against: pending in pack p, or indexed (p nil) and usable. The caller holds r.mu, so the answer cannot change
// between a pack's indexing and its chunks leaving the pending set.
func (r *repo) lookupLocked(id chunkstore.ID) (p *pack, known bool, err error) {
	if p, ok := r.pending[id]; ok {
		return p, true, nil
	}
	known, err = r.idx.Usable(id)
	return nil, known, err
}

// seal hands p to the uploader if it is still being filled: when it is
// full, and when a writer closing needs its chunks durable. Whoever seals
// first sends it; the others find it already gone.
func (r *repo) seal(p *pack) error {
	r.mu.Lock()
	open := r.cur == p
	if open {
		r.cur = nil
	}
	r.mu.Unlock()
	if open {
		return r.sendUpload(p)
	}
	return nil
}

func (r *repo) sendUpload(p *pack) error {
	select {
	case r.uploads <- p:
		return nil
	case <-r.ctx.Done():
		return r.alive()
	}
}

// uploader writes sealed packs one at a time: pack durable, then indexed,
// then its chunks leave the pending set.
func (r *repo) uploader() {
	defer r.workers.Done()
	for {
		select {
		case p := <-r.uploads:
			r.upload(p)
		case <-r.ctx.Done():
			return
		}
	}
}

func (r *repo) upload(p *pack) {
	n := p.b.Count()
	id, entries, size, err := r.store.WritePack(r.ctx, p.b)
	if err == nil {
		err = r.idx.AddPack(index.Pack{ID: id, Size: size, Chunks: n, Created: time.Now()}, entries)
	}
	// Indexed or failed, the chunks leave the pending set: a failed pack's
	// chunks are stored again by the next writer that meets them. The
	// index holds its deltas' bases now: their claims end.
	r.mu.Lock()
	for _, e := range p.b.Entries() {
		if r.pending[e.ID] == p {
			delete(r.pending, e.ID)
		}
		r.releaseLocked(e.Bases)
	}
	r.mu.Unlock()
	p.b.Reset()
	r.builders <- p.b
	p.b = nil
	p.err = err
	close(p.done)
}

// writer is the io.WriteCloser AddFile returns.
type writer struct {
	r         *repo
	ctx       context.Context
	dir, name string
	file      string
	in        *feed // the caller's bytes, on their way to chunkLoop
	loopDone  chan struct{}
	stop      func() bool // unregisters the context watch
	closed    bool
	close     func() error // the first Close's result, for every Close
	lease     *lease       // held until Close

	// Owned by the chunking goroutine until loopDone is closed:
	list   index.ListID // 0 until the first full segment is stored
	seg    uint32
	refs   []index.Ref // the current segment
	size   int64
	chunks int64
	deps   []*pack // packs the file's chunks wait in
	err    error
}

func (r *repo) newWriter(ctx context.Context, dir, name, file string) (*writer, error) {
	l, err := r.holdLease(ctx)
	if err != nil {
		return nil, asStorageErr(err)
	}
	in := newFeed(&r.feedBlocks)
	w := &writer{r: r, ctx: ctx, dir: dir, name: name, file: file, in: in, loopDone: make(chan struct{}), lease: l}
	w.close = sync.OnceValue(w.end)
	// Cancelling the caller's context or closing the repository fails the
	// stream at once, even while the chunker waits for input.
	wctx, cancel := context.WithCancelCause(ctx)
	stopRepo := context.AfterFunc(r.ctx, func() { cancel(fmt.Errorf("dedup: %w", storage.ErrClosed)) })
	stopCtx := context.AfterFunc(wctx, func() { in.fail(context.Cause(wctx)) })
	w.stop = func() bool { stopRepo(); stopCtx(); cancel(nil); return true }
	w.ctx = wctx
	r.writers.Add(1)
	go w.chunkLoop()
	return w, nil
}

func (w *writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errors.New("dedup: write to a closed file")
	}
	return w.in.Write(p)
}

// Close ends the file. It returns nil once the file is complete and its
// chunks are handed to the store: the file is staged, and the backup's end
// makes it durable and part of the backup (see stage.go). A file closed
// after its backup ended is committed before Close returns, and rewrites
// the manifest. Close again returns what the first Close returned, at once:
// a failed file stays failed (Vitess retries a failed Close 20 times).
func (w *writer) Close() error { return w.close() }

func (w *writer) end() error {
	w.closed = true
	w.in.Close()
	<-w.loopDone
	defer w.stop()
	defer w.r.releaseLease(w.lease)
	err := w.err
	if err == nil {
		err = context.Cause(w.ctx) // cancelled before Close: the file fails
	}
	if err == nil {
		err = w.finish()
	}
	if err != nil {
		w.r.release(w.refs)
		if w.list != 0 {
			w.r.idx.DropList(w.list)
		}
		return fmt.Errorf("dedup: %s/%s: file %s: %w", w.dir, w.name, w.file, err)
	}
	return nil
}

// finish stages the file, or commits it if the backup has ended. Staged,
// its last segment's claims pass to the stage.
func (w *writer) finish() error {
	f := stagedFile{
		commit: index.Commit{File: index.File{Name: w.file, List: w.list, Size: w.size, Chunks: w.chunks}, Last: index.Segment{Seq: w.seg, Refs: w.refs}},
		deps:   w.deps,
	}
	l := w.r.backupLock(w.dir, w.name)
	l.Lock()
	b, found, err := w.r.idx.Backup(w.dir, w.name)
	if err == nil && !found {
		err = storage.ErrAborted
	}
	if err != nil {
		l.Unlock()
		return err
	}
	if b.State != index.Ended {
		w.r.stageFile(w.dir, w.name, f)
		l.Unlock()
		w.refs, w.list = nil, 0 // the stage holds them now
		return nil
	}
	l.Unlock()
	return w.commit(f)
}

// commit makes the file part of an ended backup once every chunk of it is
// indexed, storing the last segment of its list in the same transaction,
// and rewrites the manifest.
func (w *writer) commit(f stagedFile) error {
	for _, p := range f.deps {
		if err := w.r.seal(p); err != nil {
			return err
		}
	}
	if _, err := w.r.packsDone(w.ctx, f.deps, true); err != nil {
		return err
	}
	found, err := w.r.idx.CommitFiles(w.dir, w.name, []index.Commit{f.commit})
	if err != nil {
		return err
	}
	if !found {
		return storage.ErrAborted
	}
	w.r.release(w.refs)
	w.refs, w.list = nil, 0
	return w.r.endBackup(w.ctx, w.dir, w.name, w.lease)
}

// chunkLoop runs the writer's goroutine. On failure it fails the feed with
// the error, so the caller's next Write returns it.
func (w *writer) chunkLoop() {
	defer w.r.writers.Done()
	defer close(w.loopDone)
	buf := w.r.chunkerBufs.Get().(*[]byte)
	defer w.r.chunkerBufs.Put(buf)
	w.err = w.run(w.in, *buf)
	if w.err != nil {
		w.in.fail(w.err)
	}
}

// run cuts the stream into chunks, feeds them to the workers and collects
// their results in order. A writer keeps at most half of ChunksInFlight in
// flight, so that one stream cannot starve the others.
func (w *writer) run(pr io.Reader, buf []byte) error {
	r := w.r
	c, err := r.store.NewChunker(pr, buf)
	if err != nil {
		return err
	}
	maxOwn := max(1, r.opts.ChunksInFlight/2)
	var inflight []*job
	var firstErr error
	collect := func() {
		j := inflight[0]
		inflight = inflight[1:]
		<-j.done
		switch {
		case j.err != nil:
			firstErr = cmp.Or(firstErr, j.err)
		case firstErr != nil:
			r.release([]index.Ref{j.ref})
		default:
			firstErr = w.add(j)
		}
	}
	for firstErr == nil {
		data, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil { // a cancelled stream's feed fails with its cause
			firstErr = err
			break
		}
		select {
		case r.slots <- struct{}{}:
		case <-w.ctx.Done():
			firstErr = context.Cause(w.ctx)
			continue
		}
		b := r.chunkBufs.Get().(*[]byte)
		j := &job{data: append((*b)[:0], data...), buf: b, done: make(chan struct{})}
		select {
		case r.jobs <- j:
			inflight = append(inflight, j)
		case <-w.ctx.Done():
			r.chunkBufs.Put(b)
			<-r.slots
			firstErr = context.Cause(w.ctx)
			continue
		}
		for len(inflight) > 0 && (len(inflight) >= maxOwn || isClosed(inflight[0].done)) {
			collect()
		}
	}
	for len(inflight) > 0 {
		collect()
	}
	if firstErr != nil {
		r.release(w.refs)
		w.refs = nil
	}
	return firstErr
}

// saveSegment stores the current segment of the file's chunk list; from
// then on GC's marking sees its chunks, and the writer's claims on them end.
func (w *writer) saveSegment() error {
	list, err := w.r.idx.PutSegment(w.list, index.Segment{Seq: w.seg, Refs: w.refs})
	if err != nil {
		return err
	}
	w.list = list
	w.r.release(w.refs)
	w.seg++
	w.refs = w.refs[:0]
	return nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// add appends a finished chunk to the file's list, storing each full segment.
func (w *writer) add(j *job) error {
	w.refs = append(w.refs, j.ref)
	w.size += int64(j.ref.Length)
	w.chunks++
	if j.pack != nil && (len(w.deps) == 0 || w.deps[len(w.deps)-1] != j.pack) {
		if err := w.pruneDeps(); err != nil {
			return err
		}
		w.deps = append(w.deps, j.pack)
	}
	if len(w.refs) == index.SegmentRefs {
		return w.saveSegment()
	}
	return nil
}

// pruneDeps forgets packs already written, so that deps stays short however
// long the stream, and fails early if one of them failed.
func (w *writer) pruneDeps() error {
	if len(w.deps) < 64 {
		return nil
	}
	kept := w.deps[:0]
	for _, p := range w.deps {
		if !isClosed(p.done) {
			kept = append(kept, p)
		} else if p.err != nil {
			return p.err
		}
	}
	w.deps = kept
	return nil
}
