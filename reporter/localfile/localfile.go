// Package localfile writes OTLP profile requests to local files, for hosts
// without a backend.
//
// For each request, a [Writer] writes two files into its directory, named
// after the start of the profiled interval in UTC:
//
//   - stackline-20261122T101500Z.pb.gz, a gzipped pprof profile of all
//     processes, which "go tool pprof" opens on any machine: every frame is
//     named in the file itself, and nothing needs to be symbolized;
//   - stackline-20261122T101500Z.folded, the same samples as folded stacks,
//     one "process;root;...;leaf count" line per distinct stack, sorted,
//     the input of flame graph tools.
//
// A request with off-CPU waits (an off_cpu/nanoseconds profile) also
// writes their pprof profile and folded stacks, stackline-<time>.offcpu.pb.gz
// and stackline-<time>.offcpu.folded, whose values are nanoseconds waited.
// A Writer made with [TraceEvents] writes stackline-<time>.trace.json too,
// a Chrome trace-event file (Perfetto, chrome://tracing) of each thread's
// timeline: CPU samples and off-CPU waits as slices (see trace.go).
//
// Files are written atomically: readers see either nothing or the whole
// file.
package localfile

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/pprof/profile"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
)

// Names and limits of the written files.
const (
	unknownName     = "[unknown]"
	fileTimeLayout  = "20060102T150405Z"
	filePrefix      = "stackline-"
	pprofSuffix     = ".pb.gz"
	foldedSuffix    = ".folded"
	offCPUInfix     = ".offcpu"
	traceSuffix     = ".trace.json"
	maxNameAttempts = 1000
)

// Labels of the samples in the written pprof profiles.
const (
	// LabelPID is the numeric label holding a sample's process ID.
	LabelPID = "pid"
	// LabelTID is the numeric label holding a sample's thread ID.
	LabelTID = "tid"
	// LabelThreadName is the string label holding a sample's thread name.
	LabelThreadName = "thread_name"
	// LabelProcessName is the string label holding a sample's process
	// (executable) name.
	LabelProcessName = "process_name"
)

// Stats counts what a [Writer] has done since it was created.
type Stats struct {
	// Written is the number of requests written, each as a pprof and a
	// folded file (and the off-CPU and trace-event files).
	Written uint64
	// Errors is the number of requests that could not be written.
	Errors uint64
	// Bytes is the number of bytes written to both kinds of file.
	Bytes uint64
}

// Writer writes each request it is given to a pprof file and a folded
// stacks file in one directory. Its methods may be called from several
// goroutines.
type Writer struct {
	dir string
	log *slog.Logger
	// traceEvents writes a Chrome trace-event file per request.
	traceEvents bool

	mu sync.Mutex // serializes Export, so that file names stay unique

	written atomic.Uint64
	errors  atomic.Uint64
	bytes   atomic.Uint64
}

// Option configures a Writer.
type Option func(*Writer)

// TraceEvents makes the Writer write a Chrome trace-event file of each
// request beside its profiles.
func TraceEvents() Option {
	return func(w *Writer) { w.traceEvents = true }
}

// New returns a Writer that writes into dir, creating it (mode 0755) if
// needed. A nil logger discards the logs.
func New(dir string, logger *slog.Logger, opts ...Option) (*Writer, error) {
	if dir == "" {
		return nil, errors.New("localfile: no directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("localfile: create output directory: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{dir: dir, log: logger}
	for _, o := range opts {
		o(w)
	}
	return w, nil
}

// Stats returns a snapshot of the writer's counters.
func (w *Writer) Stats() Stats {
	return Stats{Written: w.written.Load(), Errors: w.errors.Load(), Bytes: w.bytes.Load()}
}

// Export writes req as <dir>/stackline-<time>.pb.gz and
// <dir>/stackline-<time>.folded, where <time> is the start of the profile
// in UTC, with a "-N" suffix when files of that name exist already. A
// request without samples writes nothing. Export rejects a request that
// fails [otlpcheck.Validate].
func (w *Writer) Export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	if err := w.export(ctx, req); err != nil {
		w.errors.Add(1)
		return err
	}
	return nil
}

func (w *Writer) export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localfile: export: %w", err)
	}
	if err := otlpcheck.Validate(req); err != nil {
		return fmt.Errorf("localfile: invalid request: %w", err)
	}
	type file struct {
		suffix string
		data   []byte
	}
	var files []file
	var start int64
	samples := 0
	for _, offCPU := range []bool{false, true} {
		c := newConverter(req, offCPU)
		if err := c.convert(); err != nil {
			return err
		}
		if len(c.p.Sample) == 0 {
			continue
		}
		if err := c.p.CheckValid(); err != nil {
			return fmt.Errorf("localfile: built an invalid pprof profile: %w", err)
		}
		var pb bytes.Buffer
		if err := c.p.Write(&pb); err != nil {
			return fmt.Errorf("localfile: encode pprof profile: %w", err)
		}
		infix := ""
		if offCPU {
			infix = offCPUInfix
		}
		files = append(files, file{infix + pprofSuffix, pb.Bytes()}, file{infix + foldedSuffix, c.folded()})
		if start == 0 || c.p.TimeNanos != 0 && c.p.TimeNanos < start {
			start = c.p.TimeNanos
		}
		samples += len(c.p.Sample)
	}
	if len(files) == 0 {
		w.log.Debug("no samples in request, nothing written")
		return nil
	}
	if w.traceEvents {
		data, err := traceEventsJSON(req)
		if err != nil {
			return err
		}
		files = append(files, file{traceSuffix, data})
	}
	t := time.Unix(0, start)
	if start == 0 {
		t = time.Now()
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	base, err := w.freeBase(t)
	if err != nil {
		return err
	}
	n := 0
	for _, f := range files {
		if err := writeAtomic(base+f.suffix, f.data); err != nil {
			return err
		}
		n += len(f.data)
	}
	w.written.Add(1)
	w.bytes.Add(uint64(n))
	w.log.Debug("wrote profile", "file", base+pprofSuffix, "samples", samples)
	return nil
}

