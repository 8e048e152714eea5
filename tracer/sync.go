package tracer

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/stackline-dev/stackline/internal/elffile"
	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// Timing of process syncs (giving the eBPF unwinder a process's mappings
// and tables).
const (
	// execSyncDelay: after an exec the dynamic loader maps the
	// libraries within milliseconds; the process is synced this much
	// later, before most of its first samples, and again execResyncDelay
	// after the exec, for a loader slowed down by a busy host (a process
	// sampled before asks for itself too).
	execSyncDelay   = 10 * time.Millisecond
	execResyncDelay = 60 * time.Millisecond
	// minSyncInterval rate-limits syncs the eBPF side asks for: as
	// often as it asks at most (SYNC_INTERVAL_NS).
	minSyncInterval = time.Duration(progs.StacklineSyncTimingSYNC_INTERVAL_NS)
	// syncBudget bounds the time spent on queued syncs before going back
	// to the ring buffer.
	syncBudget = 20 * time.Millisecond
	// readInterval is how often the ring buffer is read when no record
	// asks to be read earlier. It bounds the delay of exec events and of
	// cancellation.
	readInterval = 100 * time.Millisecond
)

// dueSync is a queued sync of a process.
type dueSync struct {
	pid uint32
	at  time.Time
}

// syncProcess reads pid's executable mappings and gives them, with the
// unwind tables of the files behind them, to the eBPF unwinder.
func (t *Tracer) syncProcess(pid uint32, now time.Time) {
	p := t.processes[pid]
	if p == nil {
		p = &process{pid: pid}
		t.processes[pid] = p
	}
	t.readMappings(p)
	if p.gone && !p.synced.IsZero() {
		// Exited since it was synced: keep what eBPF and the records
		// still queued need until its exit record (or the sweep).
		return
	}
	if p.gone || len(p.mappings) == 0 {
		// Exited before its first sync, or a kernel thread: nothing
		// to unwind.
		t.forget(pid)
		return
	}
	t.stats.syncs.Add(1)
	p.synced = now
	old := p.tables
	p.tables = make([]*unwindTable, 0, len(p.mappings))
	entries := make([]progs.StacklineExecMapping, 0, len(p.mappings))
	for i := range p.mappings {
		m := &p.mappings[i]
		e := progs.StacklineExecMapping{Start: m.start, End: m.end, Bias: m.start - m.offset}
		// The file is opened and parsed once, if at all, for its
		// identity, its table and whether it is an interpreter.
		mf := t.mappedFile(p, m)
		if tb := t.mappingTable(p, m, mf, now); tb != nil {
			p.tables = append(p.tables, tb)
			e.Table, e.NumRows = tb.key, tb.rows
		}
		t.checkInterpreter(p, m, mf)
		mf.close()
		entries = append(entries, e)
	}
	// Release after acquiring, so tables the old and new mappings share
	// are never unloaded in between.
	for _, tb := range old {
		t.tables.release(tb, now)
	}
	t.attachInterpreter(p)
	p.setRuntime(t.processRuntime(p))
	if len(entries) > maxMappings {
		// The eBPF binary search covers this many; the rest (the
		// highest addresses) are unwound as if unmapped.
		t.stats.syncErrors.Add(1)
		entries = entries[:maxMappings]
	}
	if err := t.putMappings(p, entries); err != nil {
		t.stats.syncErrors.Add(1)
		t.log.Debug("give process mappings to eBPF", "pid", pid, "error", err)
	}
	t.log.Debug("process synced", "pid", pid, "mappings", len(entries), "tables", len(p.tables), "took", time.Since(now))
}

// mappingTable returns the unwind table for m, acquired for p, or nil when
// m has none (anonymous or JIT code). A table not loaded yet is built from
// mf.
func (t *Tracer) mappingTable(p *process, m *mapping, mf *mappedFile, now time.Time) *unwindTable {
	if m.key == (fileKey{}) {
		if m.path == "[vdso]" && t.vdso != nil {
			t.tables.retain(t.vdso)
			return t.vdso
		}
		return nil
	}
	fi := t.file(p, m, mf)
	if fi == nil {
		return nil
	}
	src := tableSource{
		open: func() (f, debug *elffile.File, err error) {
			if f, err = mf.elf(); err != nil {
				return nil, nil, err
			}
			debug = mf.debug()
			// The symbolizer looks there first when it loads the file.
			fi.debugPath = f.DebugPath()
			return f, debug, nil
		},
	}
	return t.tables.acquire(fi.id, m.key, fi.exec.FileName, src, now)
}

// forget drops everything known of pid, in eBPF too.
func (t *Tracer) forget(pid uint32) {
	p := t.processes[pid]
	if p == nil {
		return
	}
	now := time.Now()
	for _, tb := range p.tables {
		t.tables.release(tb, now)
	}
	t.detachInterpreter(p)
	delete(t.processes, pid)
	if t.objs.Processes == nil {
		return // not loaded (tests of the bookkeeping alone)
	}
	if err := t.objs.Processes.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.log.Debug("forget process", "pid", pid, "error", err)
	}
	t.deleteMappings(p, p.gen, p.numMappings)
	p.numMappings = 0
}

// maxMappings is the most mappings of one process the eBPF unwinder
// searches (MAX_MAPPINGS_LOG2).
const maxMappings = 1 << progs.StacklineUnwindBoundsMAX_MAPPINGS_LOG2

// mappingEntryBytes estimates the kernel memory of one process_mappings
// entry: key, value and the hash table's element header (56 bytes).
const mappingEntryBytes = uint64(unsafe.Sizeof(progs.StacklineMappingKey{}) + unsafe.Sizeof(progs.StacklineExecMapping{}) + 56)

