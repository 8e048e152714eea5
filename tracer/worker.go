package tracer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// TableBuilder builds the unwind table of an ELF file and, when it has one,
// of its separate debug file. The rows of the table Build returns may live
// in the builder's memory, valid until its next Build or Release; Release
// says the caller is done with them. Each of the tracer's build workers
// owns one and calls it from one goroutine. *nativeunwind.Builder is the
// default: it reuses its buffers from one build to the next.
type TableBuilder interface {
	Build(f, debug *elffile.File, opts nativeunwind.Options) (*nativeunwind.Table, error)
	Release()
}

// Bounds of the work handed to the workers.
const (
	// syncQueueLen bounds the syncs waiting for the sync worker; more
	// wait in the Run goroutine's schedule.
	syncQueueLen = 64
	// backlogQueueLen is how many syncs of processes running at start
	// may wait for the sync worker at once: few, so that a process that
	// exec'd or asks is read right after them.
	backlogQueueLen = 4
	// symbolQueueLen bounds the files waiting for their symbols.
	symbolQueueLen = 64
	// buildQueueLen bounds the files waiting for their tables, per
	// build worker.
	buildQueueLen = 64
	// resultQueueLen bounds the results waiting for the Run goroutine.
	resultQueueLen = 128
	// rebuildGuard is how long a build worker trusts that a table it
	// built reached the table store before building it again.
	rebuildGuard = 10 * time.Second
	// largeFileBytes is the size from which a file's table is built by
	// the build worker for large files (tens to hundreds of
	// milliseconds, seconds on a loaded host), so that the tables of
	// small files, a new process's own executable most often, never
	// wait for one.
	largeFileBytes = 16 << 20
)

// The work of a sync is split between three goroutines, each owning its
// part of the state (a fourth, the symbol worker, loads the symbols of
// files whose frames the Run goroutine is about to name):
//
//   - the Run goroutine (the ring-buffer reader) owns the processes, the
//     table store's contents, the schedule and every eBPF map write; it
//     hands a process to the sync worker and applies what comes back;
//   - the sync worker reads /proc (maps, exe, comm, cgroup, environment),
//     of processes not read since they started before the others,
//     opens the mapped files it has not seen, identifies them and
//     checks whether they are interpreters, and publishes each file's
//     identity in the file cache before the Run goroutine sees it;
//   - two build workers build the unwind tables of files that have none
//     loaded, one file at a time, the files of processes that asked
//     before those of processes running at start, and the smallest
//     first; one builds those of files under largeFileBytes, the other
//     those of larger files (seconds for a large binary on a loaded
//     host), so a small file never waits for a large one. Each table
//     goes back to the Run goroutine as soon as it is built, and the
//     process is given to eBPF again with it. A sync hands them only
//     the files with little code (eagerTable); the Run goroutine hands
//     them the others when a trace first has a frame in one
//     (Tracer.needTable; those of largeTextBytes of code or more to the
//     large-file worker), and gives each process waiting for the table
//     its mappings again once it is loaded.
//
// File identities (fileInfo) are never changed once in the file cache:
// a worker that learns more of a file puts a new copy there.

// syncJob is one sync of a process, from the Run goroutine to the sync
// worker and on to the build worker.
type syncJob struct {
	pid uint32
	seq uint64
	// at is when the sync was asked for.
	at time.Time
	// hadMappings and meta are what the Run goroutine knew of the
	// process, for readProcess.
	hadMappings bool
	meta        *trace.ProcessMeta
	metaRead    bool
	// background says the process was running at start and nothing
	// asked for it yet: its tables are built after the others'.
	background bool

	// Filled in by the sync worker.
	snap  process
	err   error
	files []*fileInfo // per mapping of snap, nil when not a file or not identified
	// open are the files of mappings whose table must be built, kept
	// open for the build workers, which close them.
	open []*mappedFile
	// builds counts the files of open not built yet; the build worker
	// that finishes the last one sends the final result.
	builds atomic.Int32
}

// buildTask is the build of one file's table for a job, or (job nil) for
// the Run goroutine because a sample reached the file.
type buildTask struct {
	job  *syncJob
	mf   *mappedFile
	size int64
	// due is when it may be built: regions added to a table wait a
	// little for others asked right after (regionCoalesce).
	due time.Time
}

