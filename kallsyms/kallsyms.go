// Package kallsyms names kernel addresses: functions of the kernel image
// (vmlinux), of loaded modules and of JIT'ed BPF programs.
//
// A Table made by Load names them from one of two sources (Options.Source).
//
// The kernel (SourceKernel, the default where it works) names each
// address itself: the kernel namer, a syscall program of
// support/ebpf/ksymname run with BPF_PROG_RUN, formats it with the kernel's
// "%pS" (function+0xoffset/0xsize [module]). The Table keeps each
// function's range and name, bounded in bytes, so that later addresses in
// the same function are named without asking; module and BPF functions
// are asked again once older than Options.MaxModuleAge. Nothing is read at
// start but the module list, /proc/modules, which is read again when the
// kernel names a module it does not hold. Code that /proc/kallsyms lists
// but "%pS" does not name (ftrace and kprobe trampolines) is read from the
// module part of /proc/kallsyms when met, rate-limited.
//
// The file (SourceFile, and the fallback of SourceAuto where the kernel
// namer cannot be loaded or run) is /proc/kallsyms. The kernel image's
// text symbols are read once, by Load, into a compact sorted table.
// Modules and BPF programs come and go, so their part is replaced lazily:
// when Lookup meets an address that no symbol names, the Table re-reads
// the module list (/proc/modules), the loaded BPF programs (with the bpf
// syscall) and, when that is not enough, the module symbols of
// /proc/kallsyms, at most once per Options.MinRereadInterval. A module
// loaded after start is thus named from its first samples, and one that
// was unloaded or reloaded elsewhere is dropped or moved.
//
// The kernel's build ID comes from /sys/kernel/notes and modules' from
// /sys/module/NAME/notes/.note.gnu.build-id, read once per module load.
// All paths hang off the proc and sys roots given in Options, so tests can
// point them at fixture trees (with SourceFile).
package kallsyms

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// MaxSymbolSize bounds the offset of an address from the start of the
// symbol that names it. kallsyms lists where symbols start but not where
// they end, so without a bound an address in a gap (after _etext, between
// modules, past the last module) would be named after whatever symbol
// precedes it. No kernel function comes close to this size.
const MaxSymbolSize = 64 << 10

// DefaultMinRereadInterval is the MinRereadInterval used when Options
// leaves it zero.
const DefaultMinRereadInterval = time.Second

// DefaultMaxModuleAge is the MaxModuleAge used when Options leaves it
// zero.
const DefaultMaxModuleAge = 10 * time.Second

// kallsymsBackoff is how many re-read intervals must pass before
// /proc/kallsyms is read again after a read that did not name the address
// that prompted it. Reading all of /proc/kallsyms costs tens of
// milliseconds; an address that is in no list should not cost that every
// interval.
const kallsymsBackoff = 10

// Options says where Load finds the kernel's files and how often a Table
// may re-read them.
type Options struct {
	// ProcRoot is the proc file system's mount point; "" means "/proc".
	ProcRoot string
	// SysRoot is the sys file system's mount point; "" means "/sys".
	SysRoot string
	// MinRereadInterval is the least time between two re-reads of the
	// module list and the BPF programs; zero means
	// DefaultMinRereadInterval.
	MinRereadInterval time.Duration
	// MaxModuleAge bounds how long module and BPF symbols are trusted: a
	// lookup that they answer re-reads first (within the same rate limit)
	// when the last re-read is older, so that code loaded where unloaded
	// code was is not named after the old. Zero means
	// DefaultMaxModuleAge; a negative value turns this off. It is never
	// less than MinRereadInterval.
	MaxModuleAge time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Programs lists the loaded BPF programs, for SourceFile; nil means
	// SyscallPrograms.
	Programs ProgramLister
	// Source says where kernel symbols come from; the zero value,
	// SourceAuto, asks the kernel when it can and reads ProcRoot/kallsyms
	// otherwise.
	Source Source
	// MaxNamedBytes bounds the heap bytes of the functions a Table of
	// SourceKernel keeps named; zero means DefaultNamedBytes.
	MaxNamedBytes int
}

func (o Options) procRoot() string {
	if o.ProcRoot == "" {
		return "/proc"
	}
	return o.ProcRoot
}

func (o Options) sysRoot() string {
	if o.SysRoot == "" {
		return "/sys"
	}
	return o.SysRoot
}

