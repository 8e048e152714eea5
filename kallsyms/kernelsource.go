package kallsyms

import (
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// Source says where a Table made by Load finds kernel symbols.
type Source int

const (
	// SourceAuto asks the kernel (SourceKernel) and falls back to reading
	// /proc/kallsyms (SourceFile) when the kernel namer cannot be loaded
	// or run; Table.Fallback then says why.
	SourceAuto Source = iota
	// SourceKernel asks the kernel to name each address (the kernel namer
	// of support/ebpf/ksymname, a BPF_PROG_TYPE_SYSCALL program calling
	// bpf_snprintf with "%pS") and caches each function's range and name.
	// Load fails when the namer cannot be used. Only ProcRoot's modules
	// file and SysRoot's notes are read; the names are the running
	// kernel's whatever ProcRoot says.
	SourceKernel
	// SourceFile reads all of ProcRoot/kallsyms at start, and its module
	// part again when modules change.
	SourceFile
)

// String returns the source's name as Table.Source reports it.
func (s Source) String() string {
	switch s {
	case SourceAuto:
		return "auto"
	case SourceKernel:
		return "kernel"
	case SourceFile:
		return "file"
	}
	return "Source(" + strconv.Itoa(int(s)) + ")"
}

// DefaultNamedBytes is the bound on the heap bytes of the functions a
// Table of SourceKernel keeps named (Options.MaxNamedBytes when zero):
// about 8,000 functions, several times the kernel functions a busy host's
// stacks run through.
const DefaultNamedBytes = 1 << 20

// namedFunc is a kernel function the kernel named: the addresses start to
// end, its name and where it lies.
type namedFunc struct {
	start, end uint64
	name       string
	// mod is the loaded module that holds the function, or nil.
	mod *modInfo
	// unit is the ModuleKey of a function that is a code unit of its
	// own: MODULE:NAME for BPF and pseudo-module code, MODULE@START for
	// a module the module list does not hold; "" otherwise. The kernel
	// image's functions have neither mod nor unit.
	unit string
	// asked is when the kernel named it, in Unix nanoseconds, for module
	// and BPF code, which can be unloaded and replaced.
	asked int64
	// used says a lookup found it since the last sweep.
	used bool
}

// namedFuncBytes is the heap of a namedFunc in the cache, its strings and
// its end in namedCache.ends excluded.
const namedFuncBytes = int(unsafe.Sizeof(namedFunc{}))

func (f *namedFunc) bytes() int { return namedFuncBytes + 8 + len(f.name) + len(f.unit) }

// inImage reports whether f is a function of the kernel image.
func (f *namedFunc) inImage() bool { return f.mod == nil && f.unit == "" }

// symbol returns the symbol of addr in f.
func (f *namedFunc) symbol(addr uint64) Symbol {
	sym := Symbol{Name: f.name, Offset: addr - f.start}
	switch {
	case f.mod != nil:
		sym.Module = f.mod.name
		sym.ModuleBuildID = f.mod.buildID
		sym.ModuleKey = f.mod.key
		sym.ModuleBase = f.mod.base
	case f.unit != "":
		sym.Module = f.unit[:strings.IndexAny(f.unit, ":@")]
		sym.ModuleKey = f.unit
		sym.ModuleBase = f.start
	}
	return sym
}

// namedCache holds the functions the kernel named, sorted by start,
// bounded in bytes. When full, the functions no lookup found since the
// last sweep are dropped (half of all when every one was).
type namedCache struct {
	funcs []namedFunc
	// ends holds the functions' ends, searched by lookups.
	ends     []uint64
	bytes    int
	maxBytes int
	// unknown holds addresses the kernel named nothing at, until when
	// (Unix nanoseconds) they are not asked again.
	unknown   map[uint64]int64
	evictions uint64
}

// maxUnknown bounds namedCache.unknown; it is emptied when full.
const maxUnknown = 1024

// search returns the index of the first function that ends after addr.
func (c *namedCache) search(addr uint64) int {
	lo, hi := 0, len(c.ends)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if c.ends[m] > addr {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// find returns the index of the function containing addr, or -1.
func (c *namedCache) find(addr uint64) int {
	i := c.search(addr)
	if i < len(c.funcs) && c.funcs[i].start <= addr {
		return i
	}
	return -1
}

// add enters f, replacing any function whose range overlaps it (code
// replaced since it was named).
func (c *namedCache) add(f namedFunc) {
	if c.bytes+f.bytes() > c.maxBytes {
		c.sweep()
	}
	lo := c.search(f.start)
	hi := lo
	for hi < len(c.funcs) && c.funcs[hi].start < f.end {
		c.bytes -= c.funcs[hi].bytes()
		hi++
	}
	c.funcs = slices.Replace(c.funcs, lo, hi, f)
	c.ends = slices.Replace(c.ends, lo, hi, f.end)
	c.bytes += f.bytes()
}

// remove drops function i.
func (c *namedCache) remove(i int) {
	c.bytes -= c.funcs[i].bytes()
	c.funcs = slices.Delete(c.funcs, i, i+1)
	c.ends = slices.Delete(c.ends, i, i+1)
}

// sweep drops the functions not used since the last sweep, or every
// other one when all were, and marks the rest unused.
func (c *namedCache) sweep() {
	all := !slices.ContainsFunc(c.funcs, func(f namedFunc) bool { return !f.used })
	n := 0
	for i, f := range c.funcs {
		if all && i%2 == 0 || !all && !f.used {
			c.bytes -= f.bytes()
			c.evictions++
			continue
		}
		f.used = false
		c.funcs[n], c.ends[n] = f, f.end
		n++
	}
	clear(c.funcs[n:])
	c.funcs, c.ends = c.funcs[:n], c.ends[:n]
}

// unknownUntil reports whether addr was found unnamed recently.
func (c *namedCache) unknownUntil(addr uint64, now int64) bool {
	until, ok := c.unknown[addr]
	return ok && now < until
}

func (c *namedCache) addUnknown(addr uint64, until int64) {
	if c.unknown == nil || len(c.unknown) >= maxUnknown {
		c.unknown = make(map[uint64]int64)
	}
	c.unknown[addr] = until
}

func (c *namedCache) heapBytes() int {
	return int(unsafe.Sizeof(*c)) + c.bytes + (cap(c.funcs)-len(c.funcs))*namedFuncBytes + (cap(c.ends)-len(c.ends))*8 + len(c.unknown)*24
}

// lookupKernel is Lookup for a Table of SourceKernel: the function
// containing addr from the cache, or named by the kernel and cached. A
// module or BPF function older than MaxModuleAge is named again; an
// address the kernel names nothing at is asked again at most once per
// MinRereadInterval.
func (t *Table) lookupKernel(addr uint64) (Symbol, bool) {
	t.kmu.Lock()
	defer t.kmu.Unlock()
	c := &t.named
	now := int64(0)
	stale := -1
	if i := c.find(addr); i >= 0 {
		stale = i
		f := &c.funcs[i]
		fresh := f.inImage() || t.maxAge <= 0
		if !fresh {
			now = t.now().UnixNano()
			fresh = now < f.asked+int64(t.maxAge)
		}
		if fresh {
			f.used = true
			return f.symbol(addr), true
		}
	}
	if now == 0 {
		now = t.now().UnixNano()
	}
	if c.unknownUntil(addr, now) || t.namer == nil {
		return Symbol{}, false
	}
	n := t.namer
	n.b.Addrs[0] = addr
	t.namerRuns.Add(1)
	if err := n.run(1); err != nil {
		t.rereadErrors.Add(1)
		c.addUnknown(addr, now+int64(t.interval))
		return Symbol{}, false
	}
	f, ok := t.namedFunc(addr, n.output(0), now)
	if !ok && !n.inImage(addr) {
		f, ok = t.pseudoFunc(addr, now)
	}
	if !ok {
		if stale >= 0 {
			// Unloaded since it was named.
			c.remove(stale)
		}
		c.addUnknown(addr, now+int64(t.interval))
		return Symbol{}, false
	}
	f.used = true
	c.add(f)
	return f.symbol(addr), true
}

// namedFunc turns the kernel's output for addr into the function that
// contains it, with its module (re-reading the module list when the
// kernel names a module it does not hold, or one that moved).
func (t *Table) namedFunc(addr uint64, out []byte, now int64) (namedFunc, bool) {
	p, ok := parseSymbol(out)
	if !ok || p.offset > addr || p.offset >= MaxSymbolSize {
		return namedFunc{}, false
	}
	start := addr - p.offset
	end := start + max(p.size, p.offset+1)
	if end < start {
		end = ^uint64(0)
	}
	f := namedFunc{start: start, end: end, asked: now, name: string(p.name)}
	switch {
	case p.module == nil && t.namer.inImage(addr):
		// The kernel image.
	case p.module == nil || isPseudoModule(string(p.module)):
		// A BPF program (the kernel gives BPF code no module), or code
		// of a pseudo-module (ftrace and kprobe trampolines): each
		// function a unit of its own.
		mod := bpfModule
		if p.module != nil {
			mod = string(p.module)
		}
		f.unit = mod + ":" + f.name
	default:
		info := t.moduleFor(string(p.module), start, time.Unix(0, now))
		if info == nil {
			// Hidden from /proc/modules: its own unit, based at the
			// function, as a module whose base is unknown.
			f.unit = string(p.module) + "@" + strconv.FormatUint(start, 16)
			break
		}
		f.mod = info
		if info.end != 0 && end > info.end {
			f.end = max(info.end, start+1)
		}
	}
	return f, true
}

// moduleFor returns the loaded module name whose range holds addr, or
// nil. It re-reads /proc/modules first (at most once per
// MinRereadInterval) when the known list has no such module, or is older
// than MaxModuleAge: a module unloaded and loaded again, perhaps another
// build at the same address, is then known by its new load.
func (t *Table) moduleFor(name string, addr uint64, now time.Time) *modInfo {
	d := t.dyn.Load()
	info := d.mods.module(name, addr)
	aged := t.maxAge > 0 && now.UnixNano() >= t.staleAt.Load()
	if info != nil && !aged || now.UnixNano() < t.nextReread.Load() {
		return info
	}
	t.nextReread.Store(now.Add(t.interval).UnixNano())
	t.staleAt.Store(now.Add(t.maxAge).UnixNano())
	t.moduleRereads.Add(1)
	procMods, skipped, err := readProcModules(t.procRoot)
	t.skipped.Add(uint64(skipped))
	if err != nil {
		t.rereadErrors.Add(1)
		return info
	}
	if d.mods != nil && sameModules(procMods, d.mods.procMods) {
		return info
	}
	src := modSource{sysRoot: t.sysRoot, buildIDs: make(map[loadKey]string)}
	if d.mods != nil {
		for _, m := range d.mods.infos {
			src.buildIDs[loadKey{m.name, m.base}] = m.buildID
		}
	}
	nd := *d
	nd.mods = src.buildModPart(&builder{}, procMods)
	t.dyn.Store(&nd)
	return nd.mods.module(name, addr)
}

// module returns the module name, when its range holds addr (or its
// range is unknown), or nil.
func (p *modPart) module(name string, addr uint64) *modInfo {
	if p == nil {
		return nil
	}
	for i := range p.infos {
		m := &p.infos[i]
		if m.pseudo || m.name != name {
			continue
		}
		if addr >= m.base && (m.end == 0 || addr < m.end) {
			return m
		}
	}
	return nil
}

// pseudoFunc names addr from the pseudo-module symbols of
// ProcRoot/kallsyms: code that /proc/kallsyms lists but the kernel's
// "%pS" does not name, such as ftrace's trampolines
// ([__builtin__ftrace]). They are read when such an address is first met,
// and again for an address they do not name at most once per
// kallsymsBackoff re-read intervals. The function found is cached up to
// addr, as its end is not known.
func (t *Table) pseudoFunc(addr uint64, now int64) (namedFunc, bool) {
	sym, ok := t.dyn.Load().mods.lookup(addr)
	if !ok && now >= t.nextKallsyms.UnixNano() {
		t.nextKallsyms = time.Unix(0, now).Add(kallsymsBackoff * t.interval)
		d := *t.dyn.Load()
		if mods, err := t.rereadModuleSymbols(d.mods.procMods, d.mods); err != nil {
			t.rereadErrors.Add(1)
		} else {
			d.mods = mods
			t.dyn.Store(&d)
			sym, ok = d.mods.lookup(addr)
		}
	}
	if !ok || !isPseudoModule(sym.Module) || sym.Module == bpfModule {
		// Modules and BPF programs are the kernel's to name.
		return namedFunc{}, false
	}
	start := addr - sym.Offset
	return namedFunc{start: start, end: addr + 1, name: sym.Name, unit: sym.ModuleKey, asked: now}, true
}
