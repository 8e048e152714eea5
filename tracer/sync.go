package tracer

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"github.com/stackline-dev/stackline/internal/elffile"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// Timing of process syncs (giving the eBPF unwinder a process's mappings
// and tables).
const (
	// execSyncDelay: after an exec the dynamic loader maps the
	// libraries within milliseconds; a process running an executable
	// not known yet is synced this much later (one sampled before asks
	// for itself).
	execSyncDelay = 10 * time.Millisecond
	// minSyncInterval rate-limits syncs the eBPF side asks for: as
	// often as it asks at most (SYNC_INTERVAL_NS).
	minSyncInterval = time.Duration(progs.StacklineSyncTimingSYNC_INTERVAL_NS)
	// workerPoll is how soon the Run goroutine tries again to hand
	// syncs to the sync worker when its queue is full.
	workerPoll = 2 * time.Millisecond
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

// enqueue hands a sync of pid, asked for at at, to the sync worker, and
// reports whether it could: false when the worker's queue is full. A sync
// of pid already with the workers stands for this one.
func (t *Tracer) enqueue(pid uint32, at time.Time) bool {
	return t.enqueueJob(pid, at, false)
}

// enqueueJob is enqueue; background says the sync is of a process running
// at start that nothing asked for yet.
func (t *Tracer) enqueueJob(pid uint32, at time.Time, background bool) bool {
	if _, ok := t.inflight[pid]; ok {
		return true
	}
	t.seq++
	j := &syncJob{pid: pid, seq: t.seq, at: at, background: background}
	if p := t.processes[pid]; p != nil {
		j.hadMappings = len(p.mappings) > 0
		j.meta, j.metaRead = p.meta, p.metaRead
	}
	queue := t.w.syncs
	if t.processes[pid] == nil && !background {
		// Not read since it started: the sync worker reads it before
		// the others, while it lives.
		queue = t.w.firstSyncs
	}
	select {
	case queue <- j:
		t.inflight[pid] = inflightSync{seq: j.seq}
		return true
	default:
		return false
	}
}

// loadSymbols hands the load of file id's symbols, from the source src
// returns, to the symbol worker, and returns the job to wait for: 0 when
// the worker's queue is full (the Run goroutine then loads them itself).
func (t *Tracer) loadSymbols(id trace.FileID, src func() elffile.Source) uint64 {
	if seq, ok := t.symbolLoads[id]; ok {
		return seq
	}
	t.seq++
	select {
	case t.w.symbols <- &symbolJob{id: id, src: src(), seq: t.seq}:
		t.symbolLoads[id] = t.seq
		return t.seq
	default:
		return 0
	}
}

// apply takes in what a worker found of a process: its mappings, names and
// files' identities, then each table built for it, and gives them to the
// eBPF unwinder. It runs on the Run goroutine, which owns the processes
// and the eBPF maps.
func (t *Tracer) apply(r syncResult, now time.Time) {
	if r.symbols != nil {
		delete(t.symbolLoads, r.symbols.id)
		t.symbolsLoaded.Add(r.symbols.id, struct{}{})
		t.held.release(r.symbols.id)
		t.retryParked(r.symbols.seq, 0)
		return
	}
	j := r.job
	s, fresh := t.inflight[j.pid]
	fresh = fresh && s.seq == j.seq
	switch {
	case r.final && fresh:
		delete(t.inflight, j.pid)
	case fresh:
		// Read: its traces need not wait for the tables.
		t.inflight[j.pid] = inflightSync{seq: j.seq, read: true}
	}
	built := make(map[trace.FileID]*builtTable)
	if r.table != nil {
		built[r.table.id] = r.table
	}
	if fresh && (r.table != nil || r.final || !s.read) {
		t.applyProcess(j, built, r.final, now)
	}
	// Tables built for a process that exec'd or exited meanwhile serve
	// the next one mapping the same files (the eBPF unwinder finds them
	// by device and inode).
	for id, b := range built {
		if tb := t.tables.acquire(id, b.file, b.name, b, now); tb != nil {
			t.tables.release(tb, now)
		}
	}
	t.retryParked(j.seq, j.pid)
}

// applyProcess updates the process of j, or the exited one, from what the
// sync worker read, and gives it to eBPF. Built tables it uses are taken
// out of built.
func (t *Tracer) applyProcess(j *syncJob, built map[trace.FileID]*builtTable, final bool, now time.Time) {
	pid := j.pid
	p := t.processes[pid]
	live := p != nil
	if !live {
		// Exited meanwhile: what was read names its last records.
		p, _ = t.exited.Get(pid)
	}
	if j.err != nil {
		if !isNotExist(j.err) {
			t.log.Debug("read process", "pid", pid, "error", j.err)
		}
		if p == nil {
			// Gone before it was read, or unreadable: its
			// records that follow are reported as they are,
			// without reading again (a trace parked for the
			// read would park again and ask for another, as
			// fast as the sync worker reads).
			t.exited.Add(pid, &process{pid: pid, gone: true, exitedK: t.ktime(now)})
			return
		}
		p.gone = true
		if live && p.synced.IsZero() {
			// Exited before its first sync: nothing to unwind.
			t.forget(pid)
		}
		return
	}
	if p == nil {
		p = &process{pid: pid}
		t.processes[pid] = p
		live = true
	}
	s := &j.snap
	p.mappings, p.executablePath, p.name = s.mappings, s.executablePath, s.name
	for i := range p.mappings {
		if i < len(j.files) {
			p.mappings[i].fi = j.files[i]
		}
	}
	p.meta, p.metaRead, p.lastRead, p.gone = s.meta, s.metaRead, s.lastRead, !live
	if !live {
		return
	}
	if len(p.mappings) == 0 {
		// A kernel thread, or a process whose memory is gone (it is
		// exiting, a zombie not reaped yet): nothing to unwind. Its
		// records that follow are reported with what is known, not
		// parked for another read that would find the same.
		t.forget(pid)
		p.gone, p.exitedK = true, t.ktime(now)
		t.exited.Add(pid, p)
		return
	}
	t.syncProcess(p, j.files, built, final, j.at, now)
}

// syncProcess gives p's mappings, whose files' identities are files, to
// the eBPF unwinder with the unwind tables of the files behind them,
// loading those in built.
func (t *Tracer) syncProcess(p *process, files []*fileInfo, built map[trace.FileID]*builtTable, final bool, at, now time.Time) {
	t.stats.syncs.Add(1)
	p.synced = now
	old := p.tables
	p.tables = make([]*unwindTable, 0, len(p.mappings))
	entries := make([]progs.StacklineExecMapping, 0, len(p.mappings))
	missing := false
	for i := range p.mappings {
		m := &p.mappings[i]
		e := progs.StacklineExecMapping{Start: m.start, End: m.end, Bias: m.start - m.offset}
		if m.key == (fileKey{}) && m.path == "" {
			// Anonymous executable memory: a JIT's code.
			e.Flags = uint32(progs.StacklineMappingFlagsMAPPING_FLAG_ANON)
		}
		var fi *fileInfo
		if i < len(files) {
			fi = files[i]
		}
		tb := t.mappingTable(m, fi, built, now)
		if tb != nil {
			p.tables = append(p.tables, tb)
			e.Table, e.NumRows = tb.key, tb.rows
		} else if fi != nil {
			// Its table is being built: the unwinder stops there
			// (no unwind information, and asks for a sync) rather
			// than follow frame pointers the code may not keep.
			missing = true
			e.Table, e.NumRows = pendingTable, 1
		}
		entries = append(entries, e)
	}
	// Release after acquiring, so tables the old and new mappings share
	// are never unloaded in between.
	for _, tb := range old {
		t.tables.release(tb, now)
	}
	t.attachInterpreter(p, files)
	p.setRuntime(t.processRuntime(p))
	if len(entries) > maxMappings {
		// The eBPF binary search covers this many; the rest (the
		// highest addresses) are unwound as if unmapped.
		t.stats.syncErrors.Add(1)
		entries = entries[:maxMappings]
	}
	if err := t.putMappings(p, entries); err != nil {
		t.stats.syncErrors.Add(1)
		t.log.Debug("give process mappings to eBPF", "pid", p.pid, "error", err)
	}
	if missing && final {
		// A table was unloaded between the worker's look and now, or
		// the build worker was busy: build it at the next sync.
		t.schedule(p.pid, now.Add(minSyncInterval))
	}
	t.log.Debug("process synced", "pid", p.pid, "mappings", len(entries), "tables", len(p.tables), "final", final, "after", now.Sub(at))
}

// pendingTable is the table key of mappings whose table is not loaded yet:
// no table has it (a file ID starting with 8 zero bytes is as likely as a
// hash collision).
const pendingTable = 0

// mappingTable returns the unwind table for m, whose file's identity is
// fi, acquired for its process, or nil when m has none (anonymous or JIT
// code) or it is not built yet. Tables not loaded yet are loaded from
// built, and taken out of it.
func (t *Tracer) mappingTable(m *mapping, fi *fileInfo, built map[trace.FileID]*builtTable, now time.Time) *unwindTable {
	if m.key == (fileKey{}) {
		if m.path == "[vdso]" && t.vdso != nil {
			t.tables.retain(t.vdso)
			return t.vdso
		}
		return nil
	}
	if fi == nil {
		return nil
	}
	b := built[fi.id]
	delete(built, fi.id)
	return t.tables.acquire(fi.id, m.key, fi.exec.FileName, b, now)
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
	if err := t.maps.deleteProcess(pid); err != nil {
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
		if err := t.maps.putMappings(keys, entries); err != nil {
			t.deleteMappings(p, gen, len(entries))
			return fmt.Errorf("put %d mappings: %w", len(entries), err)
		}
	}
	info := progs.StacklineProcessInfo{NumMappings: uint32(len(entries)), Gen: gen}
	if err := t.maps.putProcess(p.pid, info); err != nil {
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
	if n == 0 {
		return
	}
	if gen == p.gen && n == p.numMappings {
		t.processBytes -= uint64(n) * mappingEntryBytes
	}
	if err := t.maps.deleteMappings(mappingKeys(p.pid, gen, n)); err != nil {
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
	if !t.enqueue(pid, now) {
		t.schedule(pid, now)
	}
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

// runDue hands the queued syncs that are due, then syncs from the backlog,
// to the sync worker while its queue has room, and returns when the next
// one is due (zero when none is queued).
func (t *Tracer) runDue(now time.Time) time.Time {
	var next time.Time
	keep := t.due[:0]
	full := false
	for _, d := range t.due {
		if !d.at.After(now) && !full {
			p := t.processes[d.pid]
			if p != nil && !p.synced.Before(d.at) {
				continue
			}
			if _, busy := t.inflight[d.pid]; !busy {
				if t.enqueue(d.pid, now) {
					continue
				}
				full = true
			}
		}
		keep = append(keep, d)
		if next.IsZero() || d.at.Before(next) {
			next = d.at
		}
	}
	clear(t.due[len(keep):])
	t.due = keep
	// Few of the backlog wait for the sync worker at once, so that the
	// syncs asked for meanwhile do not wait behind all of it.
	for len(t.backlog) > 0 && !full {
		if len(t.w.syncs) >= backlogQueueLen {
			full = true
			break
		}
		pid := t.backlog[len(t.backlog)-1]
		if _, ok := t.processes[pid]; !ok && !t.enqueueJob(pid, now, true) {
			full = true
			break
		}
		t.backlog = t.backlog[:len(t.backlog)-1]
	}
	if full && (next.IsZero() || next.After(now.Add(workerPoll))) {
		// Try again once the worker has taken some.
		next = now.Add(workerPoll)
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
