// Package tracer loads stackline's eBPF programs, samples every online CPU,
// reads traces from the ring buffer, keeps each process's mappings current
// and turns raw addresses into frames that it names through the reporter's
// contract (FrameKnown / FrameMetadata) before reporting each trace.
package tracer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/corebtf"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/kallsyms"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// Reporter is the reporting contract the tracer follows: it asks before it
// resolves a frame or a file, and reports every trace.
type Reporter interface {
	FrameKnown(trace.FrameID) bool
	FrameMetadata(trace.FrameID, trace.FrameInfo)
	ExecutableKnown(trace.FileID) bool
	ExecutableMetadata(trace.FileID, trace.ExecutableInfo)
	ReportTrace(*trace.Trace, trace.TraceMeta)
}

// Limits of the configuration.
const (
	MinSamplesPerSecond = 1
	MaxSamplesPerSecond = 1000
	MaxStackDepth       = int(progs.StacklineTraceBoundsMAX_USER_FRAMES)
)

// Config configures a Tracer.
type Config struct {
	// SamplesPerSecond is the sampling frequency per CPU.
	SamplesPerSecond int
	// MaxStackDepth bounds the user frames of one trace (1..MaxStackDepth).
	MaxStackDepth int
	// RingBufferSize is the ring buffer's size in bytes: a power of two and
	// a multiple of the page size.
	RingBufferSize int
	// FileCacheSize bounds the number of files whose identity is cached.
	FileCacheSize int
	// FileCacheTTL is how long a file's identity stays cached unused (0:
	// until evicted for room).
	FileCacheTTL time.Duration
	// ProcRoot is where /proc is mounted ("/proc" when empty).
	ProcRoot string
	// Reporter receives frames, executables and traces.
	Reporter Reporter
	// Symbolizer names native frames.
	Symbolizer *symbolizer.Symbolizer
	// Kernel names kernel frames.
	Kernel *kallsyms.Table
	// MaxUnwindTableBytes bounds the eBPF memory of all files' unwind
	// tables together. A file whose table does not fit is unwound by
	// frame pointer. 0 loads no tables.
	MaxUnwindTableBytes uint64
	// Interpreters are the runtimes whose frames are unwound and named
	// (CPython); none means native frames only.
	Interpreters []interpreter.Runtime
	// Logger receives warnings; nil means slog.Default().
	Logger *slog.Logger
	// NewTableBuilder returns the builder of the unwind tables of one
	// build worker; nil means the native unwinder's
	// (tracer/nativeunwind).
	NewTableBuilder func() TableBuilder
	// OffCPU configures off-CPU profiling (off when not Enabled).
	OffCPU OffCPU
}

// Validate checks the configuration and says what is wrong in terms of the
// command-line flags.
func (c *Config) Validate() error {
	var errs []error
	if c.SamplesPerSecond < MinSamplesPerSecond || c.SamplesPerSecond > MaxSamplesPerSecond {
		errs = append(errs, fmt.Errorf("samples per second %d: must be within %d..%d",
			c.SamplesPerSecond, MinSamplesPerSecond, MaxSamplesPerSecond))
	}
	if c.MaxStackDepth < 1 || c.MaxStackDepth > MaxStackDepth {
		errs = append(errs, fmt.Errorf("max stack depth %d: must be within 1..%d", c.MaxStackDepth, MaxStackDepth))
	}
	page := os.Getpagesize()
	if c.RingBufferSize < page || c.RingBufferSize&(c.RingBufferSize-1) != 0 {
		errs = append(errs, fmt.Errorf("ring buffer size %d: must be a power of two of at least %d", c.RingBufferSize, page))
	}
	if c.FileCacheSize < 1 {
		errs = append(errs, fmt.Errorf("file cache size %d: must be at least 1", c.FileCacheSize))
	}
	if err := c.OffCPU.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Reporter == nil || c.Symbolizer == nil || c.Kernel == nil {
		errs = append(errs, errors.New("reporter, symbolizer and kernel symbols are required"))
	}
	return errors.Join(errs...)
}