// inflightSync is a sync with the workers, as the Run goroutine knows it.
type inflightSync struct {
	seq uint64
	// read is set once the process is read and its files identified:
	// only its tables are missing.
	read bool
}

// symbolJob loads the symbols of a file into the symbolizer's cache.
type symbolJob struct {
	id  trace.FileID
	src elffile.Source
	seq uint64
}

// syncResult is what a worker hands back to the Run goroutine: a sync
// (job) or a symbol load (symbols).
type syncResult struct {
	symbols *symbolJob
	job     *syncJob
	// table is a table built for job, or, when neither job nor symbols
	// is set, for file, which a sample reached (nil when the build
	// worker found it built already).
	table *builtTable
	file  trace.FileID
	// final says the job is done: its tables are built. A job whose
	// tables must be built comes back once with the process read and
	// its files identified, then once per table built, the last one
	// final.
	final bool
}

// builtTable is a file's unwind table as the build worker built it: its
// rows packed into a table of their own (rowTable), which the Run
// goroutine enters in unwind_tables.
type builtTable struct {
	id trace.FileID
	// file is the mapped file (device, inode) it was built from.
	file fileKey
	name string
	// table holds the rows rows, until the table store takes it (see
	// tableStore.acquire); nil when err says why there is none.
	table       rowTable
	rows        int
	sources     nativeunwind.Source
	err         error
	buildTime   time.Duration
	invalidRows uint64
	// regions is set for a table built by region, new: which regions
	// are built, and the rows (see regionTable). update says regions
	// were built for the table loaded: add has their rows, which the
	// Run goroutine adds to it.
	regions *regionTable
	update  bool
	add     *regionRows
}

// close drops bt's rows, unless they are in unwind_tables (which holds its
// own reference). bt may be nil.
func (bt *builtTable) close() {
	if bt == nil || bt.table == nil {
		return
	}
	bt.table.close()
	bt.table = nil
}

