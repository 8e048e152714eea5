// Package symbolizer names native frames: given a file's identity and a
// file offset inside it, it returns the functions at that address, inlined
// calls first, with file and line where the binary says.
//
// Names come from, in order of preference: Go's .gopclntab (with inlined
// calls), .symtab, .dynsym, a separate debug file found by GNU build ID or
// .gnu_debuglink, and MiniDebugInfo (.gnu_debugdata). Files and lines of
// other code come from DWARF line tables, of the file or its debug file.
// C++ and Rust names are demangled.
//
// A File is the compact table of one ELF file: a sorted index of its
// function symbols (16 bytes a symbol) into its string tables, which stay
// in the file, mapped read-only; names are copied out only for the frames
// looked up. A Symbolizer keeps the
// tables of recently used files in a cache keyed by FileID and bounded by
// a byte budget, and loads files on a miss. It knows nothing about
// processes: the caller says, with an elffile.Source, how to open the file
// (through /proc/PID/map_files or /proc/PID/root) and under which root its
// debug files are found. Files are read through elffile, which owns the
// build IDs, the note parser and the debug file search.
package symbolizer

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/trace"
)

// Defaults for the zero fields of Options.
const (
	// DefaultMaxBytes is the default budget of cached tables.
	DefaultMaxBytes = 256 << 20
	// DefaultMaxDWARFBytes is the default limit on a file's DWARF sections.
	DefaultMaxDWARFBytes = 256 << 20
	// DefaultMaxSectionBytes is the default limit on one symbol table,
	// string table or .gopclntab.
	DefaultMaxSectionBytes = 512 << 20
)

// Options configure a Symbolizer, or one Parse or Load.
type Options struct {
	// CacheSize bounds the number of files whose tables are kept; 0 means
	// only MaxBytes bounds the cache.
	CacheSize int
	// MaxBytes is the total budget, in heap bytes, of the cached tables;
	// the least recently used are evicted to stay under it, and a file
	// whose table alone exceeds it is not kept (Stats.TooLarge). 0 means
	// DefaultMaxBytes.
	MaxBytes int64
	// Demangle says how C++ and Rust names are demangled.
	Demangle DemangleMode
	// LineInfo says to read DWARF line tables, from the file or its debug
	// file, so that frames of C, C++ and Rust code carry file and line.
	// Go binaries always carry them, from .gopclntab.
	LineInfo bool
	// MaxDWARFBytes bounds the uncompressed size of the DWARF sections
	// read for line tables; a file with more is named without lines
	// (Stats.DWARFSkipped). 0 means DefaultMaxDWARFBytes.
	MaxDWARFBytes int64
	// MaxSectionBytes bounds one symbol table, string table or .gopclntab;
	// a larger one is skipped (Stats.SectionsSkipped). 0 means
	// DefaultMaxSectionBytes.
	MaxSectionBytes int64
}