// fileInfo is what the tracer caches per mapped file.
type fileInfo struct {
	id   trace.FileID
	isGo bool
	exec trace.ExecutableInfo
	// path is the file's path in the process it was identified in.
	path string
	// debugPath is where, under the root of the process it was built
	// for, the debug file of the file's unwind table was found, or "".
	debugPath string
	// interp is the runtime whose interpreter the file is, once
	// interpChecked; nil for most files.
	interp        interpreter.Loader
	interpChecked bool
	// runtime is the process.runtime.name of the processes whose
	// interpreter (interp) the file is.
	runtime string
}

// Tracer samples the system. Create it with New, run it with Run, release
// it with Close.
type Tracer struct {
	cfg  Config
	log  *slog.Logger
	proc procFS

	objs   progs.StacklineObjects
	maps   unwinderMaps // what Run writes of objs
	links  []link.Link
	events []int // perf event fds
	reader *ringbuf.Reader
	// wait is where Run waits for records (see recordWait).
	wait *recordWait

	// Owned by the Run goroutine.
	w *workers
	// woken says a worker woke Run since it last looked at the results.
	woken    atomic.Bool
	seq      uint64
	inflight map[uint32]inflightSync // by pid: the sync with the workers
	// symbolLoads are the files whose symbols the symbol worker loads
	// (the job to wait for); symbolsLoaded those it loaded.
	symbolLoads   map[trace.FileID]uint64
	symbolsLoaded *simplelru.LRU[trace.FileID, struct{}]
	// renames are files some of whose frames were reported unnamed for
	// want of their symbols (see renameDue).
	renames   map[trace.FileID]*rename
	parked    []parkedTrace
	parkedRec record
	// retry is retryParked's buffer.
	retry []parkedTrace
	// parkedSince is, while a parked trace is handled again, when it
	// was first parked.
	parkedSince time.Time
	parkedBytes int
	processes   map[uint32]*process
	// exited keeps the last processes that exited, for the records the
	// kernel sends after the exit (samples of the exit path itself, and
	// of threads still exiting).
	exited *exitedProcs
	files  *fileCache
	// held are files identified whose symbols are not loaded yet, kept
	// open for processes that exit before they are.
	held      heldFiles
	kernelID  trace.FileID
	rec       record
	out       trace.Trace
	lastSweep time.Time
	tables    *tableStore
	vdso      *unwindTable // nil when the vdso has no table
	due       []dueSync
	backlog   []uint32 // processes running at start, not synced yet
	// processBytes estimates the kernel memory of the processes'
	// mappings in eBPF (the map's own memlock counts them too).
	processBytes uint64

	// monoToWall converts CLOCK_MONOTONIC nanoseconds to Unix time.
	monoToWall int64
	started    time.Time

	// memo is what the frames of the trace being handled share (owned
	// by the Run goroutine).
	memo traceMemo
	// repeats are the traces reported in the reporter's interval, to
	// report again when they repeat (owned by Run).
	repeats traceRepeats
	// batch is what Run keeps while it reads a batch of records (owned
	// by Run).
	batch recordBatch
	// lastMapping is the mapping of the last native frame of the trace
	// being handled, or nil (owned by the Run goroutine).
	lastMapping *mapping
	// kernelAddrs are addresses of the kernel image named before (owned
	// by the Run goroutine).
	kernelAddrs kernelImageAddrs
	// looked are the symbol tables looked up in since Run last dropped
	// their pages (see dropLooked; owned by the Run goroutine).
	looked []*symbolizer.File

	stats tracerStats
}

type tracerStats struct {
	traces, events, decodeErrors, mapsReads, mapsErrors   atomic.Uint64
	unknownMappings, unknownKernel, fileErrors, processes atomic.Uint64
	syncs, syncErrors, debugFileErrors                    atomic.Uint64
	offCPUTraces, repeatedTraces                          atomic.Uint64
	firstSampleUnixNS                                     atomic.Int64
	// Published by the Run goroutine from the table store.
	tablesLoaded, tableBytes, processBytes   atomic.Uint64
	tablesSkipped, tablesFailed, invalidRows atomic.Uint64
	tableBuildNS                             atomic.Int64
	pendingSyncs                             atomic.Uint64
	parkedTraces, parkOverflows              atomic.Uint64
	// Interpreters.
	interpProcesses             atomic.Int64
	interpErrors, interpUnnamed atomic.Uint64
}