// workers are the goroutines of the heavy work; Run starts them and stops
// them when it returns.
type workers struct {
	// wake, when not nil, wakes the Run goroutine for the results (see
	// send).
	wake    func()
	symbols chan *symbolJob
	// firstSyncs are the syncs of processes not read yet, which the sync
	// worker takes before the others (syncs).
	firstSyncs chan *syncJob
	syncs      chan *syncJob
	// builds are the build workers' queues: small files, large files.
	builds  [2]chan buildTask
	results chan syncResult
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// startWorkers starts the sync, symbol and build workers, which run
// until stop; wake, when not nil, is called after each result they hand
// back.
func (t *Tracer) startWorkers(ctx context.Context, wake func()) *workers {
	ctx, cancel := context.WithCancel(ctx)
	w := &workers{
		symbols:    make(chan *symbolJob, symbolQueueLen),
		syncs:      make(chan *syncJob, syncQueueLen),
		firstSyncs: make(chan *syncJob, syncQueueLen),
		results:    make(chan syncResult, resultQueueLen),
		cancel:     cancel,
	}
	w.wake = wake
	proc := newProcFS(t.cfg.ProcRoot, t.log)
	w.wg.Add(2 + len(w.builds))
	go func() {
		defer w.wg.Done()
		t.symbolWorker(ctx, w)
	}()
	go func() {
		defer w.wg.Done()
		t.syncWorker(ctx, w, proc)
	}()
	for i := range w.builds {
		w.builds[i] = make(chan buildTask, buildQueueLen)
		var builder TableBuilder = &nativeunwind.Builder{}
		if t.cfg.NewTableBuilder != nil {
			builder = t.cfg.NewTableBuilder()
		}
		go func() {
			defer w.wg.Done()
			t.buildWorker(ctx, w, w.builds[i], builder)
		}()
	}
	return w
}

// stop stops the workers and waits for them. Builds not done are dropped,
// closing the files they hold, and so are the tables of results not
// applied.
func (w *workers) stop() {
	w.cancel()
	w.wg.Wait()
	for _, ch := range w.builds {
	drain:
		for {
			select {
			case b := <-ch:
				b.mf.close()
			default:
				break drain
			}
		}
	}
	for {
		select {
		case r := <-w.results:
			r.table.close()
		default:
			return
		}
	}
}

func (t *Tracer) syncWorker(ctx context.Context, w *workers, proc procFS) {
	// unwoken counts the results handed back since the worker last woke
	// the Run goroutine (see sendSync).
	unwoken := 0
	for {
		var j *syncJob
		select {
		case j = <-w.firstSyncs:
		default:
			select {
			case <-ctx.Done():
				return
			case j = <-w.firstSyncs:
			case j = <-w.syncs:
			}
		}
		t.prepare(j, proc)
		open := j.open
		j.open = nil
		if !w.sendSync(ctx, syncResult{job: j, final: len(open) == 0}, &unwoken) {
			closeAll(open)
			return
		}
		if len(open) == 0 {
			continue
		}
		// Hand each file to its build worker; one whose queue
		// is full is not built now (a later sync builds it).
		tasks := make([]buildTask, 0, len(open))
		for _, mf := range open {
			tasks = append(tasks, buildTask{job: j, mf: mf, size: mf.size()})
		}
		j.builds.Store(int32(len(tasks)))
		for _, b := range tasks {
			ch := w.builds[0]
			if b.size >= largeFileBytes {
				ch = w.builds[1]
			}
			select {
			case ch <- b:
				continue
			default:
			}
			b.mf.close()
			if !t.buildDone(ctx, w, b.job, nil) {
				return
			}
		}
	}
}

// closeAll closes files.
func closeAll(files []*mappedFile) {
	for _, mf := range files {
		mf.close()
	}
}

// buildDone hands the table built for j (nil when none was) to the Run
// goroutine, as j's final result when it was the last one to build. It
// reports false when ctx is done.
func (t *Tracer) buildDone(ctx context.Context, w *workers, j *syncJob, bt *builtTable) bool {
	final := j.builds.Add(-1) == 0
	if bt == nil && !final {
		return true
	}
	if !w.send(ctx, syncResult{job: j, table: bt, final: final}) {
		bt.close()
		return false
	}
	return true
}

// buildWorker builds the tables of the files queue brings, one at a time:
// those of processes that asked before those of processes running at
// start, the smallest first.
func (t *Tracer) buildWorker(ctx context.Context, w *workers, queue <-chan buildTask, builder TableBuilder) {
	recent := make(map[trace.FileID]time.Time)
	var pending []buildTask
	var elves elfCache
	elves.keeper, _ = builder.(sectionKeeper)
	defer func() {
		for _, b := range pending {
			b.mf.close()
		}
		elves.close()
	}()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if len(pending) == 0 {
			select {
			case <-ctx.Done():
				return
			case b := <-queue:
				pending = append(pending, b)
			}
		}
		if wait := nextDue(pending, time.Now()); wait > 0 {
			// Only builds not due yet: wait for one, or for more.
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			more := queue
			if len(pending) >= buildQueueLen {
				more = nil
			}
			select {
			case <-ctx.Done():
				return
			case b := <-more:
				pending = append(pending, b)
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		// Up to buildQueueLen wait here, as many more in the queue;
		// past that the sync worker hands no more.
	more:
		for len(pending) < buildQueueLen {
			select {
			case b := <-queue:
				pending = append(pending, b)
			default:
				break more
			}
		}
		i := nextBuild(pending, time.Now())
		b := pending[i]
		pending = slices.Delete(pending, i, i+1)
		now := time.Now()
		for id, at := range recent {
			if now.Sub(at) > rebuildGuard {
				delete(recent, id)
			}
		}
		elves.expire(now)
		var bt *builtTable
		fi := b.mf.fi
		if b.job == nil {
			lent := elves.lend(b.mf)
			bt = t.buildAsked(builder, b.mf)
			elves.keep(b.mf, lent, bt != nil && (bt.regions != nil || bt.update), time.Now())
		} else if _, ok := recent[fi.id]; !ok && !t.tables.has(fi.id) {
			bt = t.buildSynced(builder, b.mf)
			recent[fi.id] = time.Now()
		}
		b.mf.close()
		if b.job == nil {
			if !w.send(ctx, syncResult{table: bt, file: fi.id}) {
				bt.close()
				return
			}
			continue
		}
		if !t.buildDone(ctx, w, b.job, bt) {
			return
		}
	}
}

// background reports whether b is for a process running at start that
// nothing asked for yet.
func (b buildTask) background() bool {
	return b.job != nil && b.job.background
}

// regionCoalesce is the least time between two builds of regions added
// to a table, so that those asked meanwhile go together: at start,
// samples ask for many regions of the busy files within a second, and
// each build of a table's regions makes the whole table anew.
const regionCoalesce = 25 * time.Millisecond

// nextDue returns how long until a build of pending is due; 0 when one
// is.
func nextDue(pending []buildTask, now time.Time) time.Duration {
	wait := time.Duration(-1)
	for _, b := range pending {
		d := b.due.Sub(now)
		if d <= 0 {
			return 0
		}
		if wait < 0 || d < wait {
			wait = d
		}
	}
	return max(wait, 0)
}

// nextBuild returns the index of the build to do first among those due:
// of a process that asked rather than one running at start, then of the
// smallest file.
func nextBuild(pending []buildTask, now time.Time) int {
	best := -1
	for i, b := range pending {
		if b.due.After(now) {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		c := pending[best]
		if b.background() != c.background() {
			if !b.background() {
				best = i
			}
			continue
		}
		if b.size < c.size {
			best = i
		}
	}
	return best
}

// symbolWorker loads files' symbols into the symbolizer's cache, where
// the Run goroutine finds them when it names their frames.
func (t *Tracer) symbolWorker(ctx context.Context, w *workers) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-w.symbols:
			if _, err := t.cfg.Symbolizer.File(j.id, j.src); err != nil {
				// Only the load that failed returns the error:
				// once per file.
				t.log.Debug("no symbols", "path", j.src.Path, "error", err)
			}
			if !w.send(ctx, syncResult{symbols: j}) {
				return
			}
		}
	}
}

