package hotspot

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"unsafe"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/reporter/semconv"
	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// Runtime finds HotSpot JVMs: processes that map libjvm.so, which exports
// the VM's description of itself.
type Runtime struct {
	// Cache bounds what is kept of the VMs' methods and compiled code, in
	// all processes together and in each. Nil uses DefaultCacheConfig.
	Cache *Cache
}

// Name implements interpreter.Runtime. It is the process.runtime.name of
// a JVM's samples.
func (Runtime) Name() string { return semconv.RuntimeJava }

// ErrNoSymbols reports a libjvm.so that does not export the VM's tables.
var ErrNoSymbols = errors.New("libjvm.so without gHotSpotVMStructs")

// Detect implements interpreter.Runtime. It recognises libjvm.so by the
// symbols of the VM's tables among its dynamic symbols.
func (rt Runtime) Detect(f interpreter.File) (interpreter.Loader, error) {
	if filepath.Base(f.Path) != "libjvm.so" {
		return nil, nil
	}
	file, err := f.ELF()
	if err != nil {
		return nil, fmt.Errorf("hotspot: %s: %w", f.Path, err)
	}
	l, err := newLoader(file)
	if err != nil {
		return nil, fmt.Errorf("hotspot: %s: %w", f.Path, err)
	}
	l.cache = rt.Cache
	if l.cache == nil {
		l.cache = NewCache(DefaultCacheConfig)
	}
	return l, nil
}

// loader is one libjvm.so file.
type loader struct {
	// syms are the values (virtual addresses in the file) of the symbols
	// ReadLayout needs.
	syms  map[string]uint64
	loads []elf.ProgHeader
	cache *Cache

	// The layout is the same in every process of the file: it is read
	// from the first process that has it ready. Its static fields'
	// addresses are that process's: fields holds them as the file's.
	mu     sync.Mutex
	layout *Layout
	fields *fields
}

// newLoader reads the symbols of Symbols from f's dynamic symbol table,
// in place (elffile.File.Symbols: only the few wanted are decoded).
func newLoader(f *elffile.File) (*loader, error) {
	ef := f.ELF
	if ef.Machine != elf.EM_X86_64 || ef.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("unsupported machine %v %v", ef.Machine, ef.Class)
	}
	names := Symbols()
	want := make(map[string]bool)
	for _, s := range names {
		want[s] = true
	}
	l := &loader{syms: make(map[string]uint64)}
	syms, err := f.Symbols(elf.SHT_DYNSYM, names...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSymbols, err)
	}
	for _, s := range syms {
		if want[s.Name] && s.Section != elf.SHN_UNDEF && s.Value != 0 {
			l.syms[s.Name] = s.Value
		}
	}
	if _, ok := l.syms["gHotSpotVMStructs"]; !ok {
		return nil, ErrNoSymbols
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			l.loads = append(l.loads, p.ProgHeader)
		}
	}
	return l, nil
}

// bias returns what to add to the file's virtual addresses to get the
// process's, from where the process maps the code.
func (l *loader) bias(m interpreter.Mapping) (uint64, bool) {
	for _, p := range l.loads {
		if m.Offset >= p.Off && m.Offset < p.Off+p.Filesz {
			return m.Start - (p.Vaddr + (m.Offset - p.Off)), true
		}
	}
	return 0, false
}

// readLayout returns the file's layout, read from mem the first time.
func (l *loader) readLayout(mem interpreter.Memory, bias uint64) (*Layout, *fields, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.layout != nil {
		return l.layout, l.fields, nil
	}
	lay, err := ReadLayout(mem, func(name string) (uint64, bool) {
		v, ok := l.syms[name]
		return v + bias, ok
	})
	if err != nil {
		return nil, nil, err
	}
	f, err := fieldsOf(lay)
	if err != nil {
		return nil, nil, err
	}
	// Static fields' addresses are this process's: keep them as the
	// file's, for every process to add its own bias.
	f.codeHeaps -= bias
	f.interpreterCode -= bias
	l.layout, l.fields = lay, f
	return lay, f, nil
}

// Attach implements interpreter.Loader. It returns an error wrapping
// interpreter.ErrNotReady while the VM has not set up its code cache.
func (l *loader) Attach(pid uint32, m interpreter.Mapping, mem interpreter.Memory) (interpreter.Instance, error) {
	bias, ok := l.bias(m)
	if !ok {
		return nil, fmt.Errorf("hotspot: pid %d: mapping at file offset %#x is outside the file's segments", pid, m.Offset)
	}
	lay, f, err := l.readLayout(mem, bias)
	if errors.Is(err, ErrNotReady) {
		return nil, fmt.Errorf("hotspot: pid %d: %w: %w", pid, interpreter.ErrNotReady, err)
	}
	if err != nil {
		return nil, fmt.Errorf("hotspot: pid %d: %w", pid, err)
	}
	cfg, owned, err := f.config(mem, bias)
	if err != nil {
		return nil, fmt.Errorf("hotspot: pid %d: %w", pid, err)
	}
	inst := &instance{
		layout: lay,
		f:      f,
		mem:    mem,
		names:  l.cache.newProcess(),
		enc:    EncodingFor(lay.Version()),
		pcDesc: f.pcDesc,
	}
	u := &inst.unwind
	u.Kind = interpreter.KindHotSpot
	u.Owned[0] = owned
	if _, err := binary.Encode(u.Config[:], binary.LittleEndian, &cfg); err != nil {
		return nil, fmt.Errorf("hotspot: encode config: %w", err)
	}
	return inst, nil
}

// struct hotspot_config fits in interp_proc.config.
var _ [interpreter.ConfigBytes - unsafe.Sizeof(progs.StacklineHotspotConfig{})]byte
