package tracer

import (
	"slices"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/kallsyms"
	"github.com/stackline-dev/stackline/reporter/semconv"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// handleTrace turns a decoded record into frames, makes sure the reporter
// holds the metadata of each, and reports the trace. A trace with user
// frames of a process or file the workers have not read yet is parked
// (raw is its record) until they have, unless final: then it is reported
// with what is known, its frames unnamed where nothing is. A trace that
// repeats one of the reporter's interval is reported again as it was
// (see traceRepeats).
func (t *Tracer) handleTrace(rec *record, raw []byte, final bool) {
	if !final && t.unread(rec) && t.park(rec, raw) {
		return
	}
	key, repeatable := t.repeatKeyOf(rec, raw, final)
	if repeatable && t.reportRepeat(rec, key) {
		return
	}
	out := &t.out
	out.Frames = out.Frames[:0]
	t.memo = traceMemo{}
	t.lastMapping = nil
	var proc *process
	// mayPark says an address the process's mappings (as last read) do
	// not resolve is worth reading the process again for.
	mayPark := false
	first := 0
	if rec.kind == recordOffCPU {
		first = t.offCPUKernelStart(rec)
	}
	for i := first; i < len(rec.frames); i++ {
		f := &rec.frames[i]
		switch f.typ {
		case trace.FrameKernel:
			out.Frames = append(out.Frames, t.kernelFrame(f.addr))
		case trace.FrameNative:
			if proc == nil {
				proc = t.process(rec.pid, rec.ktimeNS)
				mayPark = !final && !proc.gone && time.Since(proc.lastRead) >= rereadInterval
			}
			addr := f.addr
			if f.flags&frameFlagReturnAddress != 0 && addr > 0 {
				// The call instruction lies before the return address;
				// naming the return address itself can name the next
				// function when the call was the last instruction.
				addr--
			}
			var id trace.FrameID
			var wait uint64
			t.memo.leaf = f.flags&frameFlagReturnAddress == 0
			if f.flags&frameFlagFile != 0 {
				id, wait = t.fileFrame(proc, fileKeyOf(f), addr, final, mayPark)
			} else {
				id, wait = t.nativeFrame(proc, addr, final, mayPark)
			}
			if wait != 0 {
				t.parkOn(rec, raw, wait)
				return
			}
			out.Frames = append(out.Frames, id)
		case trace.FrameError:
			out.Frames = append(out.Frames, trace.FrameID{Addr: f.addr, Type: trace.FrameError})
		default:
			if !f.typ.Interpreted() {
				t.stats.decodeErrors.Add(1)
				t.memo.unrepeatable = true
				continue
			}
			if proc == nil {
				proc = t.process(rec.pid, rec.ktimeNS)
			}
			out.Frames = append(out.Frames, t.interpFrame(proc, f))
		}
	}
	if proc == nil {
		proc = t.process(rec.pid, rec.ktimeNS)
	}
	t.reportTrace(rec, proc, key, repeatable)
}

// scheduleFunction is the kernel function in which a thread leaves the CPU.
const scheduleFunction = "__schedule"

// maxOffCPUSkip bounds the kernel frames of an off-CPU trace searched for
// scheduleFunction.
const maxOffCPUSkip = 8

// offCPUKernelStart returns the index of the first frame of an off-CPU
// trace worth showing: __schedule, where the thread left the CPU. The
// frames above it are the off-CPU program's own (the BPF program, the
// tracepoint's glue), the same in every trace. When __schedule is not among
// the first maxOffCPUSkip frames, none is dropped.
func (t *Tracer) offCPUKernelStart(rec *record) int {
	for i := range min(rec.numKernelFrames, maxOffCPUSkip) {
		if sym, ok := t.cfg.Kernel.Lookup(rec.frames[i].addr); ok && sym.Name == scheduleFunction {
			return i
		}
	}
	return 0
}

// unknownKernelName names kernel addresses outside every known symbol, after
// kallsyms has had its (rate-limited) chance to re-read modules and BPF
// programs. They stay in the stack, on the kernel mapping.
const unknownKernelName = "[unknown]"

func (t *Tracer) kernelFrame(addr uint64) trace.FrameID {
	r := t.cfg.Reporter
	image := trace.FrameID{File: t.kernelID, Addr: addr, Type: trace.FrameKernel}
	t.kernelAddrs.check(t.cfg.Kernel)
	// asked says the reporter was asked about image, and did not know it.
	asked := false
	if t.kernelAddrs.has(addr) {
		// An address of the kernel image named before: its frame is
		// image, whose name the reporter likely holds.
		if r.FrameKnown(image) {
			if !t.executableKnown(image.File) {
				r.ExecutableMetadata(image.File, trace.ExecutableInfo{FileName: "vmlinux", GNUBuildID: t.cfg.Kernel.BuildID()})
			}
			return image
		}
		asked = true
	}
	sym, ok := t.cfg.Kernel.Lookup(addr)
	// The lookup may have re-read the modules and BPF programs.
	t.kernelAddrs.check(t.cfg.Kernel)
	id := image
	exec := trace.ExecutableInfo{FileName: "vmlinux", GNUBuildID: t.cfg.Kernel.BuildID()}
	if !ok || sym.Module != "" {
		// Modules and BPF programs come and go: named again each time.
		t.memo.unrepeatable = true
	}
	if ok && sym.Module != "" {
		// Each module load (or BPF function) is a mapping of its own;
		// addresses are relative to its base so that one build of a
		// module shares frames across loads and hosts.
		id.File = trace.KernelFileID(sym.ModuleKey, sym.ModuleBuildID)
		id.Addr = addr - sym.ModuleBase
		exec = trace.ExecutableInfo{FileName: sym.Module, GNUBuildID: sym.ModuleBuildID}
	} else if ok {
		t.kernelAddrs.add(addr)
	}
	if asked && id == image || !r.FrameKnown(id) {
		name := unknownKernelName
		if ok {
			name = sym.Name
		} else {
			t.stats.unknownKernel.Add(1)
		}
		r.FrameMetadata(id, trace.FrameInfo{Lines: []trace.Line{{Function: name}}})
	}
	if !t.executableKnown(id.File) {
		r.ExecutableMetadata(id.File, exec)
	}
	return id
}

// kernelImageBits is the log2 of the number of addresses kernelImageAddrs
// holds (128 KiB of them): a busy host's kernel frames run to a few
// thousand return addresses, and the set holds them with few collisions.
const kernelImageBits = 14

// kernelImageAddrs remembers kernel addresses that kallsyms found in the
// kernel image, so that a frame at one of them is known by its address:
// the kernel image's symbols never change, and its frames are identified
// by address alone. A frame the reporter knows then costs no kallsyms
// lookup (a search of the kernel's symbols and its name, often inflated
// from its compressed block). Modules and BPF programs come and go, so
// their addresses are looked up each time; and as a re-read of them could
// in principle claim an address next to the image's, every re-read
// empties the set. It is four-way set-associative: an address added evicts
// the least recently added of its set.
type kernelImageAddrs struct {
	slots []uint64 // an address + 1, or 0 for an empty slot; sets of four
	// rereads is kallsyms' count of re-reads when the set was last
	// checked against it.
	rereads uint64
}

// set returns the set of addr (Fibonacci hashing).
func (k *kernelImageAddrs) set(addr uint64) *[4]uint64 {
	i := (addr * 0x9e3779b97f4a7c15) >> (64 - kernelImageBits + 2)
	return (*[4]uint64)(k.slots[4*i:])
}

// has reports whether addr was found in the kernel image.
func (k *kernelImageAddrs) has(addr uint64) bool {
	if k.slots == nil {
		return false
	}
	s := k.set(addr)
	a := addr + 1
	return s[0] == a || s[1] == a || s[2] == a || s[3] == a
}

// check empties the set when kern re-read its modules or BPF programs
// since the last check.
func (k *kernelImageAddrs) check(kern *kallsyms.Table) {
	// Not Stats, which counts the BPF functions among those named: run
	// twice a kernel frame, that took 95 % of the CPU of a trace of 16
	// kernel frames with 4,096 functions named (BenchmarkKernelTraces:
	// 66-100 us a trace, 2-3 with Rereads).
	if n := kern.Rereads(); n != k.rereads {
		k.rereads = n
		clear(k.slots)
	}
}

// add remembers that addr was found in the kernel image.
func (k *kernelImageAddrs) add(addr uint64) {
	if k.slots == nil {
		k.slots = make([]uint64, 1<<kernelImageBits)
	}
	s := k.set(addr)
	copy(s[1:], s[:3])
	s[0] = addr + 1
}

// nativeFrame names the frame at addr of proc. Unless final, instead of
// naming it without what a worker is about to bring, it returns the
// worker's job to wait for: the symbols of its file, loading, or (when
// mayReread) a new read of proc whose mappings as read do not resolve addr
// (new code mapped since: dlopen, a JIT; a file not identified).
func (t *Tracer) nativeFrame(proc *process, addr uint64, final, mayReread bool) (trace.FrameID, uint64) {
	// Frames of a trace run in a few mappings, often one after the
	// other: the last one found is tried first.
	m := t.lastMapping
	if m == nil || addr < m.start || addr >= m.end {
		m = proc.find(addr)
		t.lastMapping = m
	}
	if m == nil {
		if mayReread && t.enqueue(proc.pid, time.Now()) {
			return trace.FrameID{}, t.inflight[proc.pid].seq
		}
		t.stats.unknownMappings.Add(1)
		t.memo.unrepeatable = true
		return trace.FrameID{Addr: addr, Type: trace.FrameNative}, 0
	}
	if m.key == (fileKey{}) {
		return t.specialFrame(m, addr), 0
	}
	fi, ok := t.peekFile(m.key)
	if !ok && m.fi != nil {
		// Evicted from the file cache since the process was read.
		fi, ok = m.fi, true
	}
	if !ok {
		if mayReread && t.enqueue(proc.pid, time.Now()) {
			return trace.FrameID{}, t.inflight[proc.pid].seq
		}
		// Not identified: the sync worker could not open it.
		t.memo.unrepeatable = true
		return trace.FrameID{Addr: addr, Type: trace.FrameNative}, 0
	}
	off := addr - m.start + m.offset
	t.needTable(proc, m, fi, off)
	if !t.memo.unrepeatable && !t.tableSettled(proc, fi, off) {
		t.memo.unrepeatable = true
	}
	return t.namedFrame(proc, m, fi, off, final)
}

// fileKeyOf returns the file of a frame the eBPF unwinder tagged with it
// (FRAME_FLAG_FILE): the device and inode it found in the mapping.
func fileKeyOf(f *rawFrame) fileKey {
	return kernelFileKey(f.fileDev, uint64(f.extra)<<32|uint64(f.aux))
}

// kernelFileKey returns the key of the file of device dev (the kernel's
// dev_t: major << 20 | minor) and inode inode, or the zero key for inode 0
// (no file).
func kernelFileKey(dev uint32, inode uint64) fileKey {
	if inode == 0 {
		return fileKey{}
	}
	return fileKey{dev: uint64(dev>>20)<<32 | uint64(dev&0xfffff), inode: inode}
}

// fileFrame names the frame at offset off of file key in proc, a frame the
// eBPF unwinder found the mapping of in the kernel because it lacked the
// process's mappings (a process not read yet, or gone: one that lived a
// few milliseconds). The file is known from the processes that mapped it
// before (the eBPF unwinder had its table): the frame is named through it,
// whatever became of proc. A file not identified (evicted from the file
// cache since) waits for a read of proc when mayReread, else the frame is
// reported unnamed.
func (t *Tracer) fileFrame(proc *process, key fileKey, off uint64, final, mayReread bool) (trace.FrameID, uint64) {
	// Named without the process's mappings: not remembered.
	t.memo.unrepeatable = true
	fi, ok := t.files.Peek(key)
	m := proc.findFile(key)
	if !ok && m != nil && m.fi != nil {
		fi, ok = m.fi, true
	}
	if !ok {
		if mayReread && t.enqueue(proc.pid, time.Now()) {
			return trace.FrameID{}, t.inflight[proc.pid].seq
		}
		t.stats.unknownMappings.Add(1)
		return trace.FrameID{Addr: off, Type: trace.FrameNative}, 0
	}
	t.needFileTable(proc, key, fi, off)
	if m == nil {
		// Where the process had it is unknown: its symbols are opened
		// through the process's root while it lives, else through the
		// file the sync worker holds or the same path on the host,
		// checked to be the same file (see Tracer.source).
		m = &mapping{key: key, path: fi.path, fi: fi}
	}
	return t.namedFrame(proc, m, fi, off, final)
}

// namedFrame names the frame at file offset off of file fi, mapped by m in
// proc. Unless final, instead of naming it without the symbols a worker is
// about to load, it returns the job to wait for.
func (t *Tracer) namedFrame(proc *process, m *mapping, fi *fileInfo, off uint64, final bool) (trace.FrameID, uint64) {
	id := trace.FrameID{File: fi.id, Addr: off, Type: trace.FrameNative}
	if fi.isGo {
		id.Type = trace.FrameGo
	}
	r := t.cfg.Reporter
	known := r.FrameKnown(id)
	if len(t.renames) > 0 && t.renames[fi.id] != nil {
		// Its frames may be named anew at their next sight.
		t.memo.unrepeatable = true
	}
	if !known || (len(t.renames) > 0 && t.renames[fi.id] != nil && t.renameDue(fi.id, time.Now())) {
		now := time.Now()
		loaded := t.symbolsLoaded.Contains(fi.id)
		if !known && !final && !loaded {
			if seq := t.loadSymbols(fi.id, func() elffile.Source { return t.symbolSource(proc, m, fi, now) }); seq != 0 {
				return trace.FrameID{}, seq
			}
		}
		src := t.source(proc, m, fi)
		if !loaded {
			src = t.symbolSource(proc, m, fi, now)
		}
		var info trace.FrameInfo
		sf, err := t.cfg.Symbolizer.File(fi.id, src)
		if err != nil {
			// Only the load that failed returns the error: once per file.
			t.log.Debug("no symbols", "pid", proc.pid, "path", m.path, "error", err)
		}
		t.noteSymbols(fi.id, sf != nil, now)
		if sf != nil {
			info.Lines = sf.Lookup(id.Addr, nil)
			t.lookedUp(sf)
		} else {
			t.memo.unrepeatable = true
		}
		if !known || sf != nil {
			r.FrameMetadata(id, info)
		}
	}
	if !t.executableKnown(fi.id) {
		r.ExecutableMetadata(fi.id, fi.exec)
	}
	return id, 0
}

// lookedUp notes that sf was looked up in, for dropLooked.
func (t *Tracer) lookedUp(sf *symbolizer.File) {
	if !slices.Contains(t.looked, sf) {
		t.looked = append(t.looked, sf)
	}
}

// dropLooked drops the pages the lookups since its last call made resident
// (see symbolizer.File.DropPages), before Run waits for records: they
// leave the RSS as soon as the batch that needed them is named, rather
// than at the agent's next trim, seconds later, by which time the lookups
// of a busy build loop have added megabytes.
func (t *Tracer) dropLooked() {
	for _, sf := range t.looked {
		sf.DropPages()
	}
	clear(t.looked)
	t.looked = t.looked[:0]
}

// settledAge is how long a process has been synced before it is trusted
// to outlive a symbol load through it.
const settledAge = time.Second

// symbolSource returns where to load the symbols of fi, mapped by m in
// proc: through proc, unless proc is new or gone while another process
// maps the same file; then through the one of those synced first (the
// processes running when stackline started come first). The symbols are
// loaded once per file, debug file included, through the process's root:
// one that exits meanwhile (a process of a few milliseconds, the first to
// run a file) would leave them without the debug file for good. It looks
// through every process: it runs when a file's symbols are to be loaded.
func (t *Tracer) symbolSource(proc *process, m *mapping, fi *fileInfo, now time.Time) elffile.Source {
	if !proc.gone && !proc.synced.IsZero() && now.Sub(proc.synced) >= settledAge {
		return t.source(proc, m, fi)
	}
	var best *process
	var bestMapping *mapping
	for _, p := range t.processes {
		if p == proc || p.gone || p.synced.IsZero() || best != nil && !p.synced.Before(best.synced) {
			continue
		}
		if pm := p.findFile(m.key); pm != nil {
			best, bestMapping = p, pm
		}
	}
	if best != nil {
		return t.source(best, bestMapping, fi)
	}
	return t.source(proc, m, fi)
}

// specialFrame handles executable memory without a file: the vdso, JIT code,
// anonymous memory. The frame is tied to a pseudo-file named after the
// mapping, its address is the offset inside it.
func (t *Tracer) specialFrame(m *mapping, addr uint64) trace.FrameID {
	name := m.path
	if name == "" {
		name = "[anon]"
	}
	fileID := trace.KernelFileID("special:"+name, "")
	id := trace.FrameID{File: fileID, Addr: addr - m.start, Type: trace.FrameNative}
	r := t.cfg.Reporter
	if !r.FrameKnown(id) {
		r.FrameMetadata(id, trace.FrameInfo{})
	}
	if !t.executableKnown(fileID) {
		r.ExecutableMetadata(fileID, trace.ExecutableInfo{FileName: name, Pseudo: true})
	}
	return id
}

// processRuntime returns p's process.runtime.name: its interpreter's
// runtime, else go for a Go executable, else "".
func (t *Tracer) processRuntime(p *process) string {
	if p.interp != nil {
		return p.interpRuntime
	}
	for i := range p.mappings {
		m := &p.mappings[i]
		if m.key == (fileKey{}) || !p.isExecutable(m) {
			continue
		}
		if fi, ok := t.files.Peek(m.key); ok && fi.isGo {
			return semconv.RuntimeGo
		}
		break
	}
	return ""
}

// Renaming frames named while their file's symbols could not be loaded.
const (
	// maxRenames bounds the files remembered.
	maxRenames = 256
	// renameRetry is how often a file that could not be opened is tried
	// again for a frame already reported unnamed.
	renameRetry = 100 * time.Millisecond
	// renameWindow is how long, once its symbols loaded, a file's frames
	// already known are named again: those reported unnamed meanwhile
	// get their names the next time they are sampled.
	renameWindow = time.Minute
)

// rename is a file some of whose frames were reported unnamed because its
// symbols could not be loaded (its process was gone and the file
// unreachable): failed is when a load last failed, loaded when one
// succeeded since.
type rename struct {
	failed, loaded time.Time
}

// noteSymbols records whether the symbols of file id could be loaded now.
func (t *Tracer) noteSymbols(id trace.FileID, ok bool, now time.Time) {
	rn := t.renames[id]
	switch {
	case !ok && rn == nil:
		if t.renames == nil {
			t.renames = make(map[trace.FileID]*rename)
		}
		if len(t.renames) >= maxRenames {
			for k := range t.renames {
				delete(t.renames, k)
				break
			}
		}
		t.renames[id] = &rename{failed: now}
	case !ok:
		rn.failed, rn.loaded = now, time.Time{}
	case rn != nil && rn.loaded.IsZero():
		rn.loaded = now
	}
}

// renameDue reports whether a known frame of file id is to be named again:
// some of the file's frames were reported unnamed for want of its
// symbols, which have loaded since (for renameWindow) or are to be tried
// again.
func (t *Tracer) renameDue(id trace.FileID, now time.Time) bool {
	rn := t.renames[id]
	switch {
	case rn == nil:
		return false
	case !rn.loaded.IsZero():
		if now.Sub(rn.loaded) > renameWindow {
			delete(t.renames, id)
			return false
		}
		return true
	}
	return now.Sub(rn.failed) >= renameRetry
}
