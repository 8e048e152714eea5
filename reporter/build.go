package reporter

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/reporter/semconv"
	"github.com/stackline-dev/stackline/trace"
)

// Names the exports use beyond the attribute keys (package semconv).
const (
	scopeName         = "github.com/stackline-dev/stackline"
	unknownFrameName  = "[unknown]"
	unknownServiceFmt = "unknown_service:"
)

// dictionary builds a ProfilesDictionary whose every table starts with the
// zero value, deduplicating entries as they are added.
type dictionary struct {
	d *profilespb.ProfilesDictionary
	// systemNames sends functions' system names (Config.SystemNames).
	systemNames bool
	// lineAddresses keeps the addresses of locations named down to a
	// source line (Config.LineAddresses). Without it such locations
	// have none, and lineLocations holds the one location of each
	// mapping, frame type and lines, keyed by lineKey.
	lineAddresses bool
	lineLocations map[string]int32
	keyBuf        []byte

	strings   map[string]int32
	attrs     map[attrKey]int32
	functions map[functionKey]int32
	mappings  map[trace.FileID]int32
	locations map[trace.FrameID]int32
}

type attrKey struct {
	key   string
	str   string
	num   int64
	isNum bool
}

type functionKey struct {
	name, systemName, file string
}

func newDictionary(systemNames, lineAddresses bool) *dictionary {
	return &dictionary{
		systemNames:   systemNames,
		lineAddresses: lineAddresses,
		lineLocations: make(map[string]int32),
		d: &profilespb.ProfilesDictionary{
			MappingTable:   []*profilespb.Mapping{{}},
			LocationTable:  []*profilespb.Location{{}},
			FunctionTable:  []*profilespb.Function{{}},
			LinkTable:      []*profilespb.Link{{}},
			StringTable:    []string{""},
			AttributeTable: []*profilespb.KeyValueAndUnit{{}},
			StackTable:     []*profilespb.Stack{{}},
		},
		strings:   map[string]int32{"": 0},
		attrs:     make(map[attrKey]int32),
		functions: make(map[functionKey]int32),
		mappings:  make(map[trace.FileID]int32),
		locations: make(map[trace.FrameID]int32),
	}
}

func (d *dictionary) str(s string) int32 {
	if i, ok := d.strings[s]; ok {
		return i
	}
	i := int32(len(d.d.StringTable))
	d.d.StringTable = append(d.d.StringTable, validUTF8(s))
	d.strings[s] = i
	return i
}

func (d *dictionary) attr(k attrKey) int32 {
	if i, ok := d.attrs[k]; ok {
		return i
	}
	kv := &profilespb.KeyValueAndUnit{KeyStrindex: d.str(k.key)}
	if k.isNum {
		kv.Value = &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: k.num}}
	} else {
		kv.Value = &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: validUTF8(k.str)}}
	}
	i := int32(len(d.d.AttributeTable))
	d.d.AttributeTable = append(d.d.AttributeTable, kv)
	d.attrs[k] = i
	return i
}

func (d *dictionary) strAttr(key, value string) int32 {
	return d.attr(attrKey{key: key, str: value})
}

func (d *dictionary) numAttr(key string, value int64) int32 {
	return d.attr(attrKey{key: key, num: value, isNum: true})
}

func (d *dictionary) function(l *trace.Line) int32 {
	// The system name is sent only when asked for, and then only when
	// it differs from the name (a mangled C++ or Rust name): the proto
	// leaves it empty when it is not available, and a copy of the name's
	// index in every function costs more on the wire than the rest of
	// the function. Mangled names are long and unlike each other: on the
	// whole-agent benchmark's mix they were 6-8 % of the gzipped export.
	// A frame named by its system name only keeps it as its name.
	name, system := cmp.Or(l.Function, l.SystemName), ""
	if d.systemNames && l.SystemName != name {
		system = l.SystemName
	}
	k := functionKey{name: name, systemName: system, file: l.File}
	if i, ok := d.functions[k]; ok {
		return i
	}
	fn := &profilespb.Function{
		NameStrindex:     d.str(name),
		FilenameStrindex: d.str(l.File),
	}
	if system != "" {
		fn.SystemNameStrindex = d.str(system)
	}
	i := int32(len(d.d.FunctionTable))
	d.d.FunctionTable = append(d.d.FunctionTable, fn)
	d.functions[k] = i
	return i
}

