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
	// asks to be read earlier. It bounds the delay of exec and exit
	// events (cancellation interrupts the wait). What needs reading while
	// a process lives wakes the reader (urgent records: a process asking
	// for its mappings, a trace with interpreter or JIT code not seen
	// before), so that the rest can wait this long: read every second,
	// the agent wakes 80-90 times a second less on the whole-agent bench
	// than read every 100 ms, and the churn tests name as much.
	readInterval = time.Second
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
	first := t.processes[pid] == nil && !background
	if first {
		// Not read since it started: the sync worker reads it before
		// the others, while it lives.
		queue = t.w.firstSyncs
	}
	if t.batch.reading {
		// Handed over once the batch is read (handOff), unless its
		// exit is in the batch too; counted against the queue's room
		// meanwhile.
		if len(queue)+t.batch.queued(first) >= cap(queue) {
			return false
		}
		t.batch.syncs = append(t.batch.syncs, batchSync{j: j, first: first})
		t.inflight[pid] = inflightSync{seq: j.seq}
		return true
	}
	select {
	case queue <- j:
		t.inflight[pid] = inflightSync{seq: j.seq}
		return true
	default:
		return false
	}
}

// recordBatch is what the Run goroutine keeps while it reads a batch of
// records (readRecords): the syncs asked for meanwhile, which it hands
// to the sync worker at the end of the batch (handOff) rather than one
// by one as they are asked.
//
// A process sampled for the first time asks for its sync with an urgent
// record, which wakes Run; one of a few milliseconds (the bench's
// 100 /bin/true a second) has often exited by the time Run reads it, and
// its exit record follows in the same batch. Its sync would find it gone
// (or a zombie, with its name only, which the record has too) and name
// its traces with what its exec and their files say: the same as without
// it, for a sync worker woken on another thread, a system call that wakes
// the runtime's sysmon, and a result. Such syncs are dropped (exited),
// and the traces parked for them reported with what is known.
type recordBatch struct {
	// reading is set while Run reads a batch.
	reading bool
	syncs   []batchSync
}

// batchSync is a sync asked for during a batch.
type batchSync struct {
	j *syncJob
	// first says it goes to the sync worker's first queue.
	first bool
	// exited says the process's exit was read after it was asked.
	exited bool
}

// queued returns how many of the batch's syncs go to the first queue
// (first), or to the other.
func (b *recordBatch) queued(first bool) int {
	n := 0
	for i := range b.syncs {
		if b.syncs[i].first == first {
			n++
		}
	}
	return n
}

// exited notes that the process pid exited: a sync of it asked for in the
// batch is not handed over.
func (b *recordBatch) exited(pid uint32) {
	for i := range b.syncs {
		if b.syncs[i].j.pid == pid {
			b.syncs[i].exited = true
		}
	}
}