// Symbol is the kernel symbol that contains an address, and the code unit
// (the kernel image, a module load, a BPF function) that holds it.
type Symbol struct {
	// Name is the symbol's name. Functions of BPF programs are named
	// bpf_prog_TAG_NAME, as in /proc/kallsyms.
	Name string
	// Offset is the address minus the symbol's start.
	Offset uint64
	// Module is "" for the kernel image, the module's name for a module,
	// and the pseudo-module's name for code that /proc/kallsyms lists
	// under one: "bpf" for BPF programs and trampolines,
	// "__builtin__ftrace" for ftrace trampolines, and so on.
	Module string
	// ModuleBuildID is the module's GNU build ID in lower-case hex, or ""
	// when unknown (always for the kernel image, whose build ID is
	// Table.BuildID, and for pseudo-modules).
	ModuleBuildID string
	// ModuleKey identifies the code unit, "" for the kernel image. Two
	// symbols have the same key only if their units hold the same code at
	// the same offsets from ModuleBase, so a key can be turned into a file
	// identity with addresses relative to ModuleBase:
	//
	//   - a module with a build ID: NAME/BUILDID, the same for every load
	//     of that build;
	//   - a module without one: NAME@BASE (BASE in hex), one per load;
	//   - a pseudo-module's symbol, such as a BPF function: MODULE:SYMBOL,
	//     for example bpf:bpf_prog_6deef7357e7b4530_handler, each symbol a
	//     unit of its own.
	ModuleKey string
	// ModuleBase is the start of the code unit: the module's text (as
	// /proc/modules gives it), or the pseudo-module symbol's start. It is
	// 0 for the kernel image.
	ModuleBase uint64
}

// Module describes one loaded kernel module.
type Module struct {
	// Name is the module's name.
	Name string
	// Base is the address of the module's text.
	Base uint64
	// Size is the module's size in bytes as /proc/modules gives it (all
	// its memory, not only text), or 0 when unknown.
	Size uint64
	// BuildID is the module's GNU build ID in lower-case hex, or "".
	BuildID string
	// Key is the module's ModuleKey (see Symbol).
	Key string
}

// Stats counts a Table's work. The counters only grow; Modules and
// BPFPrograms are current sizes.
type Stats struct {
	// Lookups counts calls of Lookup.
	Lookups uint64
	// Unknown counts lookups that found no symbol, after the re-read they
	// were allowed.
	Unknown uint64
	// ModuleRereads counts re-reads of the module list.
	ModuleRereads uint64
	// KallsymsRereads counts re-reads of the module symbols in
	// /proc/kallsyms.
	KallsymsRereads uint64
	// BPFRereads counts listings of the loaded BPF programs.
	BPFRereads uint64
	// RereadErrors counts files or programs that a re-read failed to read.
	RereadErrors uint64
	// Skipped counts malformed lines in all reads of /proc/kallsyms and
	// /proc/modules so far.
	Skipped uint64
	// NamerRuns counts runs of the kernel namer (SourceKernel).
	NamerRuns uint64
	// NamedEvictions counts functions dropped from the named functions
	// to stay within Options.MaxNamedBytes (SourceKernel).
	NamedEvictions uint64
	// Modules is the number of loaded modules known.
	Modules int
	// BPFPrograms is the number of BPF programs known: for SourceKernel,
	// the BPF functions among the named functions.
	BPFPrograms int
	// Named is the number of functions a Table of SourceKernel keeps
	// named.
	Named int
	// MapBytes is the kernel memory of the kernel namer's eBPF map
	// (SourceKernel), as the kernel charges it.
	MapBytes uint64
}

