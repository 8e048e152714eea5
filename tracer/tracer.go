// Package tracer loads stackline's eBPF programs, samples every online CPU,
// reads traces from the ring buffer, keeps each process's mappings current
// and turns raw addresses into frames that it names through the reporter's
// contract (FrameKnown / FrameMetadata) before reporting each trace.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sys/unix"

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
	MaxStackDepth       = 128
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
	// ProcRoot is where /proc is mounted ("/proc" when empty).
	ProcRoot string
	// Reporter receives frames, executables and traces.
	Reporter Reporter
	// Symbolizer names native frames.
	Symbolizer *symbolizer.Symbolizer
	// Kernel names kernel frames.
	Kernel *kallsyms.Table
	// Logger receives warnings; nil means slog.Default().
	Logger *slog.Logger
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
}

// Tracer samples the system. Create it with New, run it with Run, release
// it with Close.
type Tracer struct {
	cfg  Config
	log  *slog.Logger
	proc procFS

	objs   progs.StacklineObjects
	links  []link.Link
	events []int // perf event fds
	reader *ringbuf.Reader

	// Owned by the Run goroutine.
	processes map[uint32]*process
	files     *lru.Cache[fileKey, *fileInfo]
	kernelID  trace.FileID
	rec       record
	out       trace.Trace
	lastSweep time.Time

	// monoToWall converts CLOCK_MONOTONIC nanoseconds to Unix time.
	monoToWall int64
	started    time.Time

	stats tracerStats
}

type tracerStats struct {
	traces, events, decodeErrors, mapsReads, mapsErrors   atomic.Uint64
	unknownMappings, unknownKernel, fileErrors, processes atomic.Uint64
	firstSampleUnixNS                                     atomic.Int64
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
	files, err := lru.New[fileKey, *fileInfo](cfg.FileCacheSize)
	if err != nil {
		return nil, fmt.Errorf("tracer: file cache: %w", err)
	}
	t := &Tracer{
		cfg:       cfg,
		log:       log,
		proc:      procFS{root: cfg.ProcRoot},
		processes: make(map[uint32]*process),
		files:     files,
		kernelID:  trace.KernelFileID("vmlinux", cfg.Kernel.BuildID()),
	}
	if err := t.load(); err != nil {
		t.Close()
		return nil, err
	}
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
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("tracer: the kernel refused the eBPF programs: %+v", verr)
		}
		return fmt.Errorf("tracer: load eBPF programs: %w", err)
	}
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
	t.reader, err = ringbuf.NewReader(t.objs.Records)
	if err != nil {
		return fmt.Errorf("tracer: open ring buffer: %w", err)
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
	errs = append(errs, t.objs.Close())
	return errors.Join(errs...)
}

// Run reads and handles records until ctx is done. It must be called once.
func (t *Tracer) Run(ctx context.Context) error {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			// Wake the blocked Read; it then returns os.ErrDeadlineExceeded.
			t.reader.SetDeadline(time.Now())
		case <-stop:
		}
	}()
	var rec ringbuf.Record
	for {
		if err := t.reader.ReadInto(&rec); err != nil {
			if ctx.Err() != nil {
				t.drain(&rec)
				return nil
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("tracer: read ring buffer: %w", err)
		}
		t.handle(rec.RawSample)
	}
}

// drain handles what is already in the ring buffer, so the last samples
// before shutdown reach the final export.
func (t *Tracer) drain(rec *ringbuf.Record) {
	t.stopSampling()
	t.reader.SetDeadline(time.Now())
	for t.reader.AvailableBytes() > 0 {
		if err := t.reader.ReadInto(rec); err != nil {
			return
		}
		t.handle(rec.RawSample)
	}
}

func (t *Tracer) handle(raw []byte) {
	if err := t.rec.decode(raw); err != nil {
		t.stats.decodeErrors.Add(1)
		t.log.Debug("bad record", "error", err)
		return
	}
	switch t.rec.kind {
	case recordTrace:
		t.stats.traces.Add(1)
		t.stats.firstSampleUnixNS.CompareAndSwap(0, time.Now().UnixNano())
		t.handleTrace(&t.rec)
	case recordProcessExit:
		t.stats.events.Add(1)
		delete(t.processes, t.rec.pid)
	case recordProcessExec:
		t.stats.events.Add(1)
		// New image, new mappings: read them again on the next trace.
		delete(t.processes, t.rec.pid)
	default:
		t.stats.decodeErrors.Add(1)
	}
	if now := time.Now(); now.Sub(t.lastSweep) > sweepInterval {
		t.lastSweep = now
		t.sweep()
	}
	t.stats.processes.Store(uint64(len(t.processes)))
}