// maxExited bounds the exited processes remembered for records that
// follow their exit: seconds of exits at hundreds a second, for a reader
// that falls behind on a loaded host.
const maxExited = 1024

// exitedTTL is how long after its exit a process's name and executable
// name the records sampled after it: long enough for the rest of the exit
// path, short enough that a reused pid is not mistaken for it. Records
// sampled before the exit are named by it however late they are read.
const exitedTTL = time.Second

// newSymbolsLoaded returns an empty set of n files whose symbols were
// loaded.
func newSymbolsLoaded(n int) *simplelru.LRU[trace.FileID, struct{}] {
	c, err := simplelru.NewLRU[trace.FileID, struct{}](max(n, 1), nil)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return c
}

// rereadInterval rate-limits rereading a process's mappings when an address
// falls outside all of them.
const rereadInterval = 200 * time.Millisecond

// New checks the privileges and the kernel, loads the eBPF programs and
// starts sampling every online CPU. Traces queue in the ring buffer until
// Run reads them.
func New(cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tracer: %w", err)
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := CheckEnvironment(cfg.ProcRoot); err != nil {
		return nil, err
	}
	// The memlock limit only matters on kernels before 5.11; later ones
	// charge BPF memory to the cgroup. Failing to raise it is no reason to
	// stop.
	if err := rlimit.RemoveMemlock(); err != nil {
		log.Warn("could not raise RLIMIT_MEMLOCK; continuing (kernels since 5.11 charge BPF memory to the cgroup)", "error", err)
	}
	files, err := newFileCache(cfg.FileCacheSize)
	if err != nil {
		return nil, fmt.Errorf("tracer: file cache: %w", err)
	}
	t := &Tracer{
		exited:        newExited(),
		cfg:           cfg,
		log:           log,
		proc:          newProcFS(cfg.ProcRoot, log),
		processes:     make(map[uint32]*process),
		inflight:      make(map[uint32]inflightSync),
		symbolLoads:   make(map[trace.FileID]uint64),
		symbolsLoaded: newSymbolsLoaded(cfg.FileCacheSize),
		files:         files,
		kernelID:      trace.KernelFileID("vmlinux", cfg.Kernel.BuildID()),
	}
	if err := t.load(); err != nil {
		t.Close()
		return nil, err
	}
	t.scheduleAll()
	t.publishTableStats()
	return t, nil
}