// mapping returns the mapping of a file, described by info when the
// reporter holds it. Only files hashed from their contents carry the
// htlhash build ID (it is the file ID); the kernel, modules, source files
// of interpreted code and memory without a file ([vdso], [anon]) have IDs
// derived from names, which a backend must not take for a file's hash.
func (d *dictionary) mapping(id trace.FileID, info trace.ExecutableInfo, t trace.FrameType) int32 {
	if i, ok := d.mappings[id]; ok {
		return i
	}
	m := &profilespb.Mapping{FilenameStrindex: d.str(cmp.Or(info.FileName, unknownFrameName))}
	if info.GNUBuildID != "" {
		m.AttributeIndices = append(m.AttributeIndices, d.strAttr(semconv.BuildIDGNU, info.GNUBuildID))
	}
	if info.GoBuildID != "" {
		m.AttributeIndices = append(m.AttributeIndices, d.strAttr(semconv.BuildIDGo, info.GoBuildID))
	}
	if t != trace.FrameKernel && !t.Interpreted() && !info.Pseudo {
		m.AttributeIndices = append(m.AttributeIndices, d.strAttr(semconv.BuildIDHTL, id.String()))
	}
	i := int32(len(d.d.MappingTable))
	d.d.MappingTable = append(d.d.MappingTable, m)
	d.mappings[id] = i
	return i
}

// sortTable returns a dictionary table sorted stably by compare, its
// entry 0 (the zero value every table starts with) kept first, and the new
// index of each old one.
func sortTable[T any](table []T, compare func(a, b T) int) (sorted []T, newIndex []int32) {
	order := make([]int32, len(table)-1)
	for i := range order {
		order[i] = int32(i + 1)
	}
	slices.SortStableFunc(order, func(a, b int32) int { return compare(table[a], table[b]) })
	newIndex = make([]int32, len(table))
	sorted = make([]T, 1, len(table))
	sorted[0] = table[0]
	for _, old := range order {
		newIndex[old] = int32(len(sorted))
		sorted = append(sorted, table[old])
	}
	return sorted, newIndex
}

// sortLocations orders the location table by mapping and address and
// renumbers the stacks' references to it. Neighbouring locations then
// share their mapping index and their address's high bytes, which gzip
// finds as repeats: about 1 % off the compressed request. Locations of
// one mapping without an address (interpreted frames, and frames named
// down to a line without Config.LineAddresses) are ordered by the file
// and line of their outermost line, the function the code is in, which
// puts those of one function side by side. It is the last step of a
// request's locations: d.locations keeps the indices before the sort.
func (d *dictionary) sortLocations() {
	outer := func(l *profilespb.Location) (file string, line int64) {
		if len(l.Lines) == 0 {
			return "", 0
		}
		last := l.Lines[len(l.Lines)-1]
		return d.d.StringTable[d.d.FunctionTable[last.FunctionIndex].FilenameStrindex], last.Line
	}
	sorted, newIndex := sortTable(d.d.LocationTable, func(a, b *profilespb.Location) int {
		if c := cmp.Or(cmp.Compare(a.MappingIndex, b.MappingIndex), cmp.Compare(a.Address, b.Address)); c != 0 || a.Address != 0 {
			return c
		}
		fa, la := outer(a)
		fb, lb := outer(b)
		return cmp.Or(cmp.Compare(fa, fb), cmp.Compare(la, lb), cmp.Compare(len(a.Lines), len(b.Lines)))
	})
	for _, st := range d.d.StackTable {
		for j, li := range st.LocationIndices {
			st.LocationIndices[j] = newIndex[li]
		}
	}
	d.d.LocationTable = sorted
}

// sortStacks orders the stack table by the stacks' locations read from
// the root (after sortLocations), and renumbers the samples' references
// to it: stacks that share their callers then sit side by side, which
// gzip finds as repeats nearer by. It is a last step.
func (d *dictionary) sortStacks(req *collectorpb.ExportProfilesServiceRequest) {
	sorted, newIndex := sortTable(d.d.StackTable, func(a, b *profilespb.Stack) int {
		la, lb := a.LocationIndices, b.LocationIndices
		for i := 1; i <= len(la) && i <= len(lb); i++ {
			if c := cmp.Compare(la[len(la)-i], lb[len(lb)-i]); c != 0 {
				return c
			}
		}
		return cmp.Compare(len(la), len(lb))
	})
	for _, rp := range req.ResourceProfiles {
		for _, sp := range rp.ScopeProfiles {
			for _, p := range sp.Profiles {
				for _, s := range p.Samples {
					s.StackIndex = newIndex[s.StackIndex]
				}
			}
		}
	}
	d.d.StackTable = sorted
}

