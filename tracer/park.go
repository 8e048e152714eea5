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

// parkedTrace is a trace waiting for the worker's job seq: the sync of its
// process, or the symbols of one of its files; seq 0 waits for any sync
// of its process.
type parkedTrace struct {
	raw []byte
	pid uint32
	seq uint64
	at  time.Time
}

// park parks rec, whose record is raw, until the sync worker has read its
// process, handing the process to it, or, when the worker's queue is
// full, scheduling the read for when it has room. It reports whether it
// parked rec.
func (t *Tracer) park(rec *record, raw []byte) bool {
	now := time.Now()
	if !t.enqueue(rec.pid, now) {
		// Waits for any read of the process (seq 0).
		t.schedule(rec.pid, now)
		t.parkOn(rec, raw, 0)
		return true
	}
	t.parkOn(rec, raw, t.inflight[rec.pid].seq)
	return true
}

// parkOn parks rec, whose record is raw, until the workers' job seq is
// done.
func (t *Tracer) parkOn(rec *record, raw []byte, seq uint64) {
	at := t.parkedSince
	if at.IsZero() {
		at = time.Now()
	}
	p := parkedTrace{raw: slices.Clone(raw), pid: rec.pid, seq: seq, at: at}
	// The parked traces stay in the order they were first parked, which
	// expireParked relies on.
	i := len(t.parked)
	if i > 0 && at.Before(t.parked[i-1].at) {
		i, _ = slices.BinarySearchFunc(t.parked, at, func(q parkedTrace, at time.Time) int { return q.at.Compare(at) })
	}
	t.parked = slices.Insert(t.parked, i, p)
	t.parkedBytes += len(p.raw)
	for len(t.parked) > maxParkedTraces || t.parkedBytes > maxParkedBytes {
		t.stats.parkOverflows.Add(1)
		t.reportOldest()
	}
	t.stats.parkedTraces.Store(uint64(len(t.parked)))
}

// unread reports whether rec has user frames of a process the workers have
// not read, or are reading now: what they bring back is newer than what is
// known.
func (t *Tracer) unread(rec *record) bool {
	user := false
	for i := range rec.frames {
		if typ := rec.frames[i].typ; typ == trace.FrameNative || typ.Interpreted() {
			user = true
			break
		}
	}
	if !user {
		return false
	}
	if s, ok := t.inflight[rec.pid]; ok && !s.read {
		return true
	}
	return t.knownProcess(rec.pid, rec.ktimeNS) == nil
}

// retryParked handles again the parked traces that waited for the
// workers' job seq, or (pid not 0) for any read of process pid: reported,
// or parked again for the next job they need (the symbols of their files
// after the read of their process), counted from when they were first
// parked. It takes them out in one pass, the others keeping their order.
func (t *Tracer) retryParked(seq uint64, pid uint32) {
	// The buffer is taken while the traces are handled: handling one
	// parks, never retries, but a buffer in use is not shared.
	retry := t.retry[:0]
	t.retry = nil
	kept := t.parked[:0]
	for _, p := range t.parked {
		if p.seq == seq || p.seq == 0 && pid != 0 && p.pid == pid {
			retry = append(retry, p)
			t.parkedBytes -= len(p.raw)
			continue
		}
		kept = append(kept, p)
	}
	clear(t.parked[len(kept):])
	t.parked = kept
	for i := range retry {
		t.handleParked(retry[i], false)
	}
	clear(retry)
	t.retry = retry[:0]
	t.stats.parkedTraces.Store(uint64(len(t.parked)))
}

// expireParked reports the traces parked for longer than maxParkedAge, and
// all when all is set, with what is known.
func (t *Tracer) expireParked(now time.Time, all bool) {
	for len(t.parked) > 0 && (all || now.Sub(t.parked[0].at) > maxParkedAge) {
		t.reportOldest()
	}
	t.stats.parkedTraces.Store(uint64(len(t.parked)))
}

// reportOldest unparks the trace parked first and reports it with what is
// known, without waiting any more. The others stay where they are: the
// parked traces are a window on their array, advanced at the front.
func (t *Tracer) reportOldest() {
	p := t.parked[0]
	t.parked[0] = parkedTrace{}
	t.parked = t.parked[1:]
	t.parkedBytes -= len(p.raw)
	t.handleParked(p, true)
}

// handleParked handles p, unparked; final says to report it with what is
// known.
func (t *Tracer) handleParked(p parkedTrace, final bool) {
	if err := t.parkedRec.decode(p.raw); err != nil {
		t.stats.decodeErrors.Add(1)
		return
	}
	// Parked again, it keeps its age: it waits maxParkedAge in all.
	t.parkedSince = p.at
	t.handleTrace(&t.parkedRec, p.raw, final)
	t.parkedSince = time.Time{}
}
