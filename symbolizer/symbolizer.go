// Package symbolizer names native frames: given a file's identity and a
// file offset inside it, it finds the function from the file's ELF symbol
// tables (.symtab and .dynsym) and demangles C++ and Rust names.
//
// A File is the compact symbol table of one ELF file. A Symbolizer keeps
// the tables of recently used files in a bounded cache keyed by FileID and
// parses files on a miss. It knows nothing about processes: the caller
// opens the file (through /proc/PID/map_files or /proc/PID/root) when asked.
package symbolizer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/stackline-dev/stackline/trace"
)

// Options configure a Symbolizer.
type Options struct {
	// CacheSize is the number of files whose tables are kept; at least 1.
	CacheSize int
	// Demangle says how C++ and Rust names are demangled.
	Demangle DemangleMode
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
	// BytesHeld approximates the heap bytes of the cached tables.
	BytesHeld uint64
}

// Symbolizer keeps the symbol tables of recently used files. It is safe for
// concurrent use.
type Symbolizer struct {
	mode  DemangleMode
	cache *lru.Cache[trace.FileID, *File]

	mu       sync.Mutex
	inflight map[trace.FileID]*load

	loads, loadErrors, hits, misses atomic.Uint64
	bytesHeld                       atomic.Int64
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
	if opts.CacheSize < 1 {
		return nil, fmt.Errorf("symbolizer: cache size %d, want at least 1", opts.CacheSize)
	}
	if !opts.Demangle.valid() {
		return nil, fmt.Errorf("symbolizer: invalid demangle mode %d", int(opts.Demangle))
	}
	s := &Symbolizer{
		mode:     opts.Demangle,
		inflight: make(map[trace.FileID]*load),
	}
	cache, err := lru.NewWithEvict(opts.CacheSize, func(_ trace.FileID, f *File) {
		s.bytesHeld.Add(-int64(f.Bytes()))
	})
	if err != nil {
		return nil, fmt.Errorf("symbolizer: create cache: %w", err)
	}
	s.cache = cache
	return s, nil
}

// File returns the symbol table of the file id, parsing it on a miss from
// the file that open returns. File closes that file after parsing it.
// Concurrent misses for the same id open and parse it once.
//
// When the file cannot be opened, File returns the error and caches
// nothing, since another process may still be able to open it. When it
// cannot be parsed, File caches an empty table, so a bad file is not read
// again for every sample, and returns that table with the error; later
// calls return the empty table without error.
func (s *Symbolizer) File(id trace.FileID, open func() (*os.File, error)) (*File, error) {
	if f, ok := s.cache.Get(id); ok {
		s.hits.Add(1)
		return f, nil
	}
	s.mu.Lock()
	if l, ok := s.inflight[id]; ok {
		s.mu.Unlock()
		s.misses.Add(1)
		<-l.done
		return l.file, l.err
	}
	// A load may have finished between the cache lookup and taking the
	// lock: loads add to the cache before leaving inflight.
	if f, ok := s.cache.Get(id); ok {
		s.mu.Unlock()
		s.hits.Add(1)
		return f, nil
	}
	l := &load{done: make(chan struct{})}
	s.inflight[id] = l
	s.mu.Unlock()
	s.misses.Add(1)

	defer func() {
		s.mu.Lock()
		delete(s.inflight, id)
		s.mu.Unlock()
		close(l.done)
	}()
	l.file, l.err = s.load(open)
	if l.file != nil {
		if ok, _ := s.cache.ContainsOrAdd(id, l.file); !ok {
			s.bytesHeld.Add(int64(l.file.Bytes()))
		}
	}
	return l.file, l.err
}

// load opens and parses one file. It returns a nil File when the file
// cannot be opened, and an empty one when it cannot be parsed.
func (s *Symbolizer) load(open func() (*os.File, error)) (*File, error) {
	s.loads.Add(1)
	if open == nil {
		s.loadErrors.Add(1)
		return nil, errors.New("symbolizer: no way to open the file")
	}
	fh, err := open()
	if err != nil {
		s.loadErrors.Add(1)
		return nil, fmt.Errorf("symbolizer: open: %w", err)
	}
	if fh == nil {
		s.loadErrors.Add(1)
		return nil, errors.New("symbolizer: open returned no file")
	}
	defer fh.Close()
	f, err := parse(fh, s.mode)
	if err != nil {
		s.loadErrors.Add(1)
		return &File{mode: s.mode}, fmt.Errorf("symbolizer: %s: %w", fh.Name(), err)
	}
	return f, nil
}

// Stats returns the Symbolizer's counters.
func (s *Symbolizer) Stats() Stats {
	held := s.bytesHeld.Load()
	if held < 0 {
		held = 0
	}
	return Stats{
		Loads:      s.loads.Load(),
		LoadErrors: s.loadErrors.Load(),
		Hits:       s.hits.Load(),
		Misses:     s.misses.Load(),
		BytesHeld:  uint64(held),
	}
}
