package tracer

import (
	"slices"
	"time"

	"github.com/stackline-dev/stackline/trace"
)

// Bounds of the traces waiting for the workers to read their process.
const (
	maxParkedTraces = 4096
	maxParkedBytes  = 4 << 20
	// maxParkedAge bounds how long a trace waits: past it, it is
	// reported with what is known.
	maxParkedAge = 5 * time.Second
)

// parkedTrace is a trace waiting for the sync seq of its process.
type parkedTrace struct {
	raw []byte
	pid uint32
	seq uint64
	at  time.Time
}

// park parks rec, whose record is raw, when it has user frames the tracer
// cannot resolve before a worker reads its process (the process is new,
// an address is outside the mappings read, a file is not identified), and
// hands the process to the sync worker. It reports whether it did; a
// trace that cannot wait (the worker's queue is full) is not parked.
func (t *Tracer) park(rec *record, raw []byte) bool {
	if !t.needsSync(rec) {
		return false
	}
	if !t.enqueue(rec.pid, time.Now()) {
		return false
	}
	p := parkedTrace{raw: slices.Clone(raw), pid: rec.pid, seq: t.inflight[rec.pid].seq, at: time.Now()}
	t.parked = append(t.parked, p)
	t.parkedBytes += len(p.raw)
	for len(t.parked) > maxParkedTraces || t.parkedBytes > maxParkedBytes {
		t.stats.parkOverflows.Add(1)
		t.reportParked(0)
	}
	t.stats.parkedTraces.Store(uint64(len(t.parked)))
	return true
}

// needsSync reports whether rec has user frames that the next sync of its
// process may resolve better than what is known now.
func (t *Tracer) needsSync(rec *record) bool {
	user := false
	for i := range rec.frames {
		if typ := rec.frames[i].typ; typ.Interpreted() || typ == trace.FrameNative {
			user = true
			break
		}
	}
	if !user {
		return false
	}
	proc := t.knownProcess(rec.pid)
	if proc == nil {
		return true
	}
	if s, ok := t.inflight[rec.pid]; ok && !s.read {
		// Being read now: what comes back is newer than what is
		// known.
		return true
	}
	if proc.gone || time.Since(proc.lastRead) < rereadInterval {
		return false
	}
	for i := range rec.frames {
		f := &rec.frames[i]
		if f.typ != trace.FrameNative {
			continue
		}
		m := proc.find(f.addr)
		if m == nil {
			// New code was mapped since the last read (dlopen, a
			// JIT).
			return true
		}
		if m.key == (fileKey{}) {
			continue
		}
		if _, ok := t.files.Peek(m.key); !ok {
			return true
		}
	}
	return false
}

// retryParked reports the parked traces of pid that waited for its sync
// seq (or an earlier one), with what is known now.
func (t *Tracer) retryParked(pid uint32, seq uint64) {
	for i := 0; i < len(t.parked); {
		if p := &t.parked[i]; p.pid == pid && p.seq <= seq {
			t.reportParked(i)
			continue
		}
		i++
	}
	t.stats.parkedTraces.Store(uint64(len(t.parked)))
}

// expireParked reports the traces parked for longer than maxParkedAge, and
// all when all is set, with what is known.
func (t *Tracer) expireParked(now time.Time, all bool) {
	for len(t.parked) > 0 && (all || now.Sub(t.parked[0].at) > maxParkedAge) {
		t.reportParked(0)
	}
	t.stats.parkedTraces.Store(uint64(len(t.parked)))
}

// reportParked unparks the i-th parked trace and reports it.
func (t *Tracer) reportParked(i int) {
	p := t.parked[i]
	t.parked = slices.Delete(t.parked, i, i+1)
	t.parkedBytes -= len(p.raw)
	if err := t.parkedRec.decode(p.raw); err != nil {
		t.stats.decodeErrors.Add(1)
		return
	}
	t.handleTrace(&t.parkedRec, p.raw, true)
}