// renumberFunctions orders the function table by first use in the
// location table, once that is sorted (sortLocations), and renumbers the
// lines' references to it: the functions of neighbouring locations,
// mostly of one file, then sit side by side, and so do their strings
// once renumberStrings orders those by first use. It is a last step:
// d.functions keeps the indices before it.
func (d *dictionary) renumberFunctions() {
	fns := d.d.FunctionTable
	newIndex := make([]int32, len(fns))
	sorted := make([]*profilespb.Function, 1, len(fns))
	sorted[0] = fns[0]
	for _, loc := range d.d.LocationTable[1:] {
		for _, l := range loc.Lines {
			if newIndex[l.FunctionIndex] == 0 {
				newIndex[l.FunctionIndex] = int32(len(sorted))
				sorted = append(sorted, fns[l.FunctionIndex])
			}
			l.FunctionIndex = newIndex[l.FunctionIndex]
		}
	}
	// Every function is some line's; none is left out.
	d.d.FunctionTable = sorted
}

// renumberStrings orders the string table by first use, walking the
// profiles' value types, the mapping and attribute tables and then the
// function table, and renumbers every reference to it. The strings of
// every profile and attribute key get small indices; a function's name and
// file then follow those of the function before it, of the same file
// and often of the same type or package, which gzip finds as repeats:
// with renumberFunctions, about 2 % off the compressed request. It is
// the last step: d.strings keeps the indices before it.
func (d *dictionary) renumberStrings(req *collectorpb.ExportProfilesServiceRequest) {
	strs := d.d.StringTable
	newIndex := make([]int32, len(strs))
	sorted := make([]string, 1, len(strs))
	use := func(i *int32) {
		if *i == 0 {
			return
		}
		if newIndex[*i] == 0 {
			newIndex[*i] = int32(len(sorted))
			sorted = append(sorted, strs[*i])
		}
		*i = newIndex[*i]
	}
	// Profiles share their value types: each is renumbered once.
	done := make(map[*profilespb.ValueType]bool)
	for _, rp := range req.ResourceProfiles {
		for _, sp := range rp.ScopeProfiles {
			for _, p := range sp.Profiles {
				for _, vt := range [...]*profilespb.ValueType{p.SampleType, p.PeriodType} {
					if vt != nil && !done[vt] {
						done[vt] = true
						use(&vt.TypeStrindex)
						use(&vt.UnitStrindex)
					}
				}
			}
		}
	}
	for _, m := range d.d.MappingTable[1:] {
		use(&m.FilenameStrindex)
	}
	for _, kv := range d.d.AttributeTable[1:] {
		use(&kv.KeyStrindex)
		use(&kv.UnitStrindex)
	}
	for _, fn := range d.d.FunctionTable[1:] {
		use(&fn.NameStrindex)
		use(&fn.FilenameStrindex)
		use(&fn.SystemNameStrindex)
	}
	// A string nothing references (there is none today) is dropped.
	d.d.StringTable = sorted
}

// setMappingRanges gives every mapping the address range of its
// locations, page-aligned, with a file offset equal to its start: an
// address is then its own file offset (native frames) or kernel address
// (kernel frames), which is what locations carry. Interpreted frames, and
// frames named down to a line without Config.LineAddresses, have no
// address (0): a mapping with only those keeps an empty range.
func (d *dictionary) setMappingRanges() {
	const page = 4096
	for _, loc := range d.d.LocationTable[1:] {
		if loc.MappingIndex == 0 || loc.Address == 0 {
			continue
		}
		m := d.d.MappingTable[loc.MappingIndex]
		lo := loc.Address &^ (page - 1)
		hi := (loc.Address | (page - 1)) + 1
		if hi == 0 { // the last page of the address space
			hi = ^uint64(0)
		}
		if m.MemoryLimit == 0 {
			m.MemoryStart, m.MemoryLimit = lo, hi
		} else {
			m.MemoryStart, m.MemoryLimit = min(m.MemoryStart, lo), max(m.MemoryLimit, hi)
		}
		m.FileOffset = m.MemoryStart
	}
}

