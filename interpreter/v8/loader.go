package v8

import (
	"debug/elf"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/namecache"
)

// Loader is one file holding V8 (a node executable, libnode.so.N, an
// embedder), its layout read once for every process that maps it.
type Loader struct {
	layout *Layout
	loads  []elf.ProgHeader
	// dispatchOffset is where in the IsolateGroup the JSDispatchTable's
	// base was found, shared by the processes of this file; 0 until
	// found.
	dispatchOffset atomic.Int64
}

// Detect returns the Loader of f when it holds V8, recognised by its
// v8dbg_* symbols whatever the file's name; nil and no error when it does
// not. A file with V8 whose version or constants stackline cannot use
// gives an error saying why.
func Detect(f interpreter.File) (*Loader, error) {
	file, err := f.ELF()
	if err != nil {
		return nil, fmt.Errorf("v8: %s: %w", f.Path, err)
	}
	// The symbol tables are read in place from the open file: node's
	// hold hundreds of thousands of symbols, and every file a process
	// maps is looked at.
	l, err := newLoader(file.ELF, func(typ elf.SectionType) ([]elf.Symbol, error) {
		return file.SymbolsByKind(typ, funcPrefixes, dataPrefixes)
	})
	if errors.Is(err, ErrNotV8) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("v8: %s: %w", f.Path, err)
	}
	return l, nil
}

// NewLoader reads V8's constants and version from ef and builds its
// layout. It returns an error wrapping ErrNotV8 for a file without V8.
func NewLoader(ef *elf.File) (*Loader, error) {
	return newLoader(ef, func(typ elf.SectionType) ([]elf.Symbol, error) {
		return elffile.SymbolsByKind(ef, typ, funcPrefixes, dataPrefixes)
	})
}

// newLoader is NewLoader with the symbols read by symbols.
func newLoader(ef *elf.File, symbols symbolReader) (*Loader, error) {
	if ef.Machine != elf.EM_X86_64 || ef.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("%w: %v %v", ErrNotV8, ef.Machine, ef.Class)
	}
	c, err := readConstants(ef, symbols)
	if err != nil {
		return nil, err
	}
	lay, err := NewLayout(c)
	if err != nil {
		return nil, err
	}
	l := &Loader{layout: lay}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			l.loads = append(l.loads, p.ProgHeader)
		}
	}
	return l, nil
}

// Layout returns the file's V8 layout.
func (l *Loader) Layout() *Layout { return l.layout }

// Config bounds what a Process caches.
type Config struct {
	// CacheBytes bounds the process's cache (DefaultProcessCacheBytes
	// when 0).
	CacheBytes int64
	// Budget bounds all processes' caches together; nil: a budget of
	// DefaultGlobalCacheBytes for this process alone.
	Budget *namecache.Budget
}

// Attach readies naming in process pid, which maps the file's segment at
// file offset m.Offset to m.Start, reading its memory through mem.
func (l *Loader) Attach(pid uint32, m interpreter.Mapping, mem interpreter.Memory, cfg Config) (*Process, error) {
	bias, ok := l.bias(m)
	if !ok {
		return nil, fmt.Errorf("v8: pid %d: mapping at file offset %#x is outside the file's segments", pid, m.Offset)
	}
	if cfg.CacheBytes == 0 {
		cfg.CacheBytes = DefaultProcessCacheBytes
	}
	if cfg.Budget == nil {
		cfg.Budget = namecache.NewBudget(DefaultGlobalCacheBytes)
	}
	return &Process{
		loader: l,
		heap:   heap{mem: mem, lay: l.layout},
		bias:   bias,
		cache:  newCache(cfg.CacheBytes, cfg.Budget),
	}, nil
}

// bias returns the load bias (address in the process minus address in
// the file) of the segment mapped at m.
func (l *Loader) bias(m interpreter.Mapping) (uint64, bool) {
	for _, p := range l.loads {
		if m.Offset >= p.Off&^0xfff && m.Offset < p.Off+p.Filesz {
			return m.Start - (p.Vaddr - (p.Off - m.Offset)), true
		}
	}
	return 0, false
}