// send hands r to the Run goroutine, unless ctx is done first, and wakes
// it at once.
//
// Every result wakes Run at once, those nothing waits for too (a table a
// sample asked for, a process found gone): a worker hands a result back
// at the end of work that kept the agent awake, so waking Run then adds
// its apply to that stretch, on a thread already running and with the
// runtime's sysmon thread already polling (it polls every 20 µs or so
// while any goroutine runs, after one entered a system call). A result
// left for later (an earlier version applied those within 100 ms, on the
// next read or a timer's) saved Run's wake-ups but made the agent wake
// for a stretch of its own, by its timer, about half the time: on the
// whole-agent bench, run on a loaded host, the agent's threads woke
// 93-146 times a second after its start (8 runs, median 120) against
// 72-117 (5 runs alternating with them, median 109), each run below
// the runs on either side of it.
func (w *workers) send(ctx context.Context, r syncResult) bool {
	select {
	case w.results <- r:
	case <-ctx.Done():
		return false
	}
	if w.wake != nil {
		w.wake()
	}
	return true
}

// maxUnwoken bounds the results of syncs the sync worker hands back
// without waking the Run goroutine, while more syncs wait for it (see
// sendSync).
const maxUnwoken = 4

// sendSync hands r, the result of a sync, from the sync worker to the Run
// goroutine, unless ctx is done first, and wakes it as send does, but
// once for the results of syncs queued together (up to maxUnwoken),
// which the sync worker reads in a fraction of a millisecond each, from
// the last of them. unwoken counts the results handed back since the
// last wake.
func (w *workers) sendSync(ctx context.Context, r syncResult, unwoken *int) bool {
	select {
	case w.results <- r:
	case <-ctx.Done():
		return false
	}
	switch {
	case w.wake == nil:
	case *unwoken < maxUnwoken && len(w.firstSyncs)+len(w.syncs) > 0:
		*unwoken++
	default:
		*unwoken = 0
		w.wake()
	}
	return true
}