// build turns a finished interval into one self-contained request. It
// returns the request and the number of frames exported without names.
func (r *Reporter) build(iv *interval, end time.Time) (*collectorpb.ExportProfilesServiceRequest, int) {
	d := newDictionary(r.cfg.SystemNames, r.cfg.LineAddresses)
	unnamed := 0

	location := func(f trace.FrameID) int32 {
		if i, ok := d.locations[f]; ok {
			return i
		}
		loc := &profilespb.Location{
			Address:          f.Addr,
			AttributeIndices: []int32{d.strAttr(semconv.FrameType, f.Type.String())},
		}
		if f.Type.Interpreted() {
			// The ID's address of an interpreted frame is a key derived
			// from its function and line, not an address in memory.
			loc.Address = 0
		}
		if f.Type != trace.FrameError && !f.File.IsZero() {
			loc.MappingIndex = d.mapping(f.File, iv.execs[f.File], f.Type)
		}
		info, ok := iv.frames.get(f)
		if !ok && f.Type == trace.FrameError {
			info, ok = trace.FrameInfo{Lines: []trace.Line{{Function: trace.ErrorName(f.Addr)}}}, true
		}
		if !ok || len(info.Lines) == 0 {
			unnamed++
		}
		for j := range info.Lines {
			loc.Lines = append(loc.Lines, &profilespb.Line{
				FunctionIndex: d.function(&info.Lines[j]),
				Line:          info.Lines[j].Line,
			})
		}
		lineKey := ""
		if !d.lineAddresses && loc.Address != 0 && namedToLine(loc.Lines) {
			// Named down to a source line: the address would only
			// tell instructions of one line apart.
			lineKey = d.lineKey(loc)
			if i, ok := d.lineLocations[lineKey]; ok {
				d.locations[f] = i
				return i
			}
			loc.Address = 0
		}
		i := int32(len(d.d.LocationTable))
		d.d.LocationTable = append(d.d.LocationTable, loc)
		d.locations[f] = i
		if lineKey != "" {
			d.lineLocations[lineKey] = i
		}
		return i
	}

	// Stacks: the interval's stack i is the dictionary's stackIdx[i]
	// (entry 0 is the empty stack). Stacks whose frames differ only by
	// addresses within one source line have the same locations (see
	// Config.LineAddresses): they are one stack.
	stackIdx := make([]int32, len(iv.stacks))
	stacks := make(map[string]int32, len(iv.stacks))
	var locs []int32
	for i, s := range iv.stacks {
		locs = locs[:0]
		for _, f := range s.frames {
			locs = append(locs, location(f))
		}
		k := d.indicesKey(locs)
		if j, ok := stacks[k]; ok {
			stackIdx[i] = j
			continue
		}
		stackIdx[i] = int32(len(d.d.StackTable))
		stacks[k] = stackIdx[i]
		d.d.StackTable = append(d.d.StackTable, &profilespb.Stack{LocationIndices: slices.Clone(locs)})
	}

	// Group samples by process, CPU samples first, in a stable order;
	// samples of one stack in the dictionary are then side by side.
	keys := make([]sampleKey, 0, len(iv.samples))
	for k := range iv.samples {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b sampleKey) int {
		return cmp.Or(cmp.Compare(a.pid, b.pid), compareBool(a.offCPU, b.offCPU), cmp.Compare(a.tid, b.tid),
			cmp.Compare(stackIdx[a.stack], stackIdx[b.stack]), cmp.Compare(a.comm, b.comm))
	})

	req := &collectorpb.ExportProfilesServiceRequest{Dictionary: d.d}
	sampleType := &profilespb.ValueType{TypeStrindex: d.str(semconv.SampleTypeSamples), UnitStrindex: d.str(semconv.UnitCount)}
	periodType := &profilespb.ValueType{TypeStrindex: d.str(semconv.PeriodTypeCPU), UnitStrindex: d.str(semconv.UnitNanoseconds)}
	period := int64(time.Second) / int64(r.cfg.SamplesPerSecond)
	fraction := cmp.Or(r.cfg.OffCPUFraction, 1)

	ids := newProfileIDs()
	var scope *profilespb.ScopeProfiles
	var prof *profilespb.Profile
	curPID, curOffCPU := ^uint32(0), false
	for n := 0; n < len(keys); {
		k := keys[n]
		s := *iv.samples[k]
		for n++; n < len(keys) && sameSample(keys[n], k, stackIdx); n++ {
			// One stack in the dictionary: one sample.
			o := iv.samples[keys[n]]
			s.timestamps = append(slices.Clip(s.timestamps), o.timestamps...)
			s.waits = append(slices.Clip(s.waits), o.waits...)
		}
		if r.cfg.CoarseTimestamps {
			for i := range s.timestamps {
				s.timestamps[i] &^= coarseGrain - 1
			}
		}
		if scope == nil || k.pid != curPID {
			curPID = k.pid
			scope = &profilespb.ScopeProfiles{Scope: &commonpb.InstrumentationScope{Name: scopeName, Version: r.cfg.Version}}
			req.ResourceProfiles = append(req.ResourceProfiles, &profilespb.ResourceProfiles{
				Resource:      r.resource(k.pid, iv.processes[k.pid]),
				ScopeProfiles: []*profilespb.ScopeProfiles{scope},
			})
			prof = nil
		}
		if prof == nil || k.offCPU != curOffCPU {
			curOffCPU = k.offCPU
			prof = &profilespb.Profile{
				SampleType:   sampleType,
				PeriodType:   periodType,
				Period:       period,
				TimeUnixNano: uint64(iv.start.UnixNano()),
				// Wall-clock difference, so that one interval ends exactly
				// where the next starts.
				DurationNano: uint64(end.UnixNano() - iv.start.UnixNano()),
				ProfileId:    ids.next(),
			}
			if k.offCPU {
				// Off-CPU waits: values in nanoseconds waited, no
				// sampling period (waits are sampled by fraction).
				prof.SampleType = &profilespb.ValueType{TypeStrindex: d.str(semconv.SampleTypeOffCPU), UnitStrindex: d.str(semconv.UnitNanoseconds)}
				prof.PeriodType, prof.Period = nil, 0
				prof.AttributeIndices = []int32{d.strAttr(semconv.OffCPUFraction, strconv.FormatFloat(fraction, 'g', -1, 64))}
			}
			scope.Profiles = append(scope.Profiles, prof)
		}
		ps := &profilespb.Sample{
			StackIndex: stackIdx[k.stack],
			AttributeIndices: []int32{
				d.strAttr(semconv.ThreadName, k.comm),
				d.numAttr(semconv.ThreadID, int64(k.tid)),
			},
		}
		if k.offCPU {
			// One value per timestamp: the wait that ended then, scaled
			// up by the sampling fraction.
			sortTogether(s.timestamps, s.waits)
			ps.Values = make([]int64, len(s.waits))
			for i, w := range s.waits {
				ps.Values[i] = int64(math.Round(float64(w) / fraction))
			}
		} else {
			// Timestamps only: each stands for one sample (the OTLP
			// "timestamps only" shape), so values stays empty.
			slices.Sort(s.timestamps)
		}
		ps.TimestampsUnixNano = s.timestamps
		prof.Samples = append(prof.Samples, ps)
		cover(prof, s.timestamps[0], s.timestamps[len(s.timestamps)-1])
	}
	d.sortLocations()
	d.sortStacks(req)
	d.setMappingRanges()
	d.renumberFunctions()
	d.renumberStrings(req)
	return req, unnamed
}