// putMappings gives p's mappings to eBPF: the new set is written under the
// other generation, the process switched to it, then the old set deleted,
// so a sample never mixes the two sets. (One that read the old generation
// just before the switch may find its entries gone mid-search: it then
// finds the mapping in the kernel, as for a process not synced yet.) None
// of it waits for an RCU grace period, unlike replacing an inner map.
func (t *Tracer) putMappings(p *process, entries []progs.StacklineExecMapping) error {
	gen := p.gen ^ 1
	if len(entries) > 0 {
		keys := mappingKeys(p.pid, gen, len(entries))
		if _, err := t.objs.ProcessMappings.BatchUpdate(keys, entries, nil); err != nil {
			t.deleteMappings(p, gen, len(entries))
			return fmt.Errorf("put %d mappings: %w", len(entries), err)
		}
	}
	info := progs.StacklineProcessInfo{NumMappings: uint32(len(entries)), Gen: gen}
	if err := t.objs.Processes.Put(p.pid, info); err != nil {
		t.deleteMappings(p, gen, len(entries))
		return fmt.Errorf("put process: %w", err)
	}
	t.deleteMappings(p, p.gen, p.numMappings)
	p.gen = gen
	p.numMappings = len(entries)
	t.processBytes += uint64(len(entries)) * mappingEntryBytes
	return nil
}

// deleteMappings deletes p's n mappings of generation gen from eBPF.
func (t *Tracer) deleteMappings(p *process, gen uint32, n int) {
	if n == 0 || t.objs.ProcessMappings == nil {
		return
	}
	if gen == p.gen && n == p.numMappings {
		t.processBytes -= uint64(n) * mappingEntryBytes
	}
	if _, err := t.objs.ProcessMappings.BatchDelete(mappingKeys(p.pid, gen, n), nil); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.log.Debug("delete process mappings", "pid", p.pid, "error", err)
	}
}

// mappingKeys returns the process_mappings keys of pid's n mappings of
// generation gen.
func mappingKeys(pid, gen uint32, n int) []progs.StacklineMappingKey {
	keys := make([]progs.StacklineMappingKey, n)
	for i := range keys {
		keys[i] = progs.StacklineMappingKey{Pid: pid, Slot: gen<<mappingGenShift | uint32(i)}
	}
	return keys
}

// mappingGenShift is MAPPING_GEN_SHIFT.
const mappingGenShift = progs.StacklineUnwindBoundsMAPPING_GEN_SHIFT

// requestSync handles the eBPF side's request for pid's mappings.
func (t *Tracer) requestSync(pid uint32, now time.Time) {
	if p := t.processes[pid]; p != nil && now.Sub(p.synced) < minSyncInterval {
		// Synced just now: the request raced the sync, or the address
		// is outside every mapping indeed. Look again a bit later.
		t.schedule(pid, p.synced.Add(minSyncInterval))
		return
	}
	t.syncProcess(pid, now)
}

// execSyncTime returns when to sync a process that exec'd at ktime
// (CLOCK_MONOTONIC ns): delay after the exec, not after the event was
// read, which may be up to readInterval later.
func (t *Tracer) execSyncTime(ktime uint64, now time.Time, delay time.Duration) time.Time {
	at := time.Unix(0, int64(ktime)+t.monoToWall).Add(delay)
	if latest := now.Add(delay); at.After(latest) {
		// The clocks disagree (the wall clock was set back).
		return latest
	}
	return at
}

// unschedule drops the queued syncs of pid, which exited.
func (t *Tracer) unschedule(pid uint32) {
	t.due = slices.DeleteFunc(t.due, func(d dueSync) bool { return d.pid == pid })
}

// schedule queues a sync of pid at at, unless one is queued already
// within a few milliseconds of it.
func (t *Tracer) schedule(pid uint32, at time.Time) {
	const near = 5 * time.Millisecond
	for _, d := range t.due {
		if d.pid == pid && d.at.Sub(at) < near && at.Sub(d.at) < near {
			return
		}
	}
	t.due = append(t.due, dueSync{pid: pid, at: at})
}

// runDue runs the queued syncs that are due, then syncs from the backlog,
// within syncBudget, and returns when the next one is due (zero when none
// is queued).
func (t *Tracer) runDue(now time.Time) time.Time {
	deadline := now.Add(syncBudget)
	var next time.Time
	keep := t.due[:0]
	for _, d := range t.due {
		if !d.at.After(now) && time.Now().Before(deadline) {
			if p := t.processes[d.pid]; p == nil || p.synced.Before(d.at) {
				t.syncProcess(d.pid, time.Now())
			}
			continue
		}
		keep = append(keep, d)
		if next.IsZero() || d.at.Before(next) {
			next = d.at
		}
	}
	clear(t.due[len(keep):])
	t.due = keep
	for len(t.backlog) > 0 && time.Now().Before(deadline) {
		pid := t.backlog[len(t.backlog)-1]
		t.backlog = t.backlog[:len(t.backlog)-1]
		if _, ok := t.processes[pid]; !ok {
			t.syncProcess(pid, time.Now())
		}
	}
	if len(t.backlog) > 0 {
		return now
	}
	return next
}

// scheduleAll puts every process running now in the backlog, synced after
// the processes that ask (exec, samples) so their tables are loaded
// before their samples ask for them.
func (t *Tracer) scheduleAll() {
	dir, err := os.ReadDir(t.cfg.ProcRoot)
	if err != nil {
		t.log.Warn("list processes", "error", err)
		return
	}
	for _, e := range dir {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || pid == 0 {
			continue
		}
		t.backlog = append(t.backlog, uint32(pid))
	}
}
