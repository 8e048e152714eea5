package tracer

import (
	"errors"
	"io/fs"
	"time"

	"github.com/stackline-dev/stackline/interpreter"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// A runtime found in a process but not initialised yet (a VM starting)
// is attached again every interpRetryInterval, up to maxInterpRetries
// times.
const (
	interpRetryInterval = 250 * time.Millisecond
	maxInterpRetries    = 120
)

// attachInterpreter looks for an interpreter among p's mappings, whose
// files' identities are files, and, when one is found, gives the eBPF side
// what its unwinder needs. A process keeps the interpreter it was attached
// to until it execs or exits.
func (t *Tracer) attachInterpreter(p *process, files []*fileInfo) {
	if p.interp != nil {
		// Given again on every sync: the eBPF side drops it on exec
		// and exit, whose records can be lost to a full ring buffer.
		t.putInterpreter(p, p.interp)
		return
	}
	if len(t.cfg.Interpreters) == 0 {
		return
	}
	for i := range p.mappings {
		m := &p.mappings[i]
		if i >= len(files) {
			break
		}
		fi := files[i]
		if fi == nil || fi.interp == nil {
			continue
		}
		inst, err := fi.interp.Attach(p.pid, interpreter.Mapping{Start: m.start, End: m.end, Offset: m.offset}, interpreter.ProcessMemory(p.pid))
		if errors.Is(err, interpreter.ErrNotReady) && p.interpRetries < maxInterpRetries {
			// A runtime still starting: try again shortly.
			p.interpRetries++
			t.schedule(p.pid, time.Now().Add(interpRetryInterval))
			t.log.Debug("interpreter not ready", "pid", p.pid, "path", m.path, "error", err)
			return
		}
		if err != nil {
			t.stats.interpErrors.Add(1)
			t.log.Debug("attach interpreter", "pid", p.pid, "path", m.path, "error", err)
			continue
		}
		if !t.putInterpreter(p, inst) {
			return
		}
		p.interp, p.interpRuntime = inst, fi.runtime
		t.stats.interpProcesses.Add(1)
		return
	}
}

// putInterpreter gives the eBPF side what its unwinder needs for p's
// interpreter, and reports whether it could.
func (t *Tracer) putInterpreter(p *process, inst interpreter.Instance) bool {
	u := inst.Unwind()
	v := progs.StacklineInterpProc{Kind: uint32(u.Kind), Data: u.Data, Config: u.Config}
	for j, r := range u.Handoff {
		v.HandoffStart[j], v.HandoffEnd[j] = r.Start, r.End
	}
	for j, r := range u.Owned {
		v.OwnedStart[j], v.OwnedEnd[j] = r.Start, r.End
	}
	if err := t.maps.putInterpreter(p.pid, &v); err != nil {
		t.stats.interpErrors.Add(1)
		t.log.Debug("give interpreter to eBPF", "pid", p.pid, "error", err)
		return false
	}
	p.given()
	return true
}

// detectInterpreter asks each runtime whether mf's file is its
// interpreter, and returns the runtime's name with its loader. It reports
// whether the answer holds for the file: not when the file could not be
// opened (the process exited or exec'd meanwhile), so the next process
// mapping it asks again. The sync worker calls it.
func (t *Tracer) detectInterpreter(mf *mappedFile) (interpreter.Loader, string, bool) {
	m := mf.m
	f := interpreter.File{Path: m.path, ELF: mf.elf}
	for _, rt := range t.cfg.Interpreters {
		l, err := rt.Detect(f)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", false
		}
		if err != nil {
			t.stats.interpErrors.Add(1)
			t.log.Warn("interpreter found but not usable: its frames stay native", "runtime", rt.Name(), "path", m.path, "error", err)
			continue
		}
		if l != nil {
			return l, rt.Name(), true
		}
	}
	return nil, "", true
}

// detachInterpreter forgets p's interpreter, in eBPF too.
func (t *Tracer) detachInterpreter(p *process) {
	if p.interp == nil {
		return
	}
	if c, ok := p.interp.(interpreter.Closer); ok {
		c.Close()
	}
	p.interp, p.interpRuntime = nil, ""
	p.interpRetries = 0
	t.stats.interpProcesses.Add(-1)
	if p.droppedK {
		return
	}
	if err := t.maps.deleteInterpreter(p.pid); err != nil {
		t.log.Debug("forget interpreter", "pid", p.pid, "error", err)
	}
}

// interpFrame names a frame an interpreter's unwinder emitted.
func (t *Tracer) interpFrame(proc *process, f *rawFrame) trace.FrameID {
	if proc.interp == nil {
		// Detached since the sample (exec, exit).
		t.stats.interpUnnamed.Add(1)
		t.memo.unrepeatable = true
		return trace.FrameID{Addr: f.addr, Type: f.typ}
	}
	sym, err := proc.interp.Frame(interpreter.Frame{Type: f.typ, Addr: f.addr, Aux: f.aux, AuxHigh: f.auxHi, Extra: f.extra, ReturnAddress: f.flags&frameFlagReturnAddress != 0})
	if err != nil {
		t.stats.interpUnnamed.Add(1)
		t.memo.unrepeatable = true
		t.log.Debug("name interpreter frame", "pid", proc.pid, "error", err)
		return trace.FrameID{Addr: f.addr, Type: f.typ}
	}
	r := t.cfg.Reporter
	if !r.FrameKnown(sym.ID) {
		r.FrameMetadata(sym.ID, sym.Info())
	}
	if !t.executableKnown(sym.ID.File) {
		r.ExecutableMetadata(sym.ID.File, trace.ExecutableInfo{FileName: sym.File})
	}
	return sym.ID
}