// prepare reads the process of j and identifies the files it maps, on the
// sync worker.
func (t *Tracer) prepare(j *syncJob, proc procFS) {
	t.stats.mapsReads.Add(1)
	p := &j.snap
	*p = process{pid: j.pid, meta: j.meta, metaRead: j.metaRead, lastRead: time.Now()}
	if j.hadMappings {
		// readProcess tells a zombie from a new process by whether
		// mappings were read before.
		p.mappings = []mapping{{}}
	}
	if err := proc.readProcess(p); err != nil {
		t.stats.mapsErrors.Add(1)
		j.err = err
		if j.hadMappings {
			p.mappings = nil
		}
		return
	}
	j.files = make([]*fileInfo, len(p.mappings))
	for i := range p.mappings {
		m := &p.mappings[i]
		if m.key == (fileKey{}) {
			continue
		}
		mf := t.mappedFile(proc, p, m)
		fi, built := t.fileOf(mf)
		j.files[i] = fi
		if fi != nil && t.cfg.MaxUnwindTableBytes > 0 && eagerTable(m) && !t.tables.has(fi.id) && !built {
			mf.fi = fi
			j.open = append(j.open, mf)
			continue
		}
		mf.close()
	}
}

// fileOf returns the identity of mf's file, identifying it and checking
// whether it is an interpreter on first sight, and publishes it in the
// file cache. It reports whether the file's table is known not to be
// buildable (no file to build it from).
func (t *Tracer) fileOf(mf *mappedFile) (*fileInfo, bool) {
	m := mf.m
	fi, ok := t.files.Get(m.key)
	if !ok {
		var err error
		fi, err = t.identify(mf)
		if err != nil {
			t.stats.fileErrors.Add(1)
			t.log.Debug("identify mapped file", "pid", mf.proc.pid, "path", m.path, "error", err)
			return nil, true
		}
		if fh, err := mf.file(); err == nil {
			// Its symbols are loaded when a frame in it is
			// named, which may be after the process is gone.
			t.held.hold(fi.id, fh, time.Now())
		}
	} else if fi.interpChecked || len(t.cfg.Interpreters) == 0 {
		return fi, false
	} else {
		c := *fi
		fi = &c
	}
	if len(t.cfg.Interpreters) > 0 {
		var name string
		fi.interp, name, fi.interpChecked = t.detectInterpreter(mf)
		if fi.interp != nil {
			fi.runtime = name
		}
	}
	t.files.Add(m.key, fi)
	return fi, false
}

// buildTable builds the unwind table of mf's file, on the build worker.
func (t *Tracer) buildTable(builder TableBuilder, mf *mappedFile) *builtTable {
	fi := mf.fi
	bt := &builtTable{id: fi.id, file: mf.m.key, name: fi.exec.FileName}
	start := time.Now()
	defer func() { bt.buildTime = time.Since(start) }()
	f, err := mf.elf()
	if err != nil {
		bt.err = err
		return bt
	}
	debug := mf.debug()
	t.noteDebugPath(mf, f)
	bt.table, bt.rows, bt.sources, bt.invalidRows, bt.err = encodeTable(builder, t.maps, tableKey(fi.id), f, debug, t.cfg.MaxUnwindTableBytes)
	return bt
}

// buildAsked builds the table of mf's file asked for by a sample, on the
// build worker: the regions of its code samples reached (see regionTable)
// when it can be built by region, else all of it. It returns nil when the
// table is known already.
func (t *Tracer) buildAsked(builder TableBuilder, mf *mappedFile) *builtTable {
	fi := mf.fi
	ask, ok := t.tables.takeRegions(fi.id)
	if ask.prev != nil {
		defer ask.prev.drop()
	}
	if !ok || ask.prev == nil && t.tables.has(fi.id) {
		return nil
	}
	rb, byRegion := builder.(RegionBuilder)
	if !byRegion || len(ask.regions) == 0 && ask.prev == nil {
		return t.buildTable(builder, mf)
	}
	f, n, regional := t.regional(mf)
	if ask.prev == nil && !regional {
		return t.buildTable(builder, mf)
	}
	if ask.prev != nil && ask.prev.n != n {
		err := fmt.Errorf("file has %d regions of code, its table %d", n, ask.prev.n)
		if _, ferr := mf.elf(); ferr != nil {
			err = ferr // not opened: asked again through another process
		}
		return &builtTable{id: fi.id, file: mf.m.key, name: fi.exec.FileName, update: true, err: err}
	}
	var regions []uint32
	for _, r := range ask.regions {
		if int(r) < n && (ask.prev == nil || !ask.prev.has(uint64(r))) {
			regions = append(regions, r)
		}
	}
	if len(regions) == 0 {
		if ask.prev == nil {
			return t.buildTable(builder, mf)
		}
		// Asked again while the build that added them was out.
		return nil
	}
	return t.buildRegions(rb, mf, f, n, regions, ask.prev)
}

