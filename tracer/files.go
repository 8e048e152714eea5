package tracer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/procmaps"
)

// mappedFile is the file behind one mapping, opened and parsed at most once
// for all that read it while the mapping is synced: identification, the
// unwind table (with the debug file) and interpreter detection. It is
// opened on first use and closed by close. It belongs to one worker at a
// time.
type mappedFile struct {
	t    *Tracer
	fs   procFS
	proc *process
	m    *mapping
	// fi is the file's identity, once known.
	fi *fileInfo

	opened  bool
	fh      *os.File
	openErr error

	parsed bool
	ef     *elffile.File
	elfErr error
}

func (t *Tracer) mappedFile(fs procFS, proc *process, m *mapping) *mappedFile {
	return &mappedFile{t: t, fs: fs, proc: proc, m: m}
}

// file returns the open file.
func (mf *mappedFile) file() (*os.File, error) {
	if !mf.opened {
		mf.opened = true
		mf.fh, mf.openErr = mf.fs.openMapped(mf.proc.pid, mf.m)
	}
	return mf.fh, mf.openErr
}

// size returns the file's size, or 0 when it cannot be opened.
func (mf *mappedFile) size() int64 {
	fh, err := mf.file()
	if err != nil {
		return 0
	}
	st, err := fh.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}

// elf returns the file's ELF headers, build IDs and debug file.
func (mf *mappedFile) elf() (*elffile.File, error) {
	if mf.parsed {
		return mf.ef, mf.elfErr
	}
	mf.parsed = true
	fh, err := mf.file()
	if err != nil {
		mf.elfErr = err
		return nil, err
	}
	mf.ef, mf.elfErr = elffile.NewFile(fh, mf.t.source(mf.proc, mf.m, nil))
	if mf.elfErr != nil {
		mf.elfErr = fmt.Errorf("%s: %w", mf.m.path, mf.elfErr)
	}
	return mf.ef, mf.elfErr
}

// debug returns the file's separate debug file, or nil. A debug file that
// exists but cannot be used is counted and logged: this is called once per
// file, when its unwind table is built.
func (mf *mappedFile) debug() *elffile.File {
	ef, err := mf.elf()
	if err != nil {
		return nil
	}
	dbg, err := ef.Debug()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		mf.t.stats.debugFileErrors.Add(1)
		mf.t.log.Warn("debug file not used: frames in this file may lack names or unwind rules it has",
			"pid", mf.proc.pid, "path", mf.m.path, "error", err)
	}
	return dbg
}

// close closes the file, and its debug file, when they were opened.
func (mf *mappedFile) close() {
	switch {
	case mf.ef != nil:
		mf.ef.Close()
	case mf.fh != nil:
		mf.fh.Close()
	}
}

// identify hashes the file behind a mapping and reads its build IDs.
func (t *Tracer) identify(mf *mappedFile) (*fileInfo, error) {
	fh, err := mf.file()
	if err != nil {
		return nil, err
	}
	id, err := elffile.IDOf(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mf.m.path, err)
	}
	fi := &fileInfo{id: id}
	fi.path = procmaps.TrimDeleted(mf.m.path)
	fi.exec.FileName = filepath.Base(fi.path)
	// A file that is not ELF is identified all the same, without build
	// IDs.
	if ef, err := mf.elf(); err == nil {
		ids := ef.BuildIDs()
		fi.isGo = ef.IsGo()
		fi.exec.GNUBuildID, fi.exec.GoBuildID = ids.GNU, ids.Go
	}
	return fi, nil
}

// source tells the symbolizer how to reach a mapped file and its debug
// files the way the process sees them: the file through map_files, debug
// files under the process's root, so containers get their own. fi, when
// not nil, gives where the debug file was found before, and the identity
// the file must have when the process is gone (it lived a few
// milliseconds): then the file the sync worker held open since it
// identified it is used, else the same path is opened in the initial
// mount namespace, and used only if it is the same file.
func (t *Tracer) source(proc *process, m *mapping, fi *fileInfo) elffile.Source {
	path := procmaps.TrimDeleted(m.path)
	src := elffile.Source{
		Open: func() (*os.File, error) {
			f, err := t.proc.openMapped(proc.pid, m)
			if err == nil || fi == nil || !isNotExist(err) {
				return f, err
			}
			if f, err := t.held.open(fi.id); err == nil {
				return f, nil
			}
			f, err2 := t.openSame(fi.id, path)
			if err2 != nil {
				return nil, fmt.Errorf("%w; %w", err, err2)
			}
			return f, nil
		},
		Root: t.proc.path(proc.pid, "root"),
		Path: path,
	}
	if fi != nil {
		src.DebugPath = fi.debugPath
	}
	return src
}

