package local

import (
	"os"
	"sync"
)

// packFiles keeps the files of the packs read last open for their next
// reads. A restore of deltas reads each delta's base, mostly from another
// pack than the delta's, and opening a file costs about as much as reading
// a chunk from the page cache (kept open, a restore of deltas ran 10 %
// faster). Only packs are kept: their names are never written again (each
// pack has a name of its own, see chunkstore.PackName), so an open file
// holds the pack's bytes for as long as it stays open. A file whose read
// fails is dropped, so that the next read opens the name afresh (on NFS, a
// pack another host deleted fails with ESTALE through an old file, and
// with ErrNotExist when opened).
type packFiles struct {
	mu    sync.Mutex
	files map[string]*packFile // by path
	clock uint64
}

type packFile struct {
	path    string
	f       *os.File
	readers int    // range readers not yet closed
	used    uint64 // packFiles.clock at the last open
	dropped bool   // no longer in files: closed once readers is 0
}

// keptPackFiles bounds the pack files kept open.
const keptPackFiles = 16

// open returns the open file of the pack at path, for one reader, who
// calls release when done.
func (o *packFiles) open(path string) (*packFile, error) {
	if pf := o.take(path, nil); pf != nil {
		return pf, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return o.take(path, f), nil
}

// take returns the kept file of path for one more reader; if there is
// none, it keeps f (if not nil) and returns it, and else returns nil. An f
// not kept is closed.
func (o *packFiles) take(path string, f *os.File) *packFile {
	o.mu.Lock()
	defer o.mu.Unlock()
	pf := o.files[path]
	switch {
	case pf != nil:
		if f != nil {
			f.Close() // another reader opened it meanwhile
		}
	case f == nil:
		return nil
	default:
		if o.files == nil {
			o.files = map[string]*packFile{}
		}
		pf = &packFile{path: path, f: f}
		o.files[path] = pf
	}
	o.clock++
	pf.used, pf.readers = o.clock, pf.readers+1
	if len(o.files) > keptPackFiles {
		var oldest *packFile
		for _, c := range o.files {
			if oldest == nil || c.used < oldest.used {
				oldest = c
			}
		}
		o.dropLocked(oldest)
	}
	return pf
}

// release ends a reader's use of pf; failed drops it.
func (o *packFiles) release(pf *packFile, failed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	pf.readers--
	switch {
	case pf.dropped && pf.readers == 0:
		pf.f.Close()
	case !pf.dropped && failed:
		o.dropLocked(pf)
	}
}

// drop stops keeping the file of path, if it is kept: Delete drops it.
func (o *packFiles) drop(path string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if pf := o.files[path]; pf != nil {
		o.dropLocked(pf)
	}
}

// closeAll stops keeping every file.
func (o *packFiles) closeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, pf := range o.files {
		o.dropLocked(pf)
	}
}

// dropLocked stops keeping pf, and closes it unless it has readers, the
// last of whom then closes it.
func (o *packFiles) dropLocked(pf *packFile) {
	delete(o.files, pf.path)
	pf.dropped = true
	if pf.readers == 0 {
		pf.f.Close()
	}
}