// handOff ends a batch of records: it hands the syncs asked for during it
// to the sync worker, but those of processes whose exit was read after,
// whose parked traces it reports with what is known.
func (t *Tracer) handOff() {
	b := &t.batch
	b.reading = false
	if len(b.syncs) == 0 {
		return
	}
	var dropped []batchSync
	for _, s := range b.syncs {
		queue := t.w.syncs
		if s.first {
			queue = t.w.firstSyncs
		}
		if !s.exited {
			select {
			case queue <- s.j:
				continue
			default:
				// Room was counted: only a sync worker that stopped
				// leaves none. Its traces park again.
			}
		}
		dropped = append(dropped, s)
	}
	clear(b.syncs)
	b.syncs = b.syncs[:0]
	for _, s := range dropped {
		if f, ok := t.inflight[s.j.pid]; ok && f.seq == s.j.seq {
			delete(t.inflight, s.j.pid)
		}
		t.retryParked(s.j.seq, s.j.pid)
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
	if r.job == nil && r.symbols == nil {
		t.tableBuilt(r.file, r.table, now)
		return
	}
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
	if r.table != nil {
		t.refreshWaiting(r.table.id, now)
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
	n, missing := t.giveMappings(p, files, built, now)
	t.attachInterpreter(p, files)
	p.setRuntime(t.processRuntime(p))
	if missing && final {
		// A table was unloaded between the worker's look and now, or
		// the build worker was busy: build it at the next sync.
		t.schedule(p.pid, now.Add(minSyncInterval))
	}
	t.log.Debug("process synced", "pid", p.pid, "mappings", n, "tables", len(p.tables), "waiting", len(p.waiting), "final", final, "after", now.Sub(at))
}

// giveMappings gives p's mappings, whose files' identities are files, to
// the eBPF unwinder with the tables loaded of the files behind them,
// loading those in built, and returns how many it gave. It reports
// whether the table of a file built at sync (eagerTable) is missing.
// The mappings of the other files without a table are given as waiting
// for it (see Tracer.needTable).
func (t *Tracer) giveMappings(p *process, files []*fileInfo, built map[trace.FileID]*builtTable, now time.Time) (int, bool) {
	old, oldWaiting := p.tables, p.waiting
	p.tables = make([]*unwindTable, 0, len(p.mappings))
	p.waiting = nil
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
		switch {
		case tb != nil:
			p.tables = append(p.tables, tb)
			e.Table, e.NumRows = tb.key, tb.searchRows()
		case fi == nil:
		case eagerTable(m):
			// Its table is being built: the unwinder stops there
			// (no unwind information) rather than follow frame
			// pointers the code may not keep.
			missing = true
			e.Table, e.NumRows = pendingTable, 1
		default:
			// Built once a sample reaches it. Meanwhile Go code,
			// which keeps frame pointers, is unwound by them;
			// elsewhere the unwinder stops after the frame in the
			// file, which asks for the table.
			if !slices.Contains(p.waiting, fi.id) {
				p.waiting = append(p.waiting, fi.id)
				t.tables.wait(fi.id, fi.exec.FileName)
			}
			e.Table, e.NumRows = pendingTable, 1
			if fi.isGo {
				e.NumRows = 0
			}
		}
		entries = append(entries, e)
	}
	// Release after acquiring, so tables the old and new mappings share
	// are never unloaded in between.
	for _, tb := range old {
		t.tables.release(tb, now)
	}
	for _, id := range oldWaiting {
		t.tables.unwait(id)
	}
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
	return len(entries), missing
}

// eagerTextBytes is the size of executable mapping under which a file's
// table is built when a process mapping it is synced rather than when a
// sample first reaches it: such a table costs less than a millisecond to
// build and a few pages of kernel memory, and a short-lived process's
// first samples (often its only ones) keep their whole stacks.
const eagerTextBytes = 64 << 10

// eagerTable reports whether the table of m's file is built when its
// process is synced (a small file), not when a sample reaches it.
func eagerTable(m *mapping) bool {
	return m.end-m.start < eagerTextBytes
}

// largeTextBytes is the executable mapping size from which a table asked
// for by a sample goes to the build worker of large files. Samples ask
// for the tables of many files at once when they first reach them (at
// start, the files every busy process runs); those of more than a
// megabyte of code take tens to hundreds of milliseconds each on a loaded
// host, and the small-file worker stays free for the small files a new
// process's sync builds (its own executable most often).
const largeTextBytes = 1 << 20

// needTable asks for the table of fi, mapped by m in p, when p waits for
// it (or waited, when it exited since): a frame of a trace of p lies
// there, at file offset off. It hands the build to a build worker, once;
// when the table is in, every process waiting for it gets its mappings
// again (refreshWaiting), and the next ones get it when they are synced.
// When the file's table is built by region and the frame's region is not
// built, it asks for the region (needRegion).
func (t *Tracer) needTable(p *process, m *mapping, fi *fileInfo, off uint64) {
	if t.w == nil {
		return
	}
	if t.needRegion(p, m, m.key, fi, off) || len(p.waiting) == 0 {
		return
	}
	if m := &t.memo; m.hasNeeded && m.needed == fi.id {
		return
	}
	t.memo.needed, t.memo.hasNeeded = fi.id, true
	if !slices.Contains(p.waiting, fi.id) || !t.tables.request(fi.id, fi.exec.FileName, uint32(off>>regionShift)) {
		return
	}
	t.queueBuild(p.pid, m, fi)
}

// needRegion asks for the region of file offset off of fi, file key,
// mapped by m in proc (nil: not known, see liveMapping), when fi's table
// is built by region and that region is not built, handing its build to a build
// worker unless one has a build of the file's regions (the regions asked
// meanwhile are built next, all together). It reports whether fi's table
// is built by region and not whole yet.
func (t *Tracer) needRegion(proc *process, m *mapping, key fileKey, fi *fileInfo, off uint64) bool {
	if len(t.tables.partial) == 0 {
		return false
	}
	tb := t.tables.partial[fi.id]
	if tb == nil {
		return false
	}
	rt := tb.regions
	r := off >> regionShift
	if rt.full || r >= uint64(rt.n) || rt.has(r) || rt.goCode && !t.memo.leaf {
		// Go code keeps frame pointers, which unwind its regions not
		// built but at the leaf, which may not have set up its frame
		// yet (or any): only a leaf asks.
		return true
	}
	pid := proc.pid
	if m == nil {
		pid, m = t.liveMapping(proc, key, fi)
	}
	if t.tables.askRegion(tb, uint32(r), regionSource{pid: pid, m: *m, fi: fi}) {
		now := time.Now()
		t.queueRegionBuild(rt.from, rt.due(now))
	}
	return true
}

// queueRegionBuild hands the build of the regions asked of a file's table
// to the build worker of small files (a region costs about a
// millisecond), through src, to run at due.
func (t *Tracer) queueRegionBuild(src regionSource, due time.Time) {
	if p := t.processes[src.pid]; p == nil || p.gone {
		// Gone (a compiler run): through a process that lives.
		pid, m := t.liveMapping(&process{pid: src.pid}, src.m.key, src.fi)
		src.pid, src.m = pid, *m
	}
	mc := src.m
	mf := t.mappedFile(t.proc, &process{pid: src.pid}, &mc)
	mf.fi = src.fi
	// Opened here, as in queueBuild: the process that asked may be a
	// compiler run about to exit.
	mf.size()
	select {
	case t.w.builds[0] <- buildTask{mf: mf, size: regionBytes, due: due}:
	default:
		mf.close()
		t.tables.unrequest(src.fi.id)
	}
}

// needFileTable asks for the table of fi, whose frame the eBPF unwinder
// found in the kernel's mappings of proc (a process not synced yet) when
// the file's table is not built: a process that lived a few milliseconds
// in a file no synced process was sampled in yet (the dynamic loader, a
// compiler) asks for it so. The build opens the file through a live
// process mapping it, else through proc.
func (t *Tracer) needFileTable(proc *process, key fileKey, fi *fileInfo, off uint64) {
	if t.w == nil || t.cfg.MaxUnwindTableBytes == 0 {
		return
	}
	if t.needRegion(proc, nil, key, fi, off) {
		return
	}
	if m := &t.memo; m.hasNeeded && m.needed == fi.id {
		return
	}
	t.memo.needed, t.memo.hasNeeded = fi.id, true
	if !t.tables.request(fi.id, fi.exec.FileName, uint32(off>>regionShift)) {
		return
	}
	pid, m := t.liveMapping(proc, key, fi)
	t.queueBuild(pid, m, fi)
}

// liveMapping returns a mapping of file key, whose identity is fi, of
// proc, else of a live process, else one by its path, and the process:
// where to open the file from to build its table.
func (t *Tracer) liveMapping(proc *process, key fileKey, fi *fileInfo) (uint32, *mapping) {
	pid, m := proc.pid, proc.findFile(key)
	if m == nil || proc.gone {
		for _, p := range t.processes {
			if pm := p.findFile(key); pm != nil && !p.gone {
				pid, m = p.pid, pm
				break
			}
		}
	}
	if m == nil {
		m = &mapping{key: key, path: fi.path}
	}
	return pid, m
}

// queueBuild hands the build of fi's table, mapped by m in process pid,
// to a build worker, asked for by request.
func (t *Tracer) queueBuild(pid uint32, m *mapping, fi *fileInfo) {
	mc := *m
	mf := t.mappedFile(t.proc, &process{pid: pid}, &mc)
	mf.fi = fi
	// Opened here (once per file asked for): the build reads it even if
	// the process exits meanwhile, and its size picks the worker.
	b := buildTask{mf: mf, size: mf.size()}
	ch := t.w.builds[0]
	if m.end-m.start >= largeTextBytes || b.size >= largeFileBytes {
		ch = t.w.builds[1]
	}
	select {
	case ch <- b:
	default:
		// The build workers are busy: a later sample asks again.
		mf.close()
		t.tables.unrequest(fi.id)
	}
}

// tableBuilt takes in a table built because a sample reached its file
// (bt; nil when the build worker found it known already), loads it, and
// gives it to the processes waiting for it.
func (t *Tracer) tableBuilt(id trace.FileID, bt *builtTable, now time.Time) {
	t.tables.unrequest(id)
	if bt != nil && bt.err != nil && isNotExist(bt.err) {
		// The process exited before its file was opened: another
		// sample asks again, through a process that lives.
		bt.close()
		return
	}
	if bt != nil && bt.update {
		// More regions of a table built by region: it replaces the
		// one loaded, which every mapping of the file refers to.
		if tb := t.tables.tables[id]; tb != nil && tb.regions != nil && t.tables.regionsBuilt(tb, bt, now) {
			t.queueRegionBuild(tb.regions.from, tb.regions.due(now))
		}
		bt.close()
		return
	}
	if bt != nil {
		if tb := t.tables.acquire(id, bt.file, bt.name, bt, now); tb != nil {
			t.tables.release(tb, now)
		}
	}
	t.refreshWaiting(id, now)
}

// refreshWaiting gives the processes waiting for file id's table their
// mappings again, now that it is loaded (or known not to be).
func (t *Tracer) refreshWaiting(id trace.FileID, now time.Time) {
	if !t.tables.has(id) {
		return
	}
	for _, p := range t.processes {
		if !slices.Contains(p.waiting, id) {
			continue
		}
		files := make([]*fileInfo, len(p.mappings))
		for i := range p.mappings {
			files[i] = p.mappings[i].fi
		}
		t.giveMappings(p, files, nil, now)
	}
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
	for _, id := range p.waiting {
		t.tables.unwait(id)
	}
	// p.waiting stays: its traces read after it exited still ask for
	// the tables (see needTable).
	t.detachInterpreter(p)
	delete(t.processes, pid)
	if p.droppedK {
		// The eBPF side deleted it at the exit or exec.
	} else if err := t.maps.deleteProcess(pid); err != nil {
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
	p.given()
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
