package tracer

import (
	"context"
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
