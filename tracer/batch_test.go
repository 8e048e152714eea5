package tracer

import (
	"testing"

	"github.com/stackline-dev/stackline/trace"
)

// TestExitInBatchDropsSync: a sync asked for while Run reads a batch of
// records (for a trace of a process not read yet, which parks for it) is
// handed to the sync worker at the end of the batch, unless the process's
// exit follows in the batch: then no sync is handed over and the trace is
// reported at once with what its record says, as the sync's finding the
// process gone would have it.
func TestExitInBatchDropsSync(t *testing.T) {
	tr := benchTracer(t)
	rep := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr.cfg.Reporter = rep
	tr.w = &workers{syncs: make(chan *syncJob, syncQueueLen), firstSyncs: make(chan *syncJob, syncQueueLen)}
	frames := []rawFrame{{addr: 0x401000, typ: trace.FrameNative}}

	// Sampled, then exited, in one batch.
	const gone, live = 1001, 1002
	tr.batch.reading = true
	tr.handle(encodeTrace(gone, gone, "true", frames, 0))
	if len(tr.parked) != 1 || len(tr.batch.syncs) != 1 {
		t.Fatalf("a trace of a process not read: %d parked, %d syncs asked, want 1 and 1", len(tr.parked), len(tr.batch.syncs))
	}
	if len(tr.w.firstSyncs) != 0 {
		t.Fatal("a sync handed to the worker before the end of the batch")
	}
	tr.handle(processEvent(t, recordProcessExit, gone, 20_000))
	tr.handOff()
	if n := len(tr.w.firstSyncs) + len(tr.w.syncs); n != 0 {
		t.Fatalf("%d syncs handed over for a process whose exit was in the batch", n)
	}
	if len(tr.inflight) != 0 || len(tr.parked) != 0 {
		t.Fatalf("after the batch: %d syncs in flight, %d traces parked, want none", len(tr.inflight), len(tr.parked))
	}
	if len(rep.traces) != 1 || rep.traces[0].meta.PID != gone || rep.traces[0].meta.ProcessName != "true" {
		t.Fatalf("traces reported: %+v, want the trace of %d named by its record", rep.traces, gone)
	}

	// Sampled, alive at the end of the batch.
	tr.batch.reading = true
	tr.handle(encodeTrace(live, live, "cc1", frames, 0))
	tr.handOff()
	if len(tr.w.firstSyncs) != 1 || len(tr.parked) != 1 || len(rep.traces) != 1 {
		t.Fatalf("a process alive at the end of the batch: %d syncs handed over, %d traces parked, %d reported; want 1, 1, 1",
			len(tr.w.firstSyncs), len(tr.parked), len(rep.traces))
	}
	if j := <-tr.w.firstSyncs; j.pid != live || tr.inflight[live].seq != j.seq || tr.parked[0].seq != j.seq {
		t.Fatalf("sync of %d handed over (seq %d), in flight %+v, the trace waits for %d", j.pid, j.seq, tr.inflight[live], tr.parked[0].seq)
	}
	if len(tr.batch.syncs) != 0 || tr.batch.reading {
		t.Fatal("the batch's syncs are still kept after it")
	}
}

// TestBatchQueueRoom: syncs asked for during a batch count against the
// room of the sync worker's queue, as if handed over: past it, enqueue
// reports false (the caller schedules the sync), and the end of the batch
// hands over every one it took.
func TestBatchQueueRoom(t *testing.T) {
	tr := benchTracer(t)
	tr.w = &workers{syncs: make(chan *syncJob, 2), firstSyncs: make(chan *syncJob, 2)}
	tr.w.firstSyncs <- &syncJob{pid: 1}
	tr.batch.reading = true
	if !tr.enqueue(2, tr.lastSweep) {
		t.Fatal("a sync not taken with room for it")
	}
	if tr.enqueue(3, tr.lastSweep) {
		t.Fatal("a sync taken past the queue's room")
	}
	tr.handOff()
	if len(tr.w.firstSyncs) != 2 {
		t.Fatalf("%d syncs queued after the batch, want 2", len(tr.w.firstSyncs))
	}
	if _, ok := tr.inflight[3]; ok {
		t.Fatal("a sync not taken is in flight")
	}
}
