package tracer

import (
	"context"
	"io/fs"
	"sync/atomic"
	"testing"

	"github.com/stackline-dev/stackline/trace"
)

// TestResultsWake: every result a worker hands back wakes the Run
// goroutine at once, that of a table a sample asked for (nothing waits
// for it) too: it comes at the end of the worker's work, while the agent
// is awake anyway.
func TestResultsWake(t *testing.T) {
	var woken atomic.Int32
	w := &workers{results: make(chan syncResult, 8), wake: func() { woken.Add(1) }}
	ctx := context.Background()
	for i, r := range []syncResult{
		{job: &syncJob{pid: 1}, final: true}, // the tables of a sync
		{symbols: &symbolJob{}},              // symbols loaded
		{file: trace.FileID{1}},              // a table a sample asked for
		{file: trace.FileID{2}},              // known already (no table)
	} {
		if !w.send(ctx, r) {
			t.Fatalf("result %d not handed back", i)
		}
		if n := woken.Load(); n != int32(i+1) {
			t.Fatalf("result %d: Run woken %d times in all, want %d (at once)", i, n, i+1)
		}
	}
	if len(w.results) != 4 {
		t.Fatalf("%d results handed back, want 4", len(w.results))
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	for range 4 {
		w.results <- syncResult{}
	}
	if w.send(canceled, syncResult{file: trace.FileID{3}}) || woken.Load() != 4 {
		t.Fatal("a result handed back, or Run woken, with the queue full and the workers stopped")
	}
}

// TestSyncWakes checks how the sync worker's results wake the Run
// goroutine (sendSync): a process read, or found gone, wakes it at once
// when no other sync waits; with syncs queued behind it, the last of
// them (at most maxUnwoken+1 results) wakes it for all.
func TestSyncWakes(t *testing.T) {
	var woken atomic.Int32
	w := &workers{results: make(chan syncResult, 16), syncs: make(chan *syncJob, 16), firstSyncs: make(chan *syncJob, 16),
		wake: func() { woken.Add(1) }}
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
	w.sendSync(ctx, gone(), &unwoken)
	if n := woken.Load(); n != 2 {
		t.Fatalf("a process gone, no sync queued, woke Run %d times, want 1", n-1)
	}

	// Syncs queued: one wake-up for up to maxUnwoken+1 results.
	for range maxUnwoken + 3 {
		w.firstSyncs <- &syncJob{}
	}
	for i := range maxUnwoken + 1 {
		<-w.firstSyncs
		w.sendSync(ctx, read(), &unwoken)
		if n := woken.Load(); i < maxUnwoken && n != 2 {
			t.Fatalf("result %d with syncs queued woke Run (%d wake-ups)", i, n-2)
		}
	}
	if n := woken.Load(); n != 3 {
		t.Fatalf("%d results with syncs queued woke Run %d times, want once", maxUnwoken+1, n-2)
	}
	// The last of the queued syncs wakes Run, of a process gone too.
	<-w.firstSyncs
	w.sendSync(ctx, gone(), &unwoken)
	<-w.firstSyncs
	w.sendSync(ctx, gone(), &unwoken)
	if n := woken.Load(); n != 4 || unwoken != 0 {
		t.Fatalf("the last of the queued syncs, of a process gone, woke Run %d times, want once (%d results unwoken)", n-3, unwoken)
	}
}