func (t *Tracer) load() error {
	spec, err := progs.LoadStackline()
	if err != nil {
		return fmt.Errorf("tracer: parse eBPF objects: %w", err)
	}
	if err := spec.Variables["max_user_frames"].Set(uint32(t.cfg.MaxStackDepth)); err != nil {
		return fmt.Errorf("tracer: set max stack depth: %w", err)
	}
	spec.Maps["records"].MaxEntries = uint32(t.cfg.RingBufferSize)
	// Records wake the reader early once a quarter of the buffer waits:
	// well before it fills up at any sampling rate the buffer was sized
	// for, while a quiet host costs one wake-up per readInterval.
	if err := spec.Variables["wakeup_bytes"].Set(uint64(t.cfg.RingBufferSize / 4)); err != nil {
		return fmt.Errorf("tracer: set ring buffer wake-up threshold: %w", err)
	}
	skip := offCPUPrograms
	// The kernel's BTF, decoded once for the off-CPU check, the off-CPU
	// programs' attach points and the relocations.
	opts := &ebpf.CollectionOptions{Cache: btf.NewCache()}
	if t.cfg.OffCPU.Enabled {
		if err := checkOffCPUKernel(opts.Cache); err != nil {
			return fmt.Errorf("tracer: %w", err)
		}
		if err := t.setOffCPUVariables(spec); err != nil {
			return err
		}
		skip = nil
	} else {
		// The wait table is unused: keep its preallocated memory small.
		spec.Maps["offcpu_waits"].MaxEntries = 1
		// Without the off-CPU programs, which attach by the kernel's
		// BTF, only the CO-RE relocations need kernel types: the few
		// structures they name, read without decoding the whole BTF.
		// Should that fail, the relocations decode it whole.
		names, err := corebtf.LocalNames(spec.Types)
		if err == nil {
			opts.Programs.KernelTypes, err = corebtf.Load(names)
		}
		if err != nil {
			t.log.Debug("read the kernel types of the relocations; decoding the whole kernel BTF", "error", err)
		}
	}
	if err := loadObjects(spec, &t.objs, skip, opts); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("tracer: the kernel refused the eBPF programs: %+v", verr)
		}
		return fmt.Errorf("tracer: load eBPF programs: %w", err)
	}
	if err := t.objs.Unwinders.Put(uint32(progs.StacklineUnwinderUNWINDER_NATIVE), t.objs.UnwindNative); err != nil {
		return fmt.Errorf("tracer: register the native unwinder: %w", err)
	}
	maps, err := newBPFMaps(spec, &t.objs)
	if err != nil {
		return fmt.Errorf("tracer: %w", err)
	}
	t.maps = maps
	t.tables = newTableStore(t.maps, t.cfg.MaxUnwindTableBytes, t.log)
	t.loadVDSO()
	for name, prog := range map[string]*ebpf.Program{
		"sched_process_exit": t.objs.ProcessExit,
		"sched_process_exec": t.objs.ProcessExec,
	} {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: prog})
		if err != nil {
			return fmt.Errorf("tracer: attach raw tracepoint %s: %w", name, err)
		}
		t.links = append(t.links, l)
	}
	if t.cfg.OffCPU.Enabled {
		if err := t.attachOffCPU(); err != nil {
			return err
		}
	}
	t.reader, err = ringbuf.NewReader(t.objs.Records)
	if err != nil {
		return fmt.Errorf("tracer: open ring buffer: %w", err)
	}
	// Run waits for records in t.wait; the reader reads what is there.
	t.reader.SetDeadline(time.Unix(0, 1))
	if t.wait, err = newRecordWait(t.objs.Records, t.objs.ReaderState); err != nil {
		return fmt.Errorf("tracer: %w", err)
	}
	var wall, mono unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	unix.ClockGettime(unix.CLOCK_REALTIME, &wall)
	t.monoToWall = wall.Nano() - mono.Nano()
	t.started = time.Now()

	cpus, err := onlineCPUs()
	if err != nil {
		return fmt.Errorf("tracer: %w", err)
	}
	for _, cpu := range cpus {
		fd, l, err := attachPerfEvent(cpu, t.cfg.SamplesPerSecond, t.objs.Sample)
		if err != nil {
			return fmt.Errorf("tracer: sample CPU %d: %w", cpu, err)
		}
		t.events = append(t.events, fd)
		if l != nil {
			t.links = append(t.links, l)
		}
	}
	t.log.Info("sampling", "cpus", len(cpus), "samples_per_second", t.cfg.SamplesPerSecond)
	return nil
}

// stopSampling disables the perf events; the programs stay loaded.
func (t *Tracer) stopSampling() {
	for _, fd := range t.events {
		unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_DISABLE, 0)
	}
}

// Close stops sampling and releases the eBPF objects.
func (t *Tracer) Close() error {
	var errs []error
	t.stopSampling()
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	for _, fd := range t.events {
		errs = append(errs, unix.Close(fd))
	}
	t.links, t.events = nil, nil
	if t.reader != nil {
		errs = append(errs, t.reader.Close())
	}
	if t.wait != nil {
		errs = append(errs, t.wait.close())
	}
	errs = append(errs, t.objs.Close())
	return errors.Join(errs...)
}