// freeBase returns the path, without suffix, of files for a profile
// starting at t that exist in no kind. w.mu must be held.
func (w *Writer) freeBase(t time.Time) (string, error) {
	stem := filepath.Join(w.dir, filePrefix+t.UTC().Format(fileTimeLayout))
	for i := range maxNameAttempts {
		base := stem
		if i > 0 {
			base = stem + "-" + strconv.Itoa(i)
		}
		free := true
		for _, suffix := range []string{pprofSuffix, foldedSuffix, offCPUInfix + pprofSuffix, offCPUInfix + foldedSuffix, traceSuffix} {
			_, err := os.Lstat(base + suffix)
			if err == nil {
				free = false
			} else if !errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("localfile: %w", err)
			}
		}
		if free {
			return base, nil
		}
	}
	return "", fmt.Errorf("localfile: no free file name for %s after %d attempts", stem, maxNameAttempts)
}

// writeAtomic writes data to a temporary file next to path and renames it
// to path.
func writeAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("localfile: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("localfile: write %s: %w", f.Name(), err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("localfile: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("localfile: sync %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("localfile: close %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("localfile: %w", err)
	}
	return nil
}

// converter turns the CPU or the off-CPU profiles of one validated request
// into a pprof profile and folded stacks.
type converter struct {
	req    *collectorpb.ExportProfilesServiceRequest
	d      *profilespb.ProfilesDictionary
	p      *profile.Profile
	offCPU bool

	mappings  map[int32]*profile.Mapping
	functions map[int32]*profile.Function
	synthetic map[string]*profile.Function // for frames without lines
	locations map[int32]*profile.Location
	frames    map[int32][]Frame         // folded frames of a location, root first
	kernel    map[*profile.Mapping]bool // mappings of kernel frames

	folds     map[foldKey]*FoldedStack
	foldOrder []*FoldedStack
	foldOnly  bool // fold, build no pprof profile
}

// newConverter returns a converter of req's off-CPU profiles when offCPU,
// else of its CPU profiles.
func newConverter(req *collectorpb.ExportProfilesServiceRequest, offCPU bool) *converter {
	p := &profile.Profile{
		SampleType: []*profile.ValueType{
			{Type: semconv.SampleTypeSamples, Unit: semconv.UnitCount},
			{Type: semconv.PeriodTypeCPU, Unit: semconv.UnitNanoseconds},
		},
		PeriodType: &profile.ValueType{Type: semconv.PeriodTypeCPU, Unit: semconv.UnitNanoseconds},
	}
	if offCPU {
		// Nanoseconds waited (scaled up by the sampling fraction).
		p.SampleType = []*profile.ValueType{{Type: semconv.SampleTypeOffCPU, Unit: semconv.UnitNanoseconds}}
		p.PeriodType = nil
	}
	return &converter{
		req:       req,
		d:         req.GetDictionary(),
		p:         p,
		offCPU:    offCPU,
		mappings:  make(map[int32]*profile.Mapping),
		functions: make(map[int32]*profile.Function),
		synthetic: make(map[string]*profile.Function),
		locations: make(map[int32]*profile.Location),
		frames:    make(map[int32][]Frame),
		kernel:    make(map[*profile.Mapping]bool),
		folds:     make(map[foldKey]*FoldedStack),
	}
}

func (c *converter) str(i int32) string { return c.d.StringTable[i] }