// buildSynced builds the table of mf's file for a sync, on the build
// worker: a file with little code mapped (eagerTable) most often has
// little code, and is built whole; one with more, of which the process
// maps a small part (node's, after it remaps most of its code), gets the
// regions of that part.
func (t *Tracer) buildSynced(builder TableBuilder, mf *mappedFile) *builtTable {
	if rb, ok := builder.(RegionBuilder); ok {
		if f, n, regional := t.regional(mf); regional {
			m := mf.m
			var regions []uint32
			for r := m.offset >> regionShift; r <= (m.offset+(m.end-m.start)-1)>>regionShift && r < uint64(n); r++ {
				regions = append(regions, uint32(r))
			}
			if len(regions) > 0 {
				return t.buildRegions(rb, mf, f, n, regions, nil)
			}
		}
	}
	return t.buildTable(builder, mf)
}

// regional reports whether the table of mf's file is built by region
// (minRegions regions of code or more, whose call frame information can
// be read by region), and returns the file and its number of regions.
func (t *Tracer) regional(mf *mappedFile) (*elffile.File, int, bool) {
	f, err := mf.elf()
	if err != nil {
		return nil, 0, false
	}
	n := regionCount(nativeunwind.CodeEnd(f))
	return f, n, n >= minRegions && nativeunwind.Regional(f)
}

// buildRegions builds regions of the table of mf's file f, of n regions,
// and adds them to those of prev (nil: none), on the build worker.
func (t *Tracer) buildRegions(rb RegionBuilder, mf *mappedFile, f *elffile.File, n int, regions []uint32, prev *regionTable) *builtTable {
	fi := mf.fi
	bt := &builtTable{id: fi.id, file: mf.m.key, name: fi.exec.FileName, update: prev != nil}
	start := time.Now()
	defer func() { bt.buildTime = time.Since(start) }()
	slices.Sort(regions)
	regions = slices.Compact(regions)
	debug := mf.debug()
	t.noteDebugPath(mf, f)
	goCode := fi.isGo
	if prev != nil {
		goCode = prev.goCode
	}
	bt.add, bt.sources, bt.invalidRows, bt.err = encodeRegions(rb, f, debug, t.cfg.MaxUnwindTableBytes, n, regions)
	if bt.err == nil && prev == nil {
		bt.table, bt.regions, bt.err = newRegionTable(t.maps, tableKey(fi.id), n, bt.add, goCode, maxRows(t.cfg.MaxUnwindTableBytes))
		bt.add = nil
		if bt.err == nil {
			bt.rows = bt.regions.used
		}
	}
	return bt
}

// maxRows returns the most rows of a table within maxBytes.
func maxRows(maxBytes uint64) int {
	return int(min(maxBytes/rowBytes, maxTableRows))
}

// RegionBuilder is a TableBuilder that also builds tables by range of
// file offsets, as *nativeunwind.Builder does (BuildRanges). With a
// TableBuilder that is not one, tables are built whole.
type RegionBuilder interface {
	TableBuilder
	BuildRanges(f, debug *elffile.File, opts nativeunwind.Options, ranges []nativeunwind.Range) (*nativeunwind.Table, error)
}