// coarseGrain is the resolution of timestamps with
// Config.CoarseTimestamps, in nanoseconds: a power of two, so that the
// low bits of every timestamp are zero.
const coarseGrain = 1 << 10

// namedToLine reports whether every line of a location has a line
// number: a frame named down to its source line, and each of the calls
// inlined into it.
func namedToLine(lines []*profilespb.Line) bool {
	for _, l := range lines {
		if l.Line <= 0 {
			return false
		}
	}
	return len(lines) > 0
}

// lineKey returns what tells a location without an address from others:
// its mapping, its frame type and its lines. The key is a string of
// varints, built in d's buffer.
func (d *dictionary) lineKey(loc *profilespb.Location) string {
	b := binary.AppendUvarint(d.keyBuf[:0], uint64(loc.MappingIndex))
	b = binary.AppendUvarint(b, uint64(len(loc.AttributeIndices)))
	for _, a := range loc.AttributeIndices {
		b = binary.AppendUvarint(b, uint64(a))
	}
	for _, l := range loc.Lines {
		b = binary.AppendUvarint(b, uint64(l.FunctionIndex))
		b = binary.AppendUvarint(b, uint64(l.Line))
	}
	d.keyBuf = b
	return string(b)
}

// indicesKey returns a string of varints of the indices, built in d's
// buffer, for a map key.
func (d *dictionary) indicesKey(indices []int32) string {
	b := d.keyBuf[:0]
	for _, i := range indices {
		b = binary.AppendUvarint(b, uint64(i))
	}
	d.keyBuf = b
	return string(b)
}