// Run reads and handles records until ctx is done. It must be called once.
// Between records it gives processes to the eBPF unwinder: those that
// asked or exec'd first, then those running when New returned. The heavy
// part of that work (reading /proc, identifying files, building unwind
// tables) runs on workers Run starts and stops; the records it reads
// meanwhile wait for it in memory, not in the ring buffer.
func (t *Tracer) Run(ctx context.Context) error {
	t.w = t.startWorkers(context.WithoutCancel(ctx), t.wake)
	defer t.held.expire(time.Time{}, true)
	defer t.w.stop()
	stop := context.AfterFunc(ctx, t.wait.interrupt)
	defer stop()
	var rec ringbuf.Record
	// seen is the count of urgent records when Run last woke: those
	// sent since are not read yet (see urgentSince).
	seen := t.wait.urgentSent()
	for {
		if ctx.Err() != nil {
			t.drain(&rec)
			return nil
		}
		// Records do not wake the reader one by one (see wakeup_bytes in
		// the eBPF maps): it reads what arrived every readInterval,
		// earlier for queued syncs, urgent records (once for all those
		// sent while it reads: see recordWait), a filling buffer and
		// the workers' results (which wake it through wake: see
		// workers.send).
		now := time.Now()
		t.woken.Store(false)
		t.collect(now)
		wake := now.Add(readInterval)
		if next := t.runDue(now); !next.IsZero() && next.Before(wake) {
			wake = next
		}
		// Work due that cannot be done yet (a worker's queue full)
		// waits a little, not a busy loop.
		if soonest := now.Add(minWait); wake.Before(soonest) {
			wake = soonest
		}
		t.dropLooked()
		err := t.wait.wait(wake, func() bool { return t.urgentSince(seen) })
		seen = t.wait.urgentSent()
		switch {
		case err == nil, errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, errInterrupted):
		case errors.Is(err, os.ErrClosed):
			return nil
		default:
			return fmt.Errorf("tracer: wait for records: %w", err)
		}
		if err := t.readRecords(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("tracer: read ring buffer: %w", err)
		}
		t.housekeeping(time.Now())
	}
}

// minWait is the shortest wait for records, however soon work is due.
const minWait = 2 * time.Millisecond

// housekeepingRecords is how many records of one batch readRecords handles
// between two runs of housekeeping; Run runs it after each batch.
const housekeepingRecords = 256

// readRecords handles the records in the ring buffer, without waiting:
// the reader's deadline is in the past.
func (t *Tracer) readRecords(rec *ringbuf.Record) error {
	t.batch.reading = true
	defer t.handOff()
	for n := 1; t.reader.AvailableBytes() > 0; n++ {
		err := t.reader.ReadInto(rec)
		switch {
		case err == nil:
			t.handle(rec.RawSample)
			if n%housekeepingRecords == 0 {
				// A long batch (a reader that fell behind) does
				// not hold up the expiry of parked traces, nor
				// the syncs asked for.
				t.handOff()
				t.housekeeping(time.Now())
				t.batch.reading = true
			}
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			// Only discarded records were left.
			return nil
		default:
			return err
		}
	}
	return nil
}

// wake wakes the Run goroutine from its wait for records, for the results
// a worker handed back: once until Run looks at them.
func (t *Tracer) wake() {
	if t.woken.CompareAndSwap(false, true) {
		t.wait.interrupt()
	}
}

// collect applies the results the workers have handed back.
func (t *Tracer) collect(now time.Time) {
	for {
		select {
		case r := <-t.w.results:
			t.apply(r, now)
		default:
			return
		}
	}
}

// drainWait bounds how long Run waits at shutdown for the syncs the last
// traces wait for.
const drainWait = time.Second

// drain handles what is already in the ring buffer, so the last samples
// before shutdown reach the final export, and reports the parked traces
// once the syncs they wait for are done (or after drainWait).
func (t *Tracer) drain(rec *ringbuf.Record) {
	t.stopSampling()
	t.readRecords(rec)
	deadline := time.NewTimer(drainWait)
	defer deadline.Stop()
	for len(t.parked) > 0 && (len(t.inflight) > 0 || len(t.symbolLoads) > 0) {
		select {
		case r := <-t.w.results:
			t.apply(r, time.Now())
		case <-deadline.C:
			t.expireParked(time.Now(), true)
			return
		}
	}
	t.expireParked(time.Now(), true)
}

