package tracer

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
	"time"

	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
)

// RepeatReporter is a Reporter that takes a trace again without being
// asked about its frames. The tracer uses it when its Reporter is one
// (reporter.Reporter is).
type RepeatReporter interface {
	Reporter
	// ReportTraceIn is ReportTrace, and returns the interval the trace
	// went in: the metadata of its frames and executables is pinned
	// there.
	ReportTraceIn(*trace.Trace, trace.TraceMeta) uint64
	// ReportAgain reports a trace whose frames are those of one that
	// ReportTraceIn reported in interval; when that interval is over it
	// reports nothing and returns false.
	ReportAgain(*trace.Trace, trace.TraceMeta, uint64) bool
}

// Bounds of the traces an interval remembers.
const (
	maxRepeatTraces = 4096
	// maxRepeatFrames bounds their frames (32 bytes each).
	maxRepeatFrames = 1 << 15
)

// traceRepeats remembers the traces reported in the reporter's current
// interval by their raw records' frames, so that the same record seen
// again in the interval goes to the reporter without its frames being
// named again: in the benchmark's mix 35-50 % of the traces of an
// interval repeat one seen before in it (a thread spinning in a loop, a
// process blocked in one place), and naming a trace's frames costs many
// lookups in caches that the agent's sleep between reads has let go
// cold.
//
// A trace is remembered only when every frame of it was named from what
// stays true while its process's mappings (as last read) and interpreter
// do: kernel image frames, frames of files whose tables and symbols are
// in, interpreter frames (whose runtimes cache them by the same raw
// fields), pseudo-files. Entries are checked against the process at each
// use, and all are dropped when the interval changes: the reporter pins
// the frames' metadata for the interval only.
type traceRepeats struct {
	// reporter is the tracer's Reporter, when a RepeatReporter (nil
	// until the first trace).
	reporter     RepeatReporter
	checked      bool
	seedA, seedB maphash.Seed
	// interval is the reporter's interval the entries were reported in.
	interval uint64
	index    map[repeatKey]repeatEntry
	frames   []trace.FrameID
}

// repeatKey is a record's pid and frames, hashed twice under random seeds:
// two records with the same key are the same (a collision has a chance
// of 2^-128).
type repeatKey struct{ a, b uint64 }

// repeatEntry is a trace remembered: the frames named, and what they
// were named from.
type repeatEntry struct {
	// proc is the process whose mappings named the user frames, nil
	// for a trace of kernel frames only; lastRead and interp are its
	// mappings' read and interpreter then.
	proc     *process
	lastRead time.Time
	interp   interpreter.Instance
	// rereads is kallsyms' count of re-reads of modules and BPF
	// programs when the kernel frames were named.
	rereads    uint64
	start, end int32 // in traceRepeats.frames
}

// repeatKeyOf returns the key of rec, whose record is raw, and whether rec
// may be reported again: an on-CPU trace, not reported final, to a
// RepeatReporter.
func (t *Tracer) repeatKeyOf(rec *record, raw []byte, final bool) (repeatKey, bool) {
	rp := &t.repeats
	if !rp.checked {
		rp.checked = true
		rp.reporter, _ = t.cfg.Reporter.(RepeatReporter)
	}
	if final || rec.kind != recordTrace || rp.reporter == nil {
		return repeatKey{}, false
	}
	frames := raw[traceFramesOff : traceFramesOff+len(rec.frames)*frameSize]
	if rp.index == nil {
		rp.seedA, rp.seedB = maphash.MakeSeed(), maphash.MakeSeed()
		rp.index = make(map[repeatKey]repeatEntry)
	}
	var pid [4]byte
	binary.LittleEndian.PutUint32(pid[:], rec.pid)
	var h maphash.Hash
	h.SetSeed(rp.seedA)
	h.Write(pid[:])
	h.Write(frames)
	a := h.Sum64()
	h.SetSeed(rp.seedB)
	h.Write(pid[:])
	h.Write(frames)
	return repeatKey{a, h.Sum64()}, true
}

