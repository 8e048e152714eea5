package tracer

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/stackline-dev/stackline/reporter/semconv"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// handleTrace turns a decoded record into frames, makes sure the reporter
// holds the metadata of each, and reports the trace.
func (t *Tracer) handleTrace(rec *record) {
	out := &t.out
	out.Frames = out.Frames[:0]
	var proc *process
	for i := range rec.frames {
		f := &rec.frames[i]
		switch f.typ {
		case trace.FrameKernel:
			out.Frames = append(out.Frames, t.kernelFrame(f.addr))
		case trace.FrameNative:
			if proc == nil {
				proc = t.process(rec.pid)
			}
			addr := f.addr
			if f.flags&frameFlagReturnAddress != 0 && addr > 0 {
				// The call instruction lies before the return address;
				// naming the return address itself can name the next
				// function when the call was the last instruction.
				addr--
			}
			out.Frames = append(out.Frames, t.nativeFrame(proc, addr))
		case trace.FrameError:
			out.Frames = append(out.Frames, trace.FrameID{Addr: f.addr, Type: trace.FrameError})
		default:
			if !f.typ.Interpreted() {
				t.stats.decodeErrors.Add(1)
				continue
			}
			if proc == nil {
				proc = t.process(rec.pid)
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
	}
	if proc == nil {
		proc = t.process(rec.pid)
	}
	meta.ExecutablePath = proc.executablePath
	meta.ProcessName = proc.name
	meta.Process = proc.meta
	if meta.ProcessName == "" {
		meta.ProcessName = rec.comm
	}
	t.cfg.Reporter.ReportTrace(out, meta)
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
	if !r.ExecutableKnown(id.File) {
		r.ExecutableMetadata(id.File, exec)
	}
	return id
}

func (t *Tracer) nativeFrame(proc *process, addr uint64) trace.FrameID {
	m := proc.find(addr)
	if m == nil && !proc.gone && time.Since(proc.lastRead) > rereadInterval {
		// New code was mapped since the last read (dlopen, a JIT).
		t.readMappings(proc)
		m = proc.find(addr)
	}
	if m == nil {
		t.stats.unknownMappings.Add(1)
		return trace.FrameID{Addr: addr, Type: trace.FrameNative}
	}
	if m.key == (fileKey{}) {
		return t.specialFrame(m, addr)
	}
	fi := t.file(proc, m)
	if fi == nil {
		return trace.FrameID{Addr: addr, Type: trace.FrameNative}
	}
	if !fi.described {
		t.describe(fi, proc, m)
	}
	id := trace.FrameID{File: fi.id, Addr: addr - m.start + m.offset, Type: trace.FrameNative}
	if fi.isGo {
		id.Type = trace.FrameGo
	}
	r := t.cfg.Reporter
	if !r.FrameKnown(id) {
		var info trace.FrameInfo
		if sf, err := t.cfg.Symbolizer.File(fi.id, t.source(proc, m)); err == nil {
			info.Lines = sf.Lookup(id.Addr, nil)
		}
		r.FrameMetadata(id, info)
	}
	if !r.ExecutableKnown(fi.id) {
		r.ExecutableMetadata(fi.id, fi.exec)
	}
	return id
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
		r.ExecutableMetadata(fileID, trace.ExecutableInfo{FileName: name})
	}
	return id
}

// file returns the identity of the file behind m, computing it on first
// sight of the file.
func (t *Tracer) file(proc *process, m *mapping) *fileInfo {
	if fi, ok := t.files.Get(m.key); ok {
		return fi
	}
	fi, err := t.identify(proc, m)
	if err != nil {
		t.stats.fileErrors.Add(1)
		t.log.Debug("identify mapped file", "pid", proc.pid, "path", m.path, "error", err)
		return nil
	}
	t.files.Add(m.key, fi)
	return fi
}

func (t *Tracer) identify(proc *process, m *mapping) (*fileInfo, error) {
	f, err := t.proc.openMapped(proc.pid, m)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", m.path, err)
	}
	id, err := trace.FileIDFromReader(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.path, err)
	}
	fi := &fileInfo{id: id, exec: trace.ExecutableInfo{FileName: filepath.Base(strings.TrimSuffix(m.path, " (deleted)"))}}
	if proc.isExecutable(m) && isGoELF(f) {
		fi.runtime = semconv.RuntimeGo
	}
	return fi, nil
}

// isGoELF reports whether the Go toolchain built the ELF file r: it has a
// section only the Go linker writes. Only the section headers are read.
func isGoELF(r io.ReaderAt) bool {
	ef, err := elf.NewFile(r)
	if err != nil {
		return false
	}
	for _, s := range ef.Sections {
		switch s.Name {
		case ".go.buildinfo", ".gopclntab", ".note.go.buildid":
			return true
		}
	}
	return false
}

// processRuntime returns p's process.runtime.name: its interpreter's
// runtime, else its executable's (go), else "".
func (t *Tracer) processRuntime(p *process) string {
	if p.interp != nil {
		return p.interpRuntime
	}
	for i := range p.mappings {
		m := &p.mappings[i]
		if m.key == (fileKey{}) || !p.isExecutable(m) {
			continue
		}
		if fi, ok := t.files.Peek(m.key); ok {
			return fi.runtime
		}
		break
	}
	return ""
}

// describe completes fi with what the symbolizer reads of the file (build
// IDs, whether it is Go). It waits for the file's first frame: most mapped
// files are identified for their unwind tables only, and never sampled.
func (t *Tracer) describe(fi *fileInfo, proc *process, m *mapping) {
	fi.described = true
	sf, err := t.cfg.Symbolizer.File(fi.id, t.source(proc, m))
	if err != nil {
		return
	}
	info := sf.Info()
	fi.isGo = info.IsGo
	fi.exec.GNUBuildID = info.GNUBuildID
	fi.exec.GoBuildID = info.GoBuildID
}

// source tells the symbolizer how to reach a mapped file and its debug
// files the way the process sees them: the file through map_files, debug
// files under the process's root, so containers get their own.
func (t *Tracer) source(proc *process, m *mapping) symbolizer.Source {
	return symbolizer.Source{
		Open: func() (*os.File, error) { return t.proc.openMapped(proc.pid, m) },
		Root: t.proc.path(proc.pid, "root"),
		Path: strings.TrimSuffix(m.path, " (deleted)"),
	}
}
