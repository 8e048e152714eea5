package tracer

import (
	"time"

	"github.com/stackline-dev/stackline/reporter/semconv"
	"github.com/stackline-dev/stackline/trace"
)

// handleTrace turns a decoded record into frames, makes sure the reporter
// holds the metadata of each, and reports the trace. A trace with user
// frames of a process or file the workers have not read yet is parked
// (raw is its record) until they have, unless final: then it is reported
// with what is known, its frames unnamed where nothing is.
func (t *Tracer) handleTrace(rec *record, raw []byte, final bool) {
	if !final && t.unread(rec) && t.park(rec, raw) {
		return
	}
	out := &t.out
	out.Frames = out.Frames[:0]
	t.memo = traceMemo{}
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
			id, wait := t.nativeFrame(proc, addr, final, mayPark)
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
				continue
			}
			if proc == nil {
				proc = t.process(rec.pid, rec.ktimeNS)
			}
			out.Frames = append(out.Frames, t.interpFrame(proc, f))
		}
	}
	meta := trace.TraceMeta{
		TimestampNS: uint64(int64(rec.ktimeNS) + t.monoToWall),
		PID:         rec.pid,
		TID:         rec.tid,
		CPU:         rec.cpu,
		Comm:        rec.comm,
		OffCPUNS:    rec.offCPUNS,
	}
	if proc == nil {
		proc = t.process(rec.pid, rec.ktimeNS)
	}
	meta.ExecutablePath = proc.executablePath
	meta.ProcessName = proc.name
	meta.Process = proc.meta
	if meta.ProcessName == "" {
		meta.ProcessName = rec.comm
	}
	t.cfg.Reporter.ReportTrace(out, meta)
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
	sym, ok := t.cfg.Kernel.Lookup(addr)
	id := trace.FrameID{File: t.kernelID, Addr: addr, Type: trace.FrameKernel}
	exec := trace.ExecutableInfo{FileName: "vmlinux", GNUBuildID: t.cfg.Kernel.BuildID()}
	if ok && sym.Module != "" {
		// Each module load (or BPF function) is a mapping of its own;
		// addresses are relative to its base so that one build of a
		// module shares frames across loads and hosts.
		id.File = trace.KernelFileID(sym.ModuleKey, sym.ModuleBuildID)
		id.Addr = addr - sym.ModuleBase
		exec = trace.ExecutableInfo{FileName: sym.Module, GNUBuildID: sym.ModuleBuildID}
	}
	r := t.cfg.Reporter
	if !r.FrameKnown(id) {
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

// nativeFrame names the frame at addr of proc. Unless final, instead of
// naming it without what a worker is about to bring, it returns the
// worker's job to wait for: the symbols of its file, loading, or (when
// mayReread) a new read of proc whose mappings as read do not resolve addr
// (new code mapped since: dlopen, a JIT; a file not identified).
func (t *Tracer) nativeFrame(proc *process, addr uint64, final, mayReread bool) (trace.FrameID, uint64) {
	m := proc.find(addr)
	if m == nil {
		if mayReread && t.enqueue(proc.pid, time.Now()) {
			return trace.FrameID{}, t.inflight[proc.pid].seq
		}
		t.stats.unknownMappings.Add(1)
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
		return trace.FrameID{Addr: addr, Type: trace.FrameNative}, 0
	}
	id := trace.FrameID{File: fi.id, Addr: addr - m.start + m.offset, Type: trace.FrameNative}
	if fi.isGo {
		id.Type = trace.FrameGo
	}
	r := t.cfg.Reporter
	known := r.FrameKnown(id)
	if !known || (len(t.renames) > 0 && t.renameDue(fi.id, time.Now())) {
		now := time.Now()
		if !known && !final && !t.symbolsLoaded.Contains(fi.id) {
			if seq := t.loadSymbols(fi.id, t.source(proc, m, fi)); seq != 0 {
				return trace.FrameID{}, seq
			}
		}
		var info trace.FrameInfo
		sf, err := t.cfg.Symbolizer.File(fi.id, t.source(proc, m, fi))
		if err != nil {
			// Only the load that failed returns the error: once per file.
			t.log.Debug("no symbols", "pid", proc.pid, "path", m.path, "error", err)
		}
		t.noteSymbols(fi.id, sf != nil, now)
		if sf != nil {
			info.Lines = sf.Lookup(id.Addr, nil)
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
	if !r.ExecutableKnown(fileID) {
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
