package tracer

import (
	"context"
	"io/fs"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/trace"
)

// TestWakeLater: a result a process or trace waits for (a process read,
// symbols) wakes the Run goroutine at once; a table built because a
// sample reached it does not, but within resultWakeDelay, unless Run
// looks at the results first, which cancels that wake-up.
func TestWakeLater(t *testing.T) {
	var woken atomic.Int32
	w := &workers{results: make(chan syncResult, 8)}
	w.setWake(func() { woken.Add(1) })
	defer w.later.Stop()
	ctx := context.Background()

	w.send(ctx, syncResult{job: &syncJob{pid: 1}, final: true})
	if n := woken.Load(); n != 1 {
		t.Fatalf("a process read woke Run %d times, want 1 at once", n)
	}
	w.send(ctx, syncResult{symbols: &symbolJob{}})
	if n := woken.Load(); n != 2 {
		t.Fatalf("symbols loaded woke Run %d times in all, want 2 at once", n)
	}

	// Looked at before the delay: no wake-up.
	w.send(ctx, syncResult{file: trace.FileID{1}})
	if n := woken.Load(); n != 2 || !w.laterArmed.Load() {
		t.Fatalf("a table built woke Run at once (%d wake-ups, a later one set: %v)", n-2, w.laterArmed.Load())
	}
	w.looked()
	if w.laterArmed.Load() || w.later.Stop() {
		t.Fatal("the wake-up for the table is still set once Run looked")
	}

	// Not looked at: woken once, within the delay, for two results.
	start := time.Now()
	w.send(ctx, syncResult{file: trace.FileID{2}})
	w.send(ctx, syncResult{file: trace.FileID{3}})
	for woken.Load() == 2 && time.Since(start) < 10*resultWakeDelay {
		time.Sleep(time.Millisecond)
	}
	if n := woken.Load(); n != 3 {
		t.Fatalf("two tables built woke Run %d times, want once", n-2)
	}
	if d := time.Since(start); d < resultWakeDelay {
		t.Errorf("tables built woke Run after %v, before resultWakeDelay (%v)", d, resultWakeDelay)
	}
	for range 3 {
		<-w.results
	}
}

// TestSyncWakes checks how the sync worker's results wake the Run
// goroutine (sendSync): a process read wakes it at once when no other sync
// waits; with syncs queued behind it, the last of them (at most
// maxUnwoken+1 results) wakes it for all; a process found gone wakes it
// within resultWakeDelay, unless results before it wait for a wake-up.
func TestSyncWakes(t *testing.T) {
	var woken atomic.Int32
	w := &workers{results: make(chan syncResult, 16), syncs: make(chan *syncJob, 16), firstSyncs: make(chan *syncJob, 16)}
	w.setWake(func() { woken.Add(1) })
	defer w.later.Stop()
	ctx := context.Background()
	unwoken := 0
	read := func() syncResult { return syncResult{job: &syncJob{pid: 1}, final: true} }
	gone := func() syncResult {
		return syncResult{job: &syncJob{pid: 2, err: fs.ErrNotExist}, final: true}
	}

	w.sendSync(ctx, read(), &unwoken)
	if n := woken.Load(); n != 1 {
		t.Fatalf("a process read, no sync queued, woke Run %d times, want 1", n)
	}

	// Syncs queued: one wake-up for up to maxUnwoken+1 results.
	for range maxUnwoken + 3 {
		w.syncs <- &syncJob{}
	}
	for i := range maxUnwoken + 1 {
		<-w.syncs
		w.sendSync(ctx, read(), &unwoken)
		if n, want := woken.Load(), int32(1); i < maxUnwoken && n != want {
			t.Fatalf("result %d with syncs queued woke Run (%d wake-ups)", i, n-1)
		}
	}
	if n := woken.Load(); n != 2 {
		t.Fatalf("%d results with syncs queued woke Run %d times, want once", maxUnwoken+1, n-1)
	}
	<-w.syncs
	w.sendSync(ctx, read(), &unwoken)
	// One waits for a wake-up: the next result wakes Run, even of a
	// process gone.
	<-w.syncs
	w.sendSync(ctx, gone(), &unwoken)
	if n := woken.Load(); n != 3 || unwoken != 0 {
		t.Fatalf("the last of the queued syncs, of a process gone, woke Run %d times, want once (%d results unwoken)", n-2, unwoken)
	}

	// A process gone alone: within resultWakeDelay.
	start := time.Now()
	w.sendSync(ctx, gone(), &unwoken)
	if woken.Load() != 3 || !w.laterArmed.Load() {
		t.Fatal("a process gone woke Run at once")
	}
	for woken.Load() == 3 && time.Since(start) < 10*resultWakeDelay {
		time.Sleep(time.Millisecond)
	}
	if n := woken.Load(); n != 4 {
		t.Fatalf("a process gone woke Run %d times, want once", n-3)
	}
	if d := time.Since(start); d < resultWakeDelay {
		t.Errorf("a process gone woke Run after %v, before resultWakeDelay (%v)", d, resultWakeDelay)
	}
}