// sweepInterval is how often the tracer looks for processes that exited
// without it seeing the exit (its record was lost to a full ring buffer).
const sweepInterval = 30 * time.Second

// sweep forgets processes that no longer exist, so the process table stays
// bounded by the live processes even when exit records are lost.
func (t *Tracer) sweep() {
	for pid := range t.processes {
		if _, err := os.Stat(t.proc.path(pid)); isNotExist(err) {
			delete(t.processes, pid)
		}
	}
}

// process returns the tracer's view of pid, reading it on first sight.
func (t *Tracer) process(pid uint32) *process {
	if p, ok := t.processes[pid]; ok {
		return p
	}
	p := &process{pid: pid}
	t.readMappings(p)
	t.processes[pid] = p
	return p
}

func (t *Tracer) readMappings(p *process) {
	t.stats.mapsReads.Add(1)
	p.lastRead = time.Now()
	if err := t.proc.readProcess(p); err != nil {
		t.stats.mapsErrors.Add(1)
		if isNotExist(err) {
			p.gone = true
		} else {
			t.log.Debug("read process", "pid", p.pid, "error", err)
		}
	}
}

// Stats are the tracer's self-metrics.
type Stats struct {
	// Samples counts perf events handled in eBPF; Idle those of the idle
	// task (not sent).
	Samples, Idle uint64
	// LostTraces and LostEvents count records dropped because the ring
	// buffer was full.
	LostTraces, LostEvents uint64
	// Traces and Events count records received.
	Traces, Events uint64
	// DecodeErrors counts malformed records.
	DecodeErrors uint64
	// KernelStackErrors, UserReadErrors and MaxDepth count unwinding
	// problems in eBPF.
	KernelStackErrors, UserReadErrors, MaxDepth uint64
	// MapsReads and MapsErrors count /proc/PID/maps reads.
	MapsReads, MapsErrors uint64
	// UnknownMappings counts user addresses outside every mapping.
	UnknownMappings uint64
	// UnknownKernel counts kernel frames at addresses no symbol covers,
	// exported as [unknown] frames on the kernel mapping.
	UnknownKernel uint64
	// FileErrors counts mapped files that could not be opened or hashed.
	FileErrors uint64
	// Processes is the number of processes tracked now.
	Processes uint64
	// SamplingStarted is when the perf events were enabled; FirstSample
	// when the first trace was received (zero until then).
	SamplingStarted, FirstSample time.Time
}

// Counter indexes of support/ebpf/maps.h (enum counter).
const (
	counterSamples = iota
	counterIdle
	counterLostTraces
	counterLostEvents
	counterKernelStackErr
	counterUserReadErr
	counterMaxDepth
	numCounters
)

// Stats returns the tracer's counters, including the eBPF side's.
func (t *Tracer) Stats() Stats {
	var bpf [numCounters]uint64
	for i := range uint32(numCounters) {
		var perCPU []uint64
		if err := t.objs.Counters.Lookup(i, &perCPU); err == nil {
			for _, v := range perCPU {
				bpf[i] += v
			}
		}
	}
	return Stats{
		Samples:           bpf[counterSamples],
		Idle:              bpf[counterIdle],
		LostTraces:        bpf[counterLostTraces],
		LostEvents:        bpf[counterLostEvents],
		KernelStackErrors: bpf[counterKernelStackErr],
		UserReadErrors:    bpf[counterUserReadErr],
		MaxDepth:          bpf[counterMaxDepth],
		Traces:            t.stats.traces.Load(),
		Events:            t.stats.events.Load(),
		DecodeErrors:      t.stats.decodeErrors.Load(),
		MapsReads:         t.stats.mapsReads.Load(),
		MapsErrors:        t.stats.mapsErrors.Load(),
		UnknownMappings:   t.stats.unknownMappings.Load(),
		UnknownKernel:     t.stats.unknownKernel.Load(),
		FileErrors:        t.stats.fileErrors.Load(),
		Processes:         t.stats.processes.Load(),
		SamplingStarted:   t.started,
		FirstSample:       unixNano(t.stats.firstSampleUnixNS.Load()),
	}
}

// MapMemory returns the memory the eBPF maps use, in bytes, as the kernel
// reports it (memlock in /proc/self/fdinfo).
func (t *Tracer) MapMemory() uint64 {
	var total uint64
	for _, m := range []*ebpf.Map{t.objs.Records, t.objs.TraceScratch, t.objs.Counters} {
		if m == nil {
			continue
		}
		total += fdinfoMemlock(filepath.Join("/proc/self/fdinfo", fmt.Sprint(m.FD())))
	}
	return total
}

func unixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