// Table names kernel addresses. It is safe for concurrent use and must not
// be copied once used. The zero Table holds no symbols and never re-reads;
// tables are made by Load, or by Parse for fixed symbol lists.
type Table struct {
	vmlinux  *symtab
	buildID  string
	live     bool // made by Load: re-reads are possible
	procRoot string
	sysRoot  string
	interval time.Duration
	maxAge   time.Duration // <= 0: module and BPF symbols never age
	now      func() time.Time
	programs ProgramLister

	// dyn holds the parts that re-reads replace.
	dyn atomic.Pointer[dynamic]
	// nextReread is when the next re-read may happen, and staleAt when
	// module and BPF symbols become stale, in Unix nanoseconds.
	nextReread, staleAt atomic.Int64

	// mu serializes re-reads and guards nextKallsyms (kmu does for
	// SourceKernel).
	mu           sync.Mutex
	nextKallsyms time.Time

	lookups, unknown, moduleRereads, kallsymsRereads, bpfRereads, rereadErrors, skipped atomic.Uint64

	// source is SourceKernel or SourceFile for tables made by Load, and
	// fallback why SourceAuto fell back to SourceFile.
	source   Source
	fallback error
	// kmu guards namer and named, for SourceKernel.
	kmu       sync.Mutex
	namer     *kernelNamer
	named     namedCache
	namerRuns atomic.Uint64
}

// dynamic is the replaceable part of a Table. It is never modified once
// published.
type dynamic struct {
	mods *modPart
	bpf  *bpfPart
}

// ErrAddressesHidden is returned (wrapped) by Load and Parse when every
// address in the symbol list is zero: the kernel hides them from this
// reader because of kernel.kptr_restrict or missing privileges.
var ErrAddressesHidden = errors.New("all kernel symbol addresses are zero: kernel.kptr_restrict hides them (run as root with CAP_SYSLOG, or lower kernel.kptr_restrict)")