// convert fills c.p (unless c.foldOnly) and c.folds from the request.
func (c *converter) convert() error {
	var start, end int64
	for _, rp := range c.req.GetResourceProfiles() {
		pid, _ := strconv.ParseInt(otlpcheck.ResourceAttr(rp, semconv.PID), 10, 64)
		proc := processName(rp)
		for _, sp := range rp.GetScopeProfiles() {
			for _, prof := range sp.GetProfiles() {
				// A fold-only converter folds every profile, each stack
				// keyed by its sample type; one building a pprof profile
				// takes those of its kind only.
				if len(prof.GetSamples()) == 0 || !c.foldOnly && isOffCPU(c.d, prof) != c.offCPU {
					continue
				}
				if t := int64(prof.GetTimeUnixNano()); t != 0 && (start == 0 || t < start) {
					start = t
				}
				end = max(end, int64(prof.GetTimeUnixNano()+prof.GetDurationNano()))
				if c.p.Period == 0 && !c.offCPU {
					c.p.Period = prof.GetPeriod()
				}
				typ := ValueType{
					Type: c.str(prof.GetSampleType().GetTypeStrindex()),
					Unit: c.str(prof.GetSampleType().GetUnitStrindex()),
				}
				for _, s := range prof.GetSamples() {
					if err := c.sample(s, pid, proc, prof.GetPeriod(), typ); err != nil {
						return err
					}
				}
			}
		}
	}
	c.p.TimeNanos = start
	if start != 0 && end > start {
		c.p.DurationNanos = end - start
	}
	c.orderMappings()
	return nil
}

// orderMappings puts executables before shared libraries and those before
// the kernel's and pseudo-files such as "[vdso]", keeping the order of
// first use otherwise: pprof takes the first mapping for the main binary and names
// it in its reports.
func (c *converter) orderMappings() {
	rank := func(m *profile.Mapping) int {
		base := filepath.Base(m.File)
		switch {
		case c.kernel[m], strings.HasPrefix(m.File, "["), m.File == "":
			return 2
		case strings.HasSuffix(base, ".so"), strings.Contains(base, ".so."):
			return 1
		}
		return 0
	}
	slices.SortStableFunc(c.p.Mapping, func(a, b *profile.Mapping) int {
		return cmp.Compare(rank(a), rank(b))
	})
	for i, m := range c.p.Mapping {
		m.ID = uint64(i + 1)
	}
}

// isOffCPU reports whether prof holds off-CPU waits (sample type
// off_cpu), not CPU samples.
func isOffCPU(d *profilespb.ProfilesDictionary, prof *profilespb.Profile) bool {
	return d.StringTable[prof.GetSampleType().GetTypeStrindex()] == semconv.SampleTypeOffCPU
}

func processName(rp *profilespb.ResourceProfiles) string {
	if name := otlpcheck.ResourceAttr(rp, semconv.ExeName); name != "" {
		return name
	}
	if path := otlpcheck.ResourceAttr(rp, semconv.ExePath); path != "" {
		return filepath.Base(path)
	}
	return unknownName
}

func (c *converter) sample(s *profilespb.Sample, pid int64, proc string, period int64, typ ValueType) error {
	count := otlpcheck.SampleCount(s)
	if count == 0 {
		return nil
	}
	threadName, err := otlpcheck.SampleAttr(c.req, s, semconv.ThreadName)
	if err != nil {
		return fmt.Errorf("localfile: %w", err)
	}
	tidText, err := otlpcheck.SampleAttr(c.req, s, semconv.ThreadID)
	if err != nil {
		return fmt.Errorf("localfile: %w", err)
	}

	// Stack locations are leaf first, in OTLP as in pprof; folded stacks
	// are root first.
	locs := c.d.StackTable[s.GetStackIndex()].GetLocationIndices()
	c.fold(foldKey{pid: pid, thread: threadName, stack: s.GetStackIndex(), typ: typ}, proc, locs, count)
	if c.foldOnly {
		return nil
	}

	value := []int64{count, count * period}
	if c.offCPU {
		// Off-CPU samples have one value per wait, in nanoseconds:
		// count is their sum.
		value = []int64{count}
	}
	ps := &profile.Sample{
		Value:    value,
		Label:    map[string][]string{LabelProcessName: {proc}},
		NumLabel: map[string][]int64{LabelPID: {pid}},
	}
	if threadName != "" {
		ps.Label[LabelThreadName] = []string{threadName}
	}
	if tid, err := strconv.ParseInt(tidText, 10, 64); err == nil {
		ps.NumLabel[LabelTID] = []int64{tid}
	}
	for _, li := range locs {
		ps.Location = append(ps.Location, c.location(li))
	}
	c.p.Sample = append(c.p.Sample, ps)
	return nil
}