// openSame opens path in the initial mount namespace (through the root of
// pid 1) and returns it if its identity is id.
func (t *Tracer) openSame(id trace.FileID, path string) (*os.File, error) {
	f, err := os.Open(t.proc.path(1, "root", path))
	if err != nil {
		return nil, err
	}
	got, err := elffile.IDOf(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if got != id {
		f.Close()
		return nil, fmt.Errorf("%s is not the file the process mapped: %w", path, fs.ErrNotExist)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Bounds of the files kept open for their symbols.
const (
	// maxHeldFiles bounds the open files held.
	maxHeldFiles = 128
	// heldFileTTL is how long a file is held when its symbols are not
	// loaded meanwhile: past the longest a trace waits parked.
	heldFileTTL = 2 * maxParkedAge
)

// heldFiles keeps the files the sync worker identified open until their
// symbols are loaded, so that a process that exits a few milliseconds
// after it was read (before the symbol worker opens its files through
// /proc/PID/map_files) still gets its frames named, whatever the file's
// path means outside the process's mount namespace (a container's file,
// a private /tmp, a deleted file). It is bounded in files and time, and
// safe for concurrent use: the sync worker holds, the symbol worker and
// the Run goroutine open and release.
type heldFiles struct {
	mu    sync.Mutex
	files map[trace.FileID]heldFile
}

type heldFile struct {
	f  *os.File
	at time.Time
}

// hold keeps a duplicate of f, the file id, open. A file held already
// stays as it was.
func (h *heldFiles) hold(id trace.FileID, f *os.File, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.files[id]; ok {
		return
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return
	}
	if h.files == nil {
		h.files = make(map[trace.FileID]heldFile)
	}
	for len(h.files) >= maxHeldFiles {
		h.closeOldest()
	}
	h.files[id] = heldFile{f: os.NewFile(uintptr(fd), f.Name()), at: now}
}

// closeOldest closes the file held longest. The caller holds h.mu.
func (h *heldFiles) closeOldest() {
	oldest := leastRecent(h.files, func(hf heldFile) time.Time { return hf.at })
	h.files[oldest].f.Close()
	delete(h.files, oldest)
}

// leastRecent returns the key of m whose value's time, as at gives it, is
// the earliest: the zero key when m is empty.
func leastRecent[V any](m map[trace.FileID]V, at func(V) time.Time) trace.FileID {
	var oldest trace.FileID
	var first time.Time
	for id, v := range m {
		if t := at(v); first.IsZero() || t.Before(first) {
			oldest, first = id, t
		}
	}
	return oldest
}

// open returns a new descriptor of the held file id, read from its start,
// which the caller closes.
func (h *heldFiles) open(id trace.FileID) (*os.File, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hf, ok := h.files[id]
	if !ok {
		return nil, fmt.Errorf("file %s not held: %w", id, fs.ErrNotExist)
	}
	fd, err := unix.Dup(int(hf.f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("duplicate held file %s: %w", hf.f.Name(), err)
	}
	f := os.NewFile(uintptr(fd), hf.f.Name())
	// A duplicate shares the file offset.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// release closes the held file id, if held.
func (h *heldFiles) release(id trace.FileID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hf, ok := h.files[id]; ok {
		hf.f.Close()
		delete(h.files, id)
	}
}

// expire closes the files held since before now-heldFileTTL, and all
// when all is set.
func (h *heldFiles) expire(now time.Time, all bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, hf := range h.files {
		if all || now.Sub(hf.at) > heldFileTTL {
			hf.f.Close()
			delete(h.files, id)
		}
	}
}

// len returns the number of files held.
func (h *heldFiles) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.files)
}

// fileCache holds the identities of mapped files by device and inode,
// bounded in entries (least recently used first out), and forgets those
// unused for a while, so that it shrinks back once the processes that
// mapped them are gone. A process's mappings keep the identity they were
// read with, so a file forgotten while mapped is only identified again by
// the next sync that reads it. It is safe for concurrent use: the sync
// worker adds, the Run goroutine looks up and expires.
type fileCache struct {
	mu  sync.Mutex
	lru *simplelru.LRU[fileKey, *fileEntry]
	// expired counts the entries forgotten unused.
	expired uint64
}

type fileEntry struct {
	fi *fileInfo
	// used is when the entry was last added or looked up.
	used time.Time
}

// newFileCache returns an empty cache of at most n files.
func newFileCache(n int) (*fileCache, error) {
	c, err := simplelru.NewLRU[fileKey, *fileEntry](n, nil)
	if err != nil {
		return nil, err
	}
	return &fileCache{lru: c}, nil
}

// Get returns the identity of the file k, a use that makes it the most
// recently used.
func (c *fileCache) Get(k fileKey) (*fileInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Get(k)
	if !ok {
		return nil, false
	}
	e.used = time.Now()
	return e.fi, true
}

// Peek returns the identity of the file k; a use that keeps it from
// expiring, without changing its place among the least recently used.
func (c *fileCache) Peek(k fileKey) (*fileInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Peek(k)
	if !ok {
		return nil, false
	}
	e.used = time.Now()
	return e.fi, true
}

// Add sets the identity of the file k.
func (c *fileCache) Add(k fileKey, fi *fileInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Add(k, &fileEntry{fi: fi, used: time.Now()})
}

// Remove forgets the file k.
func (c *fileCache) Remove(k fileKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(k)
}

// Len returns the number of files cached.
func (c *fileCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Expired returns the number of files forgotten unused.
func (c *fileCache) Expired() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expired
}

// expire forgets the files unused since before now-ttl; a ttl of 0
// forgets none.
func (c *fileCache) expire(now time.Time, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok && now.Sub(e.used) > ttl {
			c.lru.Remove(k)
			c.expired++
		}
	}
}