// sameSample reports whether samples a and b are one in the request: the
// same process, thread, thread name and kind, and stacks that are one in
// the dictionary.
func sameSample(a, b sampleKey, stackIdx []int32) bool {
	return a.pid == b.pid && a.tid == b.tid && a.comm == b.comm && a.offCPU == b.offCPU &&
		stackIdx[a.stack] == stackIdx[b.stack]
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// sortTogether sorts ts and, in the same order, vals (of ts's length).
func sortTogether(ts, vals []uint64) {
	idx := make([]int, len(ts))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(ts[a], ts[b]) })
	t2, v2 := slices.Clone(ts), slices.Clone(vals)
	for i, j := range idx {
		ts[i], vals[i] = t2[j], v2[j]
	}
}

// cover widens p's time range, [time, time+duration), to hold the sample
// timestamps first..last. Samples are stamped when taken but read from the
// ring buffer up to a few hundred milliseconds later, so a sample taken
// just before an interval ended can be folded into the next one.
func cover(p *profilespb.Profile, first, last uint64) {
	end := p.TimeUnixNano + p.DurationNano
	p.TimeUnixNano = min(p.TimeUnixNano, first)
	end = max(end, last+1)
	p.DurationNano = end - p.TimeUnixNano
}

// resource returns the resource of process pid: its identity, the host's,
// and what the tracer read of the process (container, pod, runtime, its
// own service name).
func (r *Reporter) resource(pid uint32, p *processInfo) *resourcepb.Resource {
	var path, name string
	var meta trace.ProcessMeta
	if p != nil {
		path, name = p.executablePath, p.name
		if p.meta != nil {
			meta = *p.meta
		}
	}
	exeName := name
	if path != "" {
		exeName = filepath.Base(path)
	}
	// The process's own service name, then the agent's, then the
	// SDKs' default.
	service := cmp.Or(meta.ServiceName, r.cfg.ServiceName, unknownServiceFmt+exeName)
	// The process ID comes last: the resources of an export then differ
	// in one run of bytes where processes of one executable meet
	// (hundreds of short-lived ones in an export on a busy host), which
	// gzip sends as one literal between two repeats instead of two.
	attrs := []*commonpb.KeyValue{strKV(semconv.ExeName, exeName)}
	if path != "" {
		attrs = append(attrs, strKV(semconv.ExePath, path))
	}
	attrs = append(attrs, strKV(semconv.ServiceName, service), strKV(semconv.HostName, r.cfg.HostName),
		strKV(semconv.HostArch, semconv.HostArchOf(runtime.GOARCH)), strKV(semconv.OSType, semconv.OSLinux))
	for _, kv := range [...]struct{ key, value string }{
		{semconv.RuntimeName, meta.RuntimeName},
		{semconv.ContainerID, meta.ContainerID},
		{semconv.PodUID, meta.PodUID},
	} {
		if kv.value != "" {
			attrs = append(attrs, strKV(kv.key, kv.value))
		}
	}
	pidKV := &commonpb.KeyValue{Key: semconv.PID, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(pid)}}}
	own := len(attrs)
	// The configured attributes go before the process ID, and do not
	// override it.
	attrs = appendConfigured(append(attrs, pidKV), r.cfg.ResourceAttributes)
	attrs = append(slices.Delete(attrs, own, own+1), pidKV)
	return &resourcepb.Resource{Attributes: attrs}
}

func strKV(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: validUTF8(k), Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: validUTF8(v)}}}
}

// validUTF8 returns s with invalid UTF-8 replaced: protobuf strings must
// be UTF-8, and one file name, thread name or symbol that is not (a Linux
// path is any bytes) would make the whole export fail to marshal.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// profileIDs hands out the profile IDs of one request: a random 12-byte
// prefix drawn once per request and a 4-byte ordinal from 1. They are as
// unique as random IDs (96 random bits per request), but a request's IDs
// share their prefix, which gzip sends once instead of 16 random bytes for
// every profile (a profile per process: tens in each request).
type profileIDs struct {
	prefix [12]byte
	n      uint32
}

func newProfileIDs() *profileIDs {
	p := &profileIDs{}
	rand.Read(p.prefix[:])
	return p
}

func (p *profileIDs) next() []byte {
	p.n++
	return binary.BigEndian.AppendUint32(append(make([]byte, 0, 16), p.prefix[:]...), p.n)
}

func protoSize(req *collectorpb.ExportProfilesServiceRequest) int {
	return proto.Size(req)
}