func (c *converter) mapping(mi int32) *profile.Mapping {
	if m, ok := c.mappings[mi]; ok {
		return m
	}
	om := c.d.MappingTable[mi]
	m := &profile.Mapping{
		ID:     uint64(len(c.p.Mapping) + 1),
		Start:  om.GetMemoryStart(),
		Limit:  om.GetMemoryLimit(),
		Offset: om.GetFileOffset(),
		File:   c.str(om.GetFilenameStrindex()),
		// Every location is named in the file, by a function or by its
		// mapping and address: pprof must not try to symbolize.
		HasFunctions: true,
	}
	// The mapping's attributes were validated, so Attr cannot fail.
	m.BuildID, _ = otlpcheck.Attr(c.req, om.GetAttributeIndices(), semconv.BuildIDGNU)
	if m.BuildID == "" {
		m.BuildID, _ = otlpcheck.Attr(c.req, om.GetAttributeIndices(), semconv.BuildIDGo)
	}
	if m.BuildID == "" {
		m.BuildID, _ = otlpcheck.Attr(c.req, om.GetAttributeIndices(), semconv.BuildIDHTL)
	}
	c.p.Mapping = append(c.p.Mapping, m)
	c.mappings[mi] = m
	return m
}

func (c *converter) function(fi int32) *profile.Function {
	if f, ok := c.functions[fi]; ok {
		return f
	}
	of := c.d.FunctionTable[fi]
	f := &profile.Function{
		ID:         uint64(len(c.p.Function) + 1),
		Name:       cmp.Or(c.str(of.GetNameStrindex()), c.str(of.GetSystemNameStrindex()), unknownName),
		SystemName: cmp.Or(c.str(of.GetSystemNameStrindex()), c.str(of.GetNameStrindex())),
		Filename:   c.str(of.GetFilenameStrindex()),
		StartLine:  of.GetStartLine(),
	}
	c.p.Function = append(c.p.Function, f)
	c.functions[fi] = f
	return f
}

// syntheticFunction returns a function named name, standing for frames
// without lines.
func (c *converter) syntheticFunction(name string) *profile.Function {
	if f, ok := c.synthetic[name]; ok {
		return f
	}
	f := &profile.Function{ID: uint64(len(c.p.Function) + 1), Name: name, SystemName: name}
	c.p.Function = append(c.p.Function, f)
	c.synthetic[name] = f
	return f
}

func (c *converter) location(li int32) *profile.Location {
	if l, ok := c.locations[li]; ok {
		return l
	}
	ol := c.d.LocationTable[li]
	l := &profile.Location{ID: uint64(len(c.p.Location) + 1), Address: ol.GetAddress()}
	if mi := ol.GetMappingIndex(); mi != 0 {
		l.Mapping = c.mapping(mi)
		// The location's attributes were validated, so Attr cannot fail.
		if typ, _ := otlpcheck.Attr(c.req, ol.GetAttributeIndices(), semconv.FrameType); typ == "kernel" {
			c.kernel[l.Mapping] = true
		}
	}
	for _, ln := range ol.GetLines() {
		l.Line = append(l.Line, profile.Line{
			Function: c.function(ln.GetFunctionIndex()),
			Line:     ln.GetLine(),
			Column:   ln.GetColumn(),
		})
	}
	if len(l.Line) == 0 {
		l.Line = []profile.Line{{Function: c.syntheticFunction(c.unnamed(ol))}}
	}
	c.p.Location = append(c.p.Location, l)
	c.locations[li] = l
	return l
}

// unnamed names a frame without lines: "libfoo.so+0x1234" from its
// mapping's file name and its address, or "[unknown]" without a mapping.
func (c *converter) unnamed(ol *profilespb.Location) string {
	mi := ol.GetMappingIndex()
	if mi == 0 {
		return unknownName
	}
	file := c.str(c.d.MappingTable[mi].GetFilenameStrindex())
	if file == "" {
		return unknownName
	}
	return fmt.Sprintf("%s+0x%x", filepath.Base(file), ol.GetAddress())
}

// sanitize keeps a name from breaking the folded format: ';' separates
// frames and a line holds one stack.
func sanitize(s string) string {
	if !strings.ContainsAny(s, ";\n\r") {
		return s
	}
	return strings.NewReplacer(";", ":", "\n", " ", "\r", " ").Replace(s)
}

// folded returns the folded stacks file: one "process;root;...;leaf count"
// line per distinct stack of names, sorted. It is made of the same folded
// stacks as [Fold] returns, merged across threads and processes of one
// name.
func (c *converter) folded() []byte {
	stacks := make(map[string]int64, len(c.folds))
	var names []string
	for _, st := range c.folds {
		names = append(names[:0], sanitize(st.Process))
		for _, f := range st.Frames {
			names = append(names, sanitize(f.Name))
		}
		stacks[strings.Join(names, ";")] += st.Value
	}
	keys := make([]string, 0, len(stacks))
	for k := range stacks {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d\n", k, stacks[k])
	}
	return b.Bytes()
}