// encodeRegions builds the regions (sorted) of f (and debug), a file of n
// regions of code, with builder, and returns their rows packed for eBPF,
// each region's on its own (see regionRows), within maxBytes.
func encodeRegions(builder RegionBuilder, f, debug *elffile.File, maxBytes uint64, n int, regions []uint32) (add *regionRows, src nativeunwind.Source, invalid uint64, err error) {
	ranges := make([]nativeunwind.Range, 0, len(regions))
	for _, r := range regions {
		rg := regionRange(r, n)
		if k := len(ranges); k > 0 && ranges[k-1].Hi == rg.Lo {
			ranges[k-1].Hi = rg.Hi
			continue
		}
		ranges = append(ranges, rg)
	}
	built, err := builder.BuildRanges(f, debug, nativeunwind.Options{MaxRows: maxRows(maxBytes)}, ranges)
	if err != nil {
		return nil, 0, 0, err
	}
	defer builder.Release()
	encoded := encodeRules(built.Rules())
	rows := built.Len()
	add = &regionRows{regions: regions, ends: make([]int, len(regions)), rows: make([]uint64, 0, rows+len(regions))}
	// One pass over the rows, which start each range with the rule in
	// effect there: each region's start with the rule of the row at or
	// before it, then its rows, a row dropped where the one before in
	// the region has its rule.
	i, last := 0, packRow(ruleInvalid, 0)
	for k, r := range regions {
		rg := regionRange(r, n)
		start := len(add.rows)
		atLo := false
		for ; i < rows; i++ {
			addr, rule := built.At(i)
			if addr >= rg.Lo {
				atLo = addr == rg.Lo
				break
			}
			last = encoded[rule]
		}
		if !atLo {
			add.rows = append(add.rows, last&^1|rg.Lo)
		}
		for ; i < rows; i++ {
			addr, rule := built.At(i)
			if addr >= rg.Hi {
				break
			}
			if addr > 0xffffffff {
				return nil, 0, 0, fmt.Errorf("file offset %#x beyond 4 GiB", addr)
			}
			e := encoded[rule]
			invalid += e & 1
			last = e
			if len(add.rows) > start && add.rows[len(add.rows)-1]>>rowRuleShift == e>>rowRuleShift {
				continue
			}
			add.rows = append(add.rows, e&^1|addr)
		}
		add.ends[k] = len(add.rows)
	}
	return add, built.Sources, invalid, nil
}

// encodeRules returns the packed rule of each rule of a table, in the
// high half; bit 0 set for a rule the unwinder cannot express.
func encodeRules(rules []nativeunwind.Row) []uint64 {
	encoded := make([]uint64, len(rules))
	for i, r := range rules {
		rule, ok := encodeRule(r)
		encoded[i] = packRow(rule, 0)
		if !ok {
			encoded[i] |= 1
		}
	}
	return encoded
}

// noteDebugPath records where the debug file of mf's file f was found, in
// the file cache.
func (t *Tracer) noteDebugPath(mf *mappedFile, f *elffile.File) {
	fi := mf.fi
	if dp := f.DebugPath(); dp != fi.debugPath {
		// The symbolizer looks there first when it loads the file.
		c := *fi
		c.debugPath = dp
		t.files.Add(mf.m.key, &c)
	}
}

// encodeTable builds the table of f (and debug) with builder, within
// maxBytes, and packs its rows for the eBPF unwinder straight into a new
// table of maps for key (on the build workers: a table of eBPF's own,
// which the Run goroutine enters in unwind_tables). Each distinct rule of
// the table is encoded once; a row is then its file offset and its
// rule's encoding. The builder's rows are released once packed; no other
// copy of the table is made.
func encodeTable(builder TableBuilder, maps unwinderMaps, key uint64, f, debug *elffile.File, maxBytes uint64) (tab rowTable, rows int, src nativeunwind.Source, invalid uint64, err error) {
	built, err := builder.Build(f, debug, nativeunwind.Options{MaxRows: maxRows(maxBytes)})
	if err != nil {
		return nil, 0, 0, 0, err
	}
	defer builder.Release()
	n := built.Len()
	if n == 0 {
		return nil, 0, 0, 0, nativeunwind.ErrNoCFI
	}
	encoded := encodeRules(built.Rules())
	tab, err = maps.newTable(key, n, func(packed []uint64) error {
		packed = packed[:n]
		for i := range packed {
			addr, rule := built.At(i)
			if addr > 0xffffffff {
				return fmt.Errorf("file offset %#x beyond 4 GiB", addr)
			}
			e := encoded[rule]
			invalid += e & 1
			packed[i] = e&^1 | addr
		}
		return nil
	})
	if err != nil {
		return nil, 0, 0, 0, err
	}
	return tab, n, built.Sources, invalid, nil
}