// normalize checks o and fills in its defaults.
func (o *Options) normalize() error {
	if o.CacheSize < 0 {
		return fmt.Errorf("symbolizer: cache size %d, want at least 0", o.CacheSize)
	}
	if o.MaxBytes < 0 || o.MaxDWARFBytes < 0 || o.MaxSectionBytes < 0 {
		return errors.New("symbolizer: negative byte limit")
	}
	if !o.Demangle.valid() {
		return fmt.Errorf("symbolizer: invalid demangle mode %d", int(o.Demangle))
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxDWARFBytes == 0 {
		o.MaxDWARFBytes = DefaultMaxDWARFBytes
	}
	if o.MaxSectionBytes == 0 {
		o.MaxSectionBytes = DefaultMaxSectionBytes
	}
	return nil
}

// Stats are a Symbolizer's counters since New.
type Stats struct {
	// Loads counts attempts to open and parse a file.
	Loads uint64
	// LoadErrors counts the loads that failed to open or parse the file.
	LoadErrors uint64
	// Hits counts calls to File answered from the cache.
	Hits uint64
	// Misses counts calls to File that did not find the table cached,
	// including those that waited for another call's load of the same file.
	Misses uint64
	// BytesHeld approximates the heap bytes of the cached tables: their
	// symbol indexes, Go inline trees, DWARF line tables and names copied
	// from tables that could not be mapped. Options.MaxBytes bounds it.
	BytesHeld uint64
	// BytesMapped is how many bytes of files the cached tables keep
	// mapped read-only (string tables, .gopclntab): page cache, resident
	// only where lookups touched it, and not counted in BytesHeld.
	// Tables evicted but not yet collected still hold their mappings.
	BytesMapped uint64
	// Files is the number of cached tables.
	Files uint64
	// Evictions counts tables evicted to stay within the budget.
	Evictions uint64
	// TooLarge counts files whose table alone exceeded Options.MaxBytes
	// and was dropped; their frames stay unnamed.
	TooLarge uint64
	// SectionsSkipped counts symbol tables and .gopclntab sections skipped
	// for exceeding Options.MaxSectionBytes.
	SectionsSkipped uint64
	// DWARFSkipped counts files whose DWARF exceeded Options.MaxDWARFBytes.
	DWARFSkipped uint64
	// DWARFErrors counts files whose DWARF could not be read.
	DWARFErrors uint64
	// DebugFiles counts loads that used a separate debug file.
	DebugFiles uint64
	// DebuglinkMismatches counts loads whose debuglink candidate was
	// rejected for a wrong CRC.
	DebuglinkMismatches uint64
	// DebugFileErrors counts loads that found debug file candidates but
	// could use none (a wrong build ID or CRC, a file that cannot be
	// read), DebuglinkMismatches included. The frames of such a file may
	// lack names or lines a debug file would have given.
	DebugFileErrors uint64
	// MiniDebugInfo counts loads that used .gnu_debugdata symbols.
	MiniDebugInfo uint64
}

// counters are the load counters that Parse and Load share with a
// Symbolizer.
type counters struct {
	sectionsSkipped, dwarfSkipped, dwarfErrors     atomic.Uint64
	debugFiles, debuglinkMismatches, miniDebugInfo atomic.Uint64
	debugFileErrors                                atomic.Uint64
}

// Symbolizer keeps the symbol tables of recently used files within a byte
// budget. It is safe for concurrent use.
type Symbolizer struct {
	opts Options
	ctr  counters

	mu       sync.Mutex
	inflight map[trace.FileID]*load
	entries  map[trace.FileID]*list.Element // of *entry
	lru      list.List                      // most recently used first
	held     int64
	mapped   int64
	// spare is the scratch (see scratch) the last load gave back, for
	// the next; spareUsed says a load took or gave it back since the
	// last Trim, which drops it otherwise. Both are guarded by spareMu.
	spareMu   sync.Mutex
	spare     *scratch
	spareUsed bool

	loads, loadErrors, hits, misses, evictions, tooLarge atomic.Uint64
}

// entry is one cached table.
type entry struct {
	id           trace.FileID
	file         *File
	size, mapped int64
}

// load is one file being opened and parsed; others asking for the same
// file wait for done and share its result.
type load struct {
	done chan struct{}
	file *File
	err  error
}

// New returns a Symbolizer with an empty cache.
func New(opts Options) (*Symbolizer, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	return &Symbolizer{
		opts:     opts,
		inflight: make(map[trace.FileID]*load),
		entries:  make(map[trace.FileID]*list.Element),
	}, nil
}

// get returns the cached table of id and marks it most recently used.
// The caller holds s.mu.
func (s *Symbolizer) get(id trace.FileID) (*File, bool) {
	e, ok := s.entries[id]
	if !ok {
		return nil, false
	}
	s.lru.MoveToFront(e)
	return e.Value.(*entry).file, true
}

// add caches f as the table of id and evicts the least recently used
// tables until the cache is within its bounds. The caller holds s.mu.
func (s *Symbolizer) add(id trace.FileID, f *File) {
	if _, ok := s.entries[id]; ok {
		return
	}
	e := &entry{id: id, file: f, size: int64(f.Bytes()), mapped: int64(f.MappedBytes())}
	s.entries[id] = s.lru.PushFront(e)
	s.held += e.size
	s.mapped += e.mapped
	for s.held > s.opts.MaxBytes || s.opts.CacheSize > 0 && s.lru.Len() > s.opts.CacheSize {
		back := s.lru.Back()
		if back == nil || back.Value.(*entry) == e && s.lru.Len() == 1 {
			break
		}
		old := back.Value.(*entry)
		s.lru.Remove(back)
		delete(s.entries, old.id)
		s.held -= old.size
		s.mapped -= old.mapped
		s.evictions.Add(1)
	}
}

// File returns the symbol table of the file id, loading it on a miss from
// the file src opens and the debug files under src.Root (see Load). File
// closes every file it opens. Concurrent misses for the same id load it
// once.
//
// When the file cannot be opened, File returns the error and caches
// nothing, since another process may still be able to open it. When it
// cannot be parsed, File caches an empty table, so a bad file is not read
// again for every sample, and returns that table with the error; later
// calls return the empty table without error. A table larger than
// Options.MaxBytes is replaced by an empty one the same way.
func (s *Symbolizer) File(id trace.FileID, src elffile.Source) (*File, error) {
	s.mu.Lock()
	if f, ok := s.get(id); ok {
		s.mu.Unlock()
		s.hits.Add(1)
		return f, nil
	}
	if l, ok := s.inflight[id]; ok {
		s.mu.Unlock()
		s.misses.Add(1)
		<-l.done
		return l.file, l.err
	}
	l := &load{done: make(chan struct{})}
	s.inflight[id] = l
	s.mu.Unlock()
	s.misses.Add(1)

	l.file, l.err = s.load(src)
	s.mu.Lock()
	if l.file != nil {
		s.add(id, l.file)
	}
	delete(s.inflight, id)
	s.mu.Unlock()
	close(l.done)
	return l.file, l.err
}

// load opens and parses one file. It returns a nil File when the file
// cannot be opened, and an empty one when it cannot be parsed or its
// table is over the budget.
func (s *Symbolizer) load(src elffile.Source) (*File, error) {
	s.loads.Add(1)
	ld := &loader{opts: s.opts, ctr: &s.ctr, scratch: s.takeScratch()}
	f, opened, err := ld.load(src)
	s.putScratch(ld.scratch)
	if err != nil {
		s.loadErrors.Add(1)
		if opened {
			return &File{mode: s.opts.Demangle}, err
		}
		return nil, err
	}
	if int64(f.Bytes()) > s.opts.MaxBytes {
		s.tooLarge.Add(1)
		return &File{mode: s.opts.Demangle, info: f.info}, nil
	}
	return f, nil
}

// takeScratch returns a scratch for a load: the spare one when no other
// load has it, else a new one.
func (s *Symbolizer) takeScratch() *scratch {
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	sc := s.spare
	s.spare, s.spareUsed = nil, true
	if sc == nil {
		sc = new(scratch)
	}
	return sc
}

// putScratch keeps sc as the spare for the next load, unless it is over
// maxScratchBytes. A burst of loads (the agent's start) reuses it from
// one load to the next; the second Trim after the burst drops it, so it
// outlives the burst by at most two trim intervals however seldom the
// garbage collector runs.
func (s *Symbolizer) putScratch(sc *scratch) {
	if sc.bytes() > maxScratchBytes {
		return
	}
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	s.spare, s.spareUsed = sc, true
}

// Forget drops the cached table of the file id, if any, as an eviction
// would (it is not counted as one). A cached table keeps its file mapped,
// and so keeps the file's mount busy: a caller that knows no process maps
// the file any more (the last process that did exited, a container went
// away) should forget it rather than wait for the cache to evict it.
func (s *Symbolizer) Forget(id trace.FileID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return
	}
	old := e.Value.(*entry)
	s.lru.Remove(e)
	delete(s.entries, id)
	s.held -= old.size
	s.mapped -= old.mapped
}