func (t *Tracer) handle(raw []byte) {
	if len(raw) >= 4 && binary.LittleEndian.Uint32(raw) == recordWakeup {
		// It only woke the reader.
		return
	}
	if err := t.rec.decode(raw); err != nil {
		t.stats.decodeErrors.Add(1)
		t.log.Debug("bad record", "error", err)
		return
	}
	switch t.rec.kind {
	case recordTrace:
		t.stats.traces.Add(1)
		if t.stats.firstSampleUnixNS.Load() == 0 {
			t.stats.firstSampleUnixNS.CompareAndSwap(0, time.Now().UnixNano())
		}
		t.handleTrace(&t.rec, raw, false)
	case recordOffCPU:
		t.stats.offCPUTraces.Add(1)
		t.handleTrace(&t.rec, raw, false)
	case recordProcessExit:
		t.stats.events.Add(1)
		p := t.processes[t.rec.pid]
		if p != nil {
			p.noteDropped(t.rec.ktimeNS)
		}
		t.forget(t.rec.pid)
		if p == nil {
			// Not read yet (a sync may be under way): what the
			// workers bring back names its last records, and is
			// not given to eBPF.
			t.exited.AddUnknown(t.rec.pid, t.rec.ktimeNS)
		} else {
			p.gone, p.exitedK = true, t.rec.ktimeNS
			t.exited.Add(p.pid, p)
		}
		t.unschedule(t.rec.pid)
		t.batch.exited(t.rec.pid)
	case recordProcessExec:
		t.stats.events.Add(1)
		t.exited.Remove(t.rec.pid)
		// New image, new mappings. The process is read when it asks
		// (its first sample finds no mappings in eBPF: request_sync)
		// and meanwhile its frames are found in the kernel and named
		// by their files (fileFrame). Only a process running an
		// executable not known yet is read unasked, once the dynamic
		// loader has mapped the libraries: its files get identified
		// and their tables built while it lives, for the next
		// processes running them (a process of a few milliseconds
		// may never be sampled). One that exits before costs nothing
		// (its exit, read in the same batch, unschedules it).
		if p := t.processes[t.rec.pid]; p != nil {
			p.noteDropped(t.rec.ktimeNS)
		}
		t.forget(t.rec.pid)
		// A sync under way may have read the old image.
		delete(t.inflight, t.rec.pid)
		if _, known := t.files.Peek(t.rec.exe); t.rec.exe == (fileKey{}) || !known {
			t.schedule(t.rec.pid, t.execSyncTime(t.rec.ktimeNS, time.Now(), execSyncDelay))
		}
	case recordProcessSync:
		t.stats.events.Add(1)
		t.requestSync(t.rec.pid, time.Now())
	default:
		t.stats.decodeErrors.Add(1)
	}
}

// housekeeping runs the periodic work of the Run goroutine and publishes
// its state for Stats.
func (t *Tracer) housekeeping(now time.Time) {
	if now.Sub(t.lastSweep) > sweepInterval {
		t.lastSweep = now
		t.sweep()
		// A cached symbol table keeps its file mapped, and the file's
		// mount busy (a container's root): forget the files no process
		// has mapped for a while, in the file cache too.
		for _, tb := range t.tables.expire(now) {
			t.cfg.Symbolizer.Forget(tb.id)
			for _, k := range tb.files {
				t.files.Remove(k)
			}
		}
		t.files.expire(now, t.cfg.FileCacheTTL)
		// The pages of mapped files that lookups touched since are
		// dropped from the agent's RSS (see Symbolizer.Trim).
		t.cfg.Symbolizer.Trim()
	}
	t.expireParked(now, false)
	t.held.expire(now, false)
	t.stats.processes.Store(uint64(len(t.processes)))
	t.publishTableStats()
}

// sweepInterval is how often the tracer looks for processes that exited
// without it seeing the exit (its record was lost to a full ring buffer).
const sweepInterval = 30 * time.Second

// sweep forgets processes that no longer exist, so the process table stays
// bounded by the live processes even when exit records are lost.
func (t *Tracer) sweep() {
	for pid := range t.processes {
		if _, err := os.Stat(t.proc.path(pid)); isNotExist(err) {
			t.forget(pid)
		}
	}
}

// knownProcess returns what the workers read of pid, or of the process
// of pid that exited, for a record of pid sampled at ktime
// (CLOCK_MONOTONIC ns), or nil.
func (t *Tracer) knownProcess(pid uint32, ktime uint64) *process {
	if p, ok := t.processes[pid]; ok {
		return p
	}
	if p, ok := t.exited.Get(pid); ok && ktime < p.exitedK+uint64(exitedTTL) {
		// Sampled before its exit, however late the record is read,
		// or on the exit path after it: not another process of the
		// same pid, which exitedTTL is too short to reuse it.
		return p
	}
	return nil
}

