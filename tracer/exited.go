package tracer

// exitedProcs remembers the last processes that exited, by pid, oldest
// first out: a fixed ring of slots and an index, so that the exits of
// short-lived processes (hundreds a second) cost no allocation and no list
// upkeep. A process is looked up for the records that follow its exit,
// within exitedTTL, so the order of exits is the order of use: no lookup
// needs to refresh an entry.
type exitedProcs struct {
	slots []exitedSlot
	// next is the slot the next Add fills, evicting what it holds.
	next  int
	index map[uint32]int32
}

// exitedSlot is one remembered process; the slot is free when neither p
// nor exitedK is set. A process nothing was known of when it exited has
// only its exit time (exitedK) until it is looked up: most never are.
type exitedSlot struct {
	pid     uint32
	p       *process
	exitedK uint64
}

// used reports whether the slot holds a process.
func (s *exitedSlot) used() bool {
	return s.p != nil || s.exitedK != 0
}

// newExited returns an empty set of at most maxExited exited processes.
func newExited() *exitedProcs {
	return &exitedProcs{
		slots: make([]exitedSlot, maxExited),
		index: make(map[uint32]int32, maxExited),
	}
}

// Add remembers p as the process of pid that exited last, in place of the
// one remembered before for pid, evicting the oldest when full.
func (e *exitedProcs) Add(pid uint32, p *process) {
	e.add(exitedSlot{pid: pid, p: p})
}

// AddUnknown remembers that the process of pid, of which nothing is known,
// exited at exitedK (CLOCK_MONOTONIC ns, not 0), as Add would a process
// gone at exitedK.
func (e *exitedProcs) AddUnknown(pid uint32, exitedK uint64) {
	e.add(exitedSlot{pid: pid, exitedK: max(exitedK, 1)})
}

func (e *exitedProcs) add(slot exitedSlot) {
	e.Remove(slot.pid)
	s := &e.slots[e.next]
	if s.used() {
		delete(e.index, s.pid)
	}
	*s = slot
	e.index[slot.pid] = int32(e.next)
	e.next++
	if e.next == len(e.slots) {
		e.next = 0
	}
}

// Get returns the process of pid that exited, if remembered. A process
// added by AddUnknown is made on its first lookup, and the same returned
// after.
func (e *exitedProcs) Get(pid uint32) (*process, bool) {
	i, ok := e.index[pid]
	if !ok {
		return nil, false
	}
	s := &e.slots[i]
	if s.p == nil {
		s.p = &process{pid: pid, gone: true, exitedK: s.exitedK}
	}
	return s.p, true
}

// Remove forgets the exited process of pid (its pid runs a new process).
func (e *exitedProcs) Remove(pid uint32) {
	i, ok := e.index[pid]
	if !ok {
		return
	}
	delete(e.index, pid)
	e.slots[i] = exitedSlot{}
}

// Len returns the number of exited processes remembered.
func (e *exitedProcs) Len() int {
	return len(e.index)
}