// reportRepeat reports rec again when it repeats a trace remembered in the
// reporter's interval whose process is unchanged, and reports whether it
// did.
func (t *Tracer) reportRepeat(rec *record, key repeatKey) bool {
	rp := &t.repeats
	e, ok := rp.index[key]
	if !ok {
		return false
	}
	proc := e.proc
	if proc != nil {
		if t.knownProcess(rec.pid, rec.ktimeNS) != proc || !proc.lastRead.Equal(e.lastRead) || proc.interp != e.interp {
			return false
		}
	} else {
		proc = t.process(rec.pid, rec.ktimeNS)
	}
	if rec.numKernelFrames > 0 {
		t.kernelAddrs.check(t.cfg.Kernel)
		if t.kernelAddrs.rereads != e.rereads {
			return false
		}
	}
	out := &t.out
	out.Frames = append(out.Frames[:0], rp.frames[e.start:e.end]...)
	if !rp.reporter.ReportAgain(out, t.traceMeta(rec, proc), rp.interval) {
		return false
	}
	t.stats.repeatedTraces.Add(1)
	return true
}

// reportTrace reports the trace just named, rec's, and remembers it when
// repeatable (see traceRepeats).
func (t *Tracer) reportTrace(rec *record, proc *process, key repeatKey, repeatable bool) {
	meta := t.traceMeta(rec, proc)
	if !repeatable || t.memo.unrepeatable {
		t.cfg.Reporter.ReportTrace(&t.out, meta)
		return
	}
	hasUser := rec.numKernelFrames < len(rec.frames)
	if hasUser && t.knownProcess(rec.pid, rec.ktimeNS) != proc {
		// Nothing is known of the process yet: its frames were named
		// without its mappings.
		t.cfg.Reporter.ReportTrace(&t.out, meta)
		return
	}
	rp := &t.repeats
	interval := rp.reporter.ReportTraceIn(&t.out, meta)
	if interval != rp.interval {
		clear(rp.index)
		rp.frames = rp.frames[:0]
		rp.interval = interval
	}
	frames := t.out.Frames
	if len(rp.index) >= maxRepeatTraces || len(rp.frames)+len(frames) > maxRepeatFrames {
		return
	}
	e := repeatEntry{rereads: t.kernelAddrs.rereads, start: int32(len(rp.frames))}
	if hasUser {
		e.proc, e.lastRead, e.interp = proc, proc.lastRead, proc.interp
	}
	if n := len(rp.frames) + len(frames); n > cap(rp.frames) {
		// Grown within the bound, not beyond as append could.
		grown := make([]trace.FrameID, len(rp.frames), min(max(2*cap(rp.frames), n, 1024), maxRepeatFrames))
		copy(grown, rp.frames)
		rp.frames = grown
	}
	rp.frames = append(rp.frames, frames...)
	e.end = int32(len(rp.frames))
	rp.index[key] = e
}

// traceMeta returns the metadata of rec, a trace of proc.
func (t *Tracer) traceMeta(rec *record, proc *process) trace.TraceMeta {
	meta := trace.TraceMeta{
		TimestampNS:    uint64(int64(rec.ktimeNS) + t.monoToWall),
		PID:            rec.pid,
		TID:            rec.tid,
		CPU:            rec.cpu,
		Comm:           rec.comm,
		OffCPUNS:       rec.offCPUNS,
		ExecutablePath: proc.executablePath,
		ProcessName:    proc.name,
		Process:        proc.meta,
	}
	if meta.ProcessName == "" {
		meta.ProcessName = rec.comm
	}
	return meta
}

// tableSettled reports whether the unwind table of fi, mapped by p, asks
// for nothing more at file offset off: a frame there makes needTable do
// nothing.
func (t *Tracer) tableSettled(p *process, fi *fileInfo, off uint64) bool {
	if t.w == nil {
		return true
	}
	if tb := t.tables.partial[fi.id]; tb != nil {
		rt := tb.regions
		r := off >> regionShift
		return rt.full || r >= uint64(rt.n) || rt.has(r) || rt.goCode && !t.memo.leaf
	}
	return !slices.Contains(p.waiting, fi.id)
}