// process returns the tracer's view of pid for a record sampled at ktime:
// what is known, else a process of which nothing is known (not kept: the
// workers read it).
func (t *Tracer) process(pid uint32, ktime uint64) *process {
	if p := t.knownProcess(pid, ktime); p != nil {
		return p
	}
	return &process{pid: pid}
}

// ktime returns now as CLOCK_MONOTONIC ns, the records' clock.
func (t *Tracer) ktime(now time.Time) uint64 {
	return uint64(now.UnixNano() - t.monoToWall)
}

// Stats are the tracer's self-metrics.
type Stats struct {
	// Counters are the eBPF programs' counters (samples handled, records
	// lost to a full ring buffer, unwinding stops, frames unwound...),
	// indexed by enum counter of support/ebpf/maps.h.
	Counters [progs.StacklineCounterCOUNTER_NUM]uint64
	// Traces and Events count records received; OffCPUTraces the
	// off-CPU traces among them (not counted in Traces).
	Traces, Events, OffCPUTraces uint64
	// RepeatedTraces counts the traces reported again with the frames
	// named at their first sight in the reporter's interval (repeat.go).
	RepeatedTraces uint64
	// DecodeErrors counts malformed records.
	DecodeErrors uint64
	// MapsReads and MapsErrors count /proc/PID/maps reads.
	MapsReads, MapsErrors uint64
	// UnknownMappings counts user addresses outside every mapping.
	UnknownMappings uint64
	// UnknownKernel counts kernel frames at addresses no symbol covers,
	// exported as [unknown] frames on the kernel mapping.
	UnknownKernel uint64
	// FileErrors counts mapped files that could not be opened or hashed.
	FileErrors uint64
	// DebugFileErrors counts files whose debug file exists but could not
	// be used (a wrong build ID or CRC, unreadable), logged once each.
	DebugFileErrors uint64
	// Processes is the number of processes tracked now.
	Processes uint64
	// FileCacheEntries is the number of mapped files whose identity is
	// cached; HeldFiles those kept open until their symbols load.
	FileCacheEntries, HeldFiles uint64
	// Syncs counts the processes' mappings given to the eBPF unwinder;
	// SyncErrors the failures.
	Syncs, SyncErrors uint64
	// TablesLoaded and TableBytes are the unwind tables in eBPF and the
	// kernel memory they use; ProcessMapBytes estimates that of the
	// processes' mappings.
	TablesLoaded, TableBytes, ProcessMapBytes uint64
	// TablesSkipped counts files whose table did not fit in
	// MaxUnwindTableBytes; TablesFailed files whose CFI could not be
	// read; InvalidRows rules the eBPF unwinder cannot express.
	TablesSkipped, TablesFailed, InvalidRows uint64
	// TableBuildTime is the time spent building tables.
	TableBuildTime time.Duration
	// PendingSyncs is the number of processes waiting to be given to
	// the eBPF unwinder (those running at start, at first), including
	// those the workers are reading.
	PendingSyncs uint64
	// ParkedTraces is the number of traces waiting for the workers to
	// read their process; ParkOverflows counts those reported before
	// (unnamed where nothing was known) because too many waited.
	ParkedTraces, ParkOverflows uint64
	// InterpreterProcesses is the number of processes running a known
	// interpreter now; InterpreterErrors counts interpreter files that
	// could not be used and processes that could not be attached;
	// InterpreterUnnamed interpreted frames that could not be named.
	InterpreterProcesses                  uint64
	InterpreterErrors, InterpreterUnnamed uint64
	// SamplingStarted is when the perf events were enabled; FirstSample
	// when the first trace was received (zero until then).
	SamplingStarted, FirstSample time.Time
}

