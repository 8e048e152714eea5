package tracer

import "testing"

// TestExitedOldestOut checks the set of exited processes: bounded by
// maxExited, oldest exit out first, a pid exiting again (reused) replaces
// its entry and counts as the newest, and a removed pid leaves a hole the
// ring reuses without evicting anything else.
func TestExitedOldestOut(t *testing.T) {
	e := newExited()
	add := func(pid uint32) *process {
		p := &process{pid: pid}
		e.Add(pid, p)
		return p
	}
	for pid := range uint32(maxExited) {
		add(pid)
	}
	if e.Len() != maxExited {
		t.Fatalf("%d remembered, want %d", e.Len(), maxExited)
	}
	// pid 0 exits again: newest now, so pid 1 is the oldest.
	p0 := add(0)
	if e.Len() != maxExited {
		t.Fatalf("%d remembered after a reused pid, want %d", e.Len(), maxExited)
	}
	if got, ok := e.Get(0); !ok || got != p0 {
		t.Fatalf("pid 0: %v %v, want the process added last", got, ok)
	}
	e.Remove(5)
	if _, ok := e.Get(5); ok {
		t.Fatal("pid 5 remembered after Remove")
	}
	e.Remove(5) // not remembered: nothing happens
	add(maxExited)
	if _, ok := e.Get(1); ok {
		t.Error("pid 1, the oldest, kept past the bound")
	}
	for _, pid := range []uint32{0, 2, 3, 4, 6, maxExited - 1, maxExited} {
		if p, ok := e.Get(pid); !ok || p.pid != pid {
			t.Errorf("pid %d: %v %v", pid, p, ok)
		}
	}
	if e.Len() > maxExited {
		t.Errorf("%d remembered, bound %d", e.Len(), maxExited)
	}
	// Many more exits than slots: the bound holds, the last ones stay.
	for pid := uint32(10_000); pid < 10_000+3*maxExited+7; pid++ {
		add(pid)
	}
	if e.Len() != maxExited {
		t.Errorf("%d remembered, want %d", e.Len(), maxExited)
	}
	for pid := uint32(10_000 + 2*maxExited + 7); pid < 10_000+3*maxExited+7; pid++ {
		if _, ok := e.Get(pid); !ok {
			t.Fatalf("pid %d, among the last %d, forgotten", pid, maxExited)
		}
	}
	if _, ok := e.Get(10_000 + 2*maxExited + 6); ok {
		t.Error("an exit older than the last maxExited kept")
	}
}

// TestExitedUnknown: a process nothing was known of is remembered by its
// exit time alone, made on its first lookup (gone, exited then) and the
// same after, so that what a sync brings back for it later is kept; such
// entries are evicted oldest first like the others.
func TestExitedUnknown(t *testing.T) {
	e := newExited()
	e.AddUnknown(7, 12345)
	p, ok := e.Get(7)
	if !ok || p.pid != 7 || !p.gone || p.exitedK != 12345 {
		t.Fatalf("pid 7: %+v %v", p, ok)
	}
	p.name = "read after its exit"
	if again, _ := e.Get(7); again != p {
		t.Error("a second lookup made another process")
	}
	for pid := uint32(100); pid < 100+maxExited; pid++ {
		if pid%2 == 0 {
			e.AddUnknown(pid, uint64(pid))
		} else {
			e.Add(pid, &process{pid: pid})
		}
	}
	if _, ok := e.Get(7); ok {
		t.Error("pid 7, the oldest, kept past the bound")
	}
	if e.Len() != maxExited {
		t.Errorf("%d remembered, want %d", e.Len(), maxExited)
	}
	for pid := uint32(100); pid < 100+maxExited; pid++ {
		if p, ok := e.Get(pid); !ok || p.pid != pid {
			t.Fatalf("pid %d: %+v %v", pid, p, ok)
		}
	}
}