// Load makes a Table of the running kernel's symbols, from the source
// Options.Source says. It reads the loaded modules from ProcRoot/modules
// and their build IDs from SysRoot, and the kernel's GNU build ID from
// SysRoot/kernel/notes. Missing module and notes files are not errors: a
// kernel without module support has no /proc/modules, and BuildID returns
// "" without notes.
//
// With SourceKernel (or SourceAuto where the kernel namer works) nothing
// more is read: each address is named by the kernel when first looked up.
// With SourceFile, Load reads the kernel's text symbols from
// ProcRoot/kallsyms, and BPF programs are listed lazily, on the first
// address that nothing else names. A Table of SourceKernel holds a BPF
// program and map until Close.
func Load(opts Options) (*Table, error) {
	t := &Table{
		live:     true,
		procRoot: opts.procRoot(),
		sysRoot:  opts.sysRoot(),
		interval: opts.MinRereadInterval,
		now:      opts.Now,
		programs: opts.Programs,
	}
	if t.interval <= 0 {
		t.interval = DefaultMinRereadInterval
	}
	switch t.maxAge = opts.MaxModuleAge; {
	case t.maxAge == 0:
		t.maxAge = max(DefaultMaxModuleAge, t.interval)
	case t.maxAge > 0:
		t.maxAge = max(t.maxAge, t.interval)
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.programs == nil {
		t.programs = SyscallPrograms{}
	}
	if notes, err := os.ReadFile(filepath.Join(t.sysRoot, "kernel", "notes")); err == nil {
		t.buildID = BuildIDFromNotes(notes)
	}
	switch opts.Source {
	case SourceAuto, SourceKernel:
		err := t.loadKernel(opts)
		if err == nil || opts.Source == SourceKernel {
			if err != nil {
				return nil, err
			}
			return t, nil
		}
		t.fallback = err
	case SourceFile:
	default:
		return nil, fmt.Errorf("kallsyms: unknown source %v", opts.Source)
	}
	if err := t.loadFile(); err != nil {
		if t.fallback != nil {
			err = fmt.Errorf("%w (after the kernel namer failed: %v)", err, t.fallback)
		}
		return nil, err
	}
	return t, nil
}

// loadKernel makes t a Table of SourceKernel: the kernel namer, and the
// module list with the modules' build IDs.
func (t *Table) loadKernel(opts Options) error {
	n, err := newKernelNamer()
	if err != nil {
		return err
	}
	t.source = SourceKernel
	t.namer = n
	t.named.maxBytes = opts.MaxNamedBytes
	if t.named.maxBytes <= 0 {
		t.named.maxBytes = DefaultNamedBytes
	}
	procMods, skipped, err := readProcModules(t.procRoot)
	t.skipped.Add(uint64(skipped))
	if err != nil {
		// Modules are named without build IDs until a re-read succeeds.
		t.rereadErrors.Add(1)
	}
	src := modSource{sysRoot: t.sysRoot}
	t.dyn.Store(&dynamic{mods: src.buildModPart(&builder{}, procMods)})
	t.staleAt.Store(t.now().Add(t.maxAge).UnixNano())
	return nil
}

// loadFile makes t a Table of SourceFile: the kernel image's symbols of
// ProcRoot/kallsyms, and its modules'.
func (t *Table) loadFile() error {
	t.source = SourceFile
	path := filepath.Join(t.procRoot, "kallsyms")
	b, err := readKallsyms(path, false)
	if err != nil {
		return err
	}
	t.vmlinux = b.vmlinux.finish(false)
	t.skipped.Add(uint64(b.skipped))
	procMods, skipped, err := readProcModules(t.procRoot)
	t.skipped.Add(uint64(skipped))
	if err != nil {
		// Modules are named from their kallsyms symbols alone until a
		// re-read succeeds.
		t.rereadErrors.Add(1)
	}
	src := modSource{sysRoot: t.sysRoot}
	t.dyn.Store(&dynamic{mods: src.buildModPart(b, procMods)})
	t.staleAt.Store(t.now().Add(t.maxAge).UnixNano())
	return nil
}

// readKallsyms reads a kallsyms file into a builder.
func readKallsyms(path string, modulesOnly bool) (*builder, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	defer f.Close()
	b := &builder{modulesOnly: modulesOnly}
	if err := b.read(f); err != nil {
		return nil, fmt.Errorf("kallsyms: %s: %w", path, err)
	}
	if err := b.check(); err != nil {
		return nil, fmt.Errorf("kallsyms: %s: %w", path, err)
	}
	return b, nil
}

// Parse reads a symbol list in the format of /proc/kallsyms:
//
//	ffffffff81000000 T _stext
//	ffffffffc0a01000 t foo	[mod]
//
// Only text symbols (types t and T) at nonzero addresses are kept.
// Malformed lines are skipped and counted (see Table.Skipped). Parse fails
// only when reading fails, when no line at all is well formed, or when all
// addresses are zero (ErrAddressesHidden). The table never re-reads: its
// modules are those of the list, based at their lowest symbol and without
// build IDs.
func Parse(r io.Reader) (*Table, error) {
	var b builder
	if err := b.read(r); err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	if err := b.check(); err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	t := &Table{vmlinux: b.vmlinux.finish(false)}
	t.skipped.Add(uint64(b.skipped))
	var src modSource
	t.dyn.Store(&dynamic{mods: src.buildModPart(&b, nil)})
	return t, nil
}

// Lookup returns the symbol that contains addr.
//
// A Table of SourceKernel answers from the functions it named before, and
// otherwise runs the kernel namer for addr (a few microseconds) and keeps
// the function's range and name, within Options.MaxNamedBytes. A module or
// BPF function named longer than MaxModuleAge ago is named again; an
// address the kernel names nothing at is asked again at most once per
// MinRereadInterval; a module the module list does not hold makes it
// re-read (at most once per MinRereadInterval).
//
// A Table of SourceFile looks addr up in its symbols. When no symbol does, and
// the last re-read is at least MinRereadInterval ago, it first re-reads the
// modules and BPF programs (see the package documentation); a burst of
// unknown addresses thus causes one re-read. A module or BPF symbol older
// than MaxModuleAge is checked by a re-read in the same way. It reports false when addr
// still lies before the first symbol, at least MaxSymbolSize past the
// start of the symbol before it, past the end of a module, or in no known
// part of the kernel. A known address costs one small allocation, for the
// name.
func (t *Table) Lookup(addr uint64) (Symbol, bool) {
	t.lookups.Add(1)
	if t.source == SourceKernel {
		sym, ok := t.lookupKernel(addr)
		if !ok {
			t.unknown.Add(1)
		}
		return sym, ok
	}
	sym, ok := t.lookup(t.dyn.Load(), addr)
	if ok && (sym.Module == "" || !t.live || t.maxAge <= 0) {
		return sym, true
	}
	if ok {
		now := t.now().UnixNano()
		if now < t.staleAt.Load() || now < t.nextReread.Load() {
			return sym, true
		}
	}
	if t.live {
		if now := t.now(); now.UnixNano() >= t.nextReread.Load() {
			if sym, ok := t.reread(addr, now); ok {
				return sym, true
			}
		}
	}
	t.unknown.Add(1)
	return Symbol{}, false
}

func (t *Table) lookup(d *dynamic, addr uint64) (Symbol, bool) {
	var m Symbol
	mok := false
	if d != nil {
		m, mok = d.mods.lookup(addr)
		// BPF functions have exact extents; they go first, but with the
		// exact name when /proc/kallsyms lists them too.
		if sym, ok := d.bpf.lookup(addr); ok {
			if mok && m.Module == bpfModule && m.Offset == sym.Offset {
				return m, true
			}
			return sym, true
		}
	}
	i, off, kok := t.vmlinux.find(addr)
	// The kernel image and modules occupy separate address ranges; should
	// both parts claim addr, the symbol that starts closer to it wins.
	if mok && (!kok || m.Offset < off) {
		return m, true
	}
	if kok {
		return Symbol{Name: t.vmlinux.name(i), Offset: off}, true
	}
	return Symbol{}, false
}

// reread refreshes the replaceable parts, unless another caller did since
// now, and looks addr up again.
func (t *Table) reread(addr uint64, now time.Time) (Symbol, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.UnixNano() < t.nextReread.Load() {
		// Another caller re-read while this one waited.
		return t.lookup(t.dyn.Load(), addr)
	}
	t.nextReread.Store(now.Add(t.interval).UnixNano())
	t.staleAt.Store(now.Add(t.maxAge).UnixNano())
	var d dynamic
	if old := t.dyn.Load(); old != nil {
		d = *old
	}

	t.moduleRereads.Add(1)
	procMods, skipped, err := readProcModules(t.procRoot)
	t.skipped.Add(uint64(skipped))
	modsChanged := false
	if err != nil {
		t.rereadErrors.Add(1)
	} else {
		modsChanged = d.mods == nil || !sameModules(procMods, d.mods.procMods)
	}
	if !modsChanged && d.mods != nil {
		procMods = d.mods.procMods
	}

	t.bpfRereads.Add(1)
	d.bpf = t.rereadBPF(d.bpf)

	// Module symbols change with the module list; pseudo-module symbols
	// (BPF trampolines, ftrace trampolines) without it, so a still
	// unknown address re-reads them too, with a backoff.
	_, known := t.lookup(&d, addr)
	if modsChanged || (!known && !now.Before(t.nextKallsyms)) {
		if mods, err := t.rereadModuleSymbols(procMods, d.mods); err != nil {
			t.rereadErrors.Add(1)
		} else {
			d.mods = mods
		}
		if _, known := t.lookup(&d, addr); !known {
			t.nextKallsyms = now.Add(kallsymsBackoff * t.interval)
		}
	}
	t.dyn.Store(&d)
	return t.lookup(&d, addr)
}

// rereadModuleSymbols reads the module symbols of ProcRoot/kallsyms into a
// new module part, keeping the build IDs old knew.
func (t *Table) rereadModuleSymbols(procMods []procModule, old *modPart) (*modPart, error) {
	t.kallsymsRereads.Add(1)
	b, err := readKallsyms(filepath.Join(t.procRoot, "kallsyms"), true)
	if b != nil {
		t.skipped.Add(uint64(b.skipped))
	}
	if err != nil {
		return nil, err
	}
	src := modSource{sysRoot: t.sysRoot, buildIDs: make(map[loadKey]string)}
	if old != nil {
		for _, m := range old.infos {
			if !m.pseudo {
				src.buildIDs[loadKey{m.name, m.base}] = m.buildID
			}
		}
	}
	return src.buildModPart(b, procMods), nil
}

// rereadBPF lists the loaded BPF programs, describing only those that old
// does not know.
func (t *Table) rereadBPF(old *bpfPart) *bpfPart {
	ids, err := t.programs.ProgramIDs()
	if err != nil {
		t.rereadErrors.Add(1)
		return old
	}
	var known map[uint32]BPFProgram
	if old != nil {
		known = old.progs
	}
	progs := make(map[uint32]BPFProgram, len(ids))
	changed := false
	failed := false
	for _, id := range ids {
		if p, ok := known[id]; ok {
			progs[id] = p
			continue
		}
		p, err := t.programs.Program(id)
		if err != nil {
			// A program that is gone is no error; others are retried at
			// the next re-read.
			failed = failed || !errors.Is(err, os.ErrNotExist)
			continue
		}
		progs[id] = p
		changed = true
	}
	if failed {
		t.rereadErrors.Add(1)
	}
	if !changed && len(progs) == len(known) && old != nil {
		return old
	}
	return newBPFPart(progs)
}

// BuildID returns the kernel's GNU build ID in lower-case hex, or "" when
// it is unknown.
func (t *Table) BuildID() string { return t.buildID }

// Len returns the number of symbols in the table: for SourceKernel, the
// functions it keeps named.
func (t *Table) Len() int {
	if t.source == SourceKernel {
		t.kmu.Lock()
		defer t.kmu.Unlock()
		return len(t.named.funcs)
	}
	n := t.vmlinux.len()
	if d := t.dyn.Load(); d != nil {
		n += d.bpf.len()
		if d.mods != nil {
			n += d.mods.syms.len()
		}
	}
	return n
}

// Skipped returns the number of malformed lines skipped in all reads so
// far.
func (t *Table) Skipped() int { return int(t.skipped.Load()) }

// Bytes returns approximately how many heap bytes the table holds.
func (t *Table) Bytes() int {
	n := int(unsafe.Sizeof(*t)) + len(t.buildID) + t.vmlinux.bytes()
	if t.source == SourceKernel {
		t.kmu.Lock()
		n += t.named.heapBytes() - int(unsafe.Sizeof(t.named))
		t.kmu.Unlock()
	}
	if d := t.dyn.Load(); d != nil {
		n += int(unsafe.Sizeof(*d)) + d.mods.bytes() + d.bpf.bytes()
	}
	return n
}

// Modules returns the loaded modules the table knows, by address.
func (t *Table) Modules() []Module {
	d := t.dyn.Load()
	if d == nil || d.mods == nil {
		return nil
	}
	var mods []Module
	for _, m := range d.mods.infos {
		if m.pseudo {
			continue
		}
		mod := Module{Name: m.name, Base: m.base, BuildID: m.buildID, Key: m.key}
		if m.end != 0 {
			mod.Size = m.end - m.base
		}
		mods = append(mods, mod)
	}
	slices.SortStableFunc(mods, compareModules)
	return mods
}

// Rereads returns how many times the table re-read its modules, their
// symbols or the BPF programs (ModuleRereads + KallsymsRereads +
// BPFRereads of Stats): a change says addresses outside the kernel image
// may be named otherwise since. Unlike Stats it costs three loads, for a
// caller that asks once a frame.
func (t *Table) Rereads() uint64 {
	return t.moduleRereads.Load() + t.kallsymsRereads.Load() + t.bpfRereads.Load()
}

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	s := Stats{
		Lookups:         t.lookups.Load(),
		Unknown:         t.unknown.Load(),
		ModuleRereads:   t.moduleRereads.Load(),
		KallsymsRereads: t.kallsymsRereads.Load(),
		BPFRereads:      t.bpfRereads.Load(),
		RereadErrors:    t.rereadErrors.Load(),
		Skipped:         t.skipped.Load(),
		NamerRuns:       t.namerRuns.Load(),
	}
	if d := t.dyn.Load(); d != nil {
		if d.mods != nil {
			s.Modules = d.mods.modules
		}
		if d.bpf != nil {
			s.BPFPrograms = len(d.bpf.progs)
		}
	}
	if t.source == SourceKernel {
		t.kmu.Lock()
		s.Named = len(t.named.funcs)
		if t.namer != nil {
			s.MapBytes = t.namer.mapBytes
		}
		s.NamedEvictions = t.named.evictions
		for i := range t.named.funcs {
			if strings.HasPrefix(t.named.funcs[i].unit, bpfModule+":") {
				s.BPFPrograms++
			}
		}
		t.kmu.Unlock()
	}
	return s
}

// Source returns where the table's symbols come from: SourceKernel or
// SourceFile for tables made by Load, SourceAuto for others.
func (t *Table) Source() Source { return t.source }

// Fallback returns why Load fell back from the kernel namer to reading
// /proc/kallsyms under SourceAuto, or nil.
func (t *Table) Fallback() error { return t.fallback }

// Close releases the kernel namer of a Table of SourceKernel. Lookups
// after Close answer only from the functions named before.
func (t *Table) Close() error {
	t.kmu.Lock()
	defer t.kmu.Unlock()
	if t.namer == nil {
		return nil
	}
	err := t.namer.close()
	t.namer = nil
	return err
}