// Stats returns the tracer's counters, including the eBPF side's.
func (t *Tracer) Stats() Stats {
	s := Stats{
		InterpreterProcesses: uint64(max(t.stats.interpProcesses.Load(), 0)),
		InterpreterErrors:    t.stats.interpErrors.Load(),
		InterpreterUnnamed:   t.stats.interpUnnamed.Load(),
		Syncs:                t.stats.syncs.Load(),
		SyncErrors:           t.stats.syncErrors.Load(),
		TablesLoaded:         t.stats.tablesLoaded.Load(),
		TableBytes:           t.stats.tableBytes.Load(),
		ProcessMapBytes:      t.stats.processBytes.Load(),
		TablesSkipped:        t.stats.tablesSkipped.Load(),
		TablesFailed:         t.stats.tablesFailed.Load(),
		InvalidRows:          t.stats.invalidRows.Load(),
		TableBuildTime:       time.Duration(t.stats.tableBuildNS.Load()),
		PendingSyncs:         t.stats.pendingSyncs.Load(),
		ParkedTraces:         t.stats.parkedTraces.Load(),
		ParkOverflows:        t.stats.parkOverflows.Load(),
		Traces:               t.stats.traces.Load(),
		OffCPUTraces:         t.stats.offCPUTraces.Load(),
		RepeatedTraces:       t.stats.repeatedTraces.Load(),
		Events:               t.stats.events.Load(),
		DecodeErrors:         t.stats.decodeErrors.Load(),
		MapsReads:            t.stats.mapsReads.Load(),
		MapsErrors:           t.stats.mapsErrors.Load(),
		UnknownMappings:      t.stats.unknownMappings.Load(),
		UnknownKernel:        t.stats.unknownKernel.Load(),
		FileErrors:           t.stats.fileErrors.Load(),
		DebugFileErrors:      t.stats.debugFileErrors.Load(),
		Processes:            t.stats.processes.Load(),
		FileCacheEntries:     uint64(t.files.Len()),
		HeldFiles:            uint64(t.held.len()),
		SamplingStarted:      t.started,
		FirstSample:          unixNano(t.stats.firstSampleUnixNS.Load()),
	}
	for i := range s.Counters {
		var perCPU []uint64
		if err := t.objs.Counters.Lookup(uint32(i), &perCPU); err == nil {
			for _, v := range perCPU {
				s.Counters[i] += v
			}
		}
	}
	return s
}

// MapMemory returns the memory the eBPF maps use, in bytes, as the kernel
// reports it (memlock in /proc/self/fdinfo): the maps, with the entries of
// the hashes allocated as used (the processes' mappings), and the unwind
// tables.
func (t *Tracer) MapMemory() uint64 {
	total := t.stats.tableBytes.Load()
	for _, m := range []*ebpf.Map{t.objs.Records, t.objs.TraceScratch, t.objs.Counters,
		t.objs.Processes, t.objs.ProcessMappings, t.objs.UnwindTables, t.objs.SyncRequests,
		t.objs.UnwindStates, t.objs.Unwinders, t.objs.FileTables, t.objs.InterpProcs, t.objs.PyCodeSeen, t.objs.HotspotSeen,
		t.objs.ReaderState, t.objs.RowsWanted, t.objs.OffcpuWaits} {
		if m == nil {
			continue
		}
		total += fdinfoMemlock(filepath.Join("/proc/self/fdinfo", fmt.Sprint(m.FD())))
	}
	return total
}

// publishTableStats makes the table store's state visible to Stats.
func (t *Tracer) publishTableStats() {
	s := &t.tables.stats
	t.stats.tablesLoaded.Store(uint64(len(t.tables.keys)))
	t.stats.tableBytes.Store(t.tables.used)
	t.stats.processBytes.Store(t.processBytes)
	t.stats.tablesSkipped.Store(s.skipped)
	t.stats.tablesFailed.Store(s.failed)
	t.stats.invalidRows.Store(s.invalidRows)
	t.stats.tableBuildNS.Store(int64(s.buildTime))
	t.stats.pendingSyncs.Store(uint64(len(t.due) + len(t.backlog) + len(t.inflight)))
}

// Tables lists the files whose unwind tables the tracer knows, largest
// first. It is safe to call while Run runs.
func (t *Tracer) Tables() []TableInfo {
	return t.tables.list(time.Now())
}

func unixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