// Trim drops from this process's resident memory the pages of mapped
// files that lookups touched since the tables were loaded or last
// trimmed, and the buffers loads share when no load used them since the
// last Trim. Over hours, lookups of ever new frames touch more and more
// pages of the cached tables' string tables and .gopclntab sections,
// which count toward the process's RSS although they are page cache; a
// caller that trims every few tens of seconds keeps that part of its RSS
// to the pages in recent use. Lookups may run meanwhile.
func (s *Symbolizer) Trim() {
	s.spareMu.Lock()
	if !s.spareUsed {
		s.spare = nil
	}
	s.spareUsed = false
	s.spareMu.Unlock()
	s.mu.Lock()
	files := make([]*File, 0, s.lru.Len())
	for e := s.lru.Front(); e != nil; e = e.Next() {
		files = append(files, e.Value.(*entry).file)
	}
	s.mu.Unlock()
	for _, f := range files {
		f.DropPages()
	}
}

// Stats returns the Symbolizer's counters.
func (s *Symbolizer) Stats() Stats {
	s.mu.Lock()
	held, mapped, files := s.held, s.mapped, s.lru.Len()
	s.mu.Unlock()
	return Stats{
		Loads:               s.loads.Load(),
		LoadErrors:          s.loadErrors.Load(),
		Hits:                s.hits.Load(),
		Misses:              s.misses.Load(),
		BytesHeld:           uint64(max(held, 0)),
		BytesMapped:         uint64(max(mapped, 0)),
		Files:               uint64(files),
		Evictions:           s.evictions.Load(),
		TooLarge:            s.tooLarge.Load(),
		SectionsSkipped:     s.ctr.sectionsSkipped.Load(),
		DWARFSkipped:        s.ctr.dwarfSkipped.Load(),
		DWARFErrors:         s.ctr.dwarfErrors.Load(),
		DebugFiles:          s.ctr.debugFiles.Load(),
		DebuglinkMismatches: s.ctr.debuglinkMismatches.Load(),
		MiniDebugInfo:       s.ctr.miniDebugInfo.Load(),
		DebugFileErrors:     s.ctr.debugFileErrors.Load(),
	}
}
