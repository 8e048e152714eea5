// Package otlpcheck checks that an OTLP profiles export request is
// self-contained, and resolves its samples for tests.
//
// Every export stackline sends must carry everything it references: a
// backend that remembers nothing must be able to render any single request.
// [Validate] checks the structural side of that promise: the dictionary is
// present, entry 0 of each dictionary table is the zero value, and every
// index anywhere in the request points into its table, every sample
// timestamp lies in its profile's time range and every location's address
// in its mapping's range. [Frames] resolves a sample to its frames, leaf
// first, so that tests can assert whole call chains.
package otlpcheck

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/reporter/semconv"
)

// MaxProblems is the number of problems an [Error] lists in full; further
// problems are only counted.
const MaxProblems = 50

// Error is the error [Validate] returns. It lists the problems found, each
// prefixed with the path of the offending field.
type Error struct {
	// Problems holds up to MaxProblems descriptions, in the order found.
	Problems []string
	// Omitted is the number of further problems that were found but not
	// listed.
	Omitted int
}

// Error joins the problems into one message.
func (e *Error) Error() string {
	var b strings.Builder
	n := len(e.Problems) + e.Omitted
	fmt.Fprintf(&b, "otlpcheck: %d problem", n)
	if n != 1 {
		b.WriteString("s")
	}
	b.WriteString(" in request")
	for _, p := range e.Problems {
		b.WriteString("\n\t")
		b.WriteString(p)
	}
	if e.Omitted > 0 {
		fmt.Fprintf(&b, "\n\t... and %d more", e.Omitted)
	}
	return b.String()
}

// checker collects problems while walking a request.
type checker struct {
	d        *profilespb.ProfilesDictionary
	problems []string
	omitted  int
}

func (c *checker) addf(format string, args ...any) {
	if len(c.problems) >= MaxProblems {
		c.omitted++
		return
	}
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// index checks that i indexes a table of n entries. When nonZero is set, the
// zero entry is reported too: it stands for "nothing" and must not be
// referenced from a list.
func (c *checker) index(path, table string, i int32, n int, nonZero bool) bool {
	if i < 0 || int(i) >= n {
		c.addf("%s: index %d out of range of %s (%d entries)", path, i, table, n)
		return false
	}
	if nonZero && i == 0 {
		c.addf("%s: refers to the zero entry of %s", path, table)
		return false
	}
	return true
}

func (c *checker) str(path string, i int32) {
	c.index(path, "string_table", i, len(c.d.GetStringTable()), false)
}

// attrs checks a list of attribute indices: each in range, none the zero
// entry, and no key repeated.
func (c *checker) attrs(path string, idx []int32) {
	var seen map[int32]bool
	for j, i := range idx {
		p := fmt.Sprintf("%s.attribute_indices[%d]", path, j)
		if !c.index(p, "attribute_table", i, len(c.d.GetAttributeTable()), true) {
			continue
		}
		kv := c.d.AttributeTable[i]
		if kv == nil {
			continue // Reported with the table.
		}
		k := kv.GetKeyStrindex()
		if seen[k] {
			c.addf("%s: key %q repeated in attribute_indices", p, c.d.StringTable[k])
			continue
		}
		if k >= 0 && int(k) < len(c.d.StringTable) {
			if seen == nil {
				seen = make(map[int32]bool, len(idx))
			}
			seen[k] = true
		}
	}
}

func (c *checker) valueType(path string, vt *profilespb.ValueType) {
	if vt == nil {
		return
	}
	c.str(path+".type_strindex", vt.GetTypeStrindex())
	c.str(path+".unit_strindex", vt.GetUnitStrindex())
}

// Validate checks that req is self-contained and returns an *[Error] listing
// every problem found, or nil.
//
// It checks that the dictionary is present; that entry 0 of each of its
// tables is present and the zero value; that every index in the request
// (stack, location, mapping, function, link, string and attribute indices,
// in samples, profiles, stacks, locations, lines, functions, mappings,
// attributes and value types) is in range; that lists of indices do not
// refer to the zero entry and attribute lists do not repeat a key; that
// each profile has a sample type, different from that of the other
// profiles of its scope; and that each sample has either exactly
// one value, timestamps only, or one value per timestamp; that every sample
// timestamp lies in its profile's [time, time+duration); and that every
// mapping's range is ordered and holds the nonzero addresses of the
// locations on it.
func Validate(req *collectorpb.ExportProfilesServiceRequest) error {
	if req == nil {
		return &Error{Problems: []string{"request is nil"}}
	}
	c := &checker{d: req.GetDictionary()}
	if c.d == nil {
		c.addf("dictionary: missing")
	} else {
		c.dictionary()
	}
	for i, rp := range req.GetResourceProfiles() {
		rpath := fmt.Sprintf("resource_profiles[%d]", i)
		if rp == nil {
			c.addf("%s: nil", rpath)
			continue
		}
		for j, sp := range rp.GetScopeProfiles() {
			spath := fmt.Sprintf("%s.scope_profiles[%d]", rpath, j)
			if sp == nil {
				c.addf("%s: nil", spath)
				continue
			}
			// A resource may have several profiles (CPU samples,
			// off-CPU waits), each of its own sample type: two of the
			// same type would leave a reader unable to tell them apart.
			types := make(map[[2]int32]int)
			for k, p := range sp.GetProfiles() {
				ppath := fmt.Sprintf("%s.profiles[%d]", spath, k)
				c.profile(ppath, p)
				if st := p.GetSampleType(); st != nil {
					key := [2]int32{st.GetTypeStrindex(), st.GetUnitStrindex()}
					if first, ok := types[key]; ok {
						c.addf("%s.sample_type: the same as profiles[%d]'s", ppath, first)
					} else {
						types[key] = k
					}
				}
			}
		}
	}
	if len(c.problems) == 0 {
		return nil
	}
	return &Error{Problems: c.problems, Omitted: c.omitted}
}

func (c *checker) dictionary() {
	d := c.d
	const path = "dictionary"

	if len(d.StringTable) == 0 {
		c.addf("%s.string_table: empty, entry 0 must be \"\"", path)
	} else if d.StringTable[0] != "" {
		c.addf("%s.string_table[0]: is %q, must be \"\"", path, d.StringTable[0])
	}
	zeroEntry(c, path+".mapping_table", d.MappingTable, isZero)
	zeroEntry(c, path+".location_table", d.LocationTable, isZero)
	zeroEntry(c, path+".function_table", d.FunctionTable, isZero)
	zeroEntry(c, path+".link_table", d.LinkTable, isZeroLink)
	zeroEntry(c, path+".attribute_table", d.AttributeTable, isZero)
	zeroEntry(c, path+".stack_table", d.StackTable, isZero)

	for i, m := range d.MappingTable[min(1, len(d.MappingTable)):] {
		p := fmt.Sprintf("%s.mapping_table[%d]", path, i+1)
		if m == nil {
			c.addf("%s: nil", p)
			continue
		}
		c.str(p+".filename_strindex", m.GetFilenameStrindex())
		c.attrs(p, m.GetAttributeIndices())
		if m.GetMemoryStart() > m.GetMemoryLimit() {
			c.addf("%s: memory_start %#x above memory_limit %#x", p, m.GetMemoryStart(), m.GetMemoryLimit())
		}
	}
	for i, l := range d.LocationTable[min(1, len(d.LocationTable)):] {
		p := fmt.Sprintf("%s.location_table[%d]", path, i+1)
		if l == nil {
			c.addf("%s: nil", p)
			continue
		}
		if c.index(p+".mapping_index", "mapping_table", l.GetMappingIndex(), len(d.MappingTable), false) &&
			l.GetMappingIndex() != 0 && l.GetAddress() != 0 {
			if m := d.MappingTable[l.GetMappingIndex()]; m != nil &&
				(l.GetAddress() < m.GetMemoryStart() || l.GetAddress() >= m.GetMemoryLimit()) {
				c.addf("%s.address: %#x outside its mapping's [%#x, %#x)", p, l.GetAddress(), m.GetMemoryStart(), m.GetMemoryLimit())
			}
		}
		for j, ln := range l.GetLines() {
			lp := fmt.Sprintf("%s.lines[%d]", p, j)
			if ln == nil {
				c.addf("%s: nil", lp)
				continue
			}
			c.index(lp+".function_index", "function_table", ln.GetFunctionIndex(), len(d.FunctionTable), true)
		}
		c.attrs(p, l.GetAttributeIndices())
	}
	for i, f := range d.FunctionTable[min(1, len(d.FunctionTable)):] {
		p := fmt.Sprintf("%s.function_table[%d]", path, i+1)
		if f == nil {
			c.addf("%s: nil", p)
			continue
		}
		c.str(p+".name_strindex", f.GetNameStrindex())
		c.str(p+".system_name_strindex", f.GetSystemNameStrindex())
		c.str(p+".filename_strindex", f.GetFilenameStrindex())
	}
	for i, l := range d.LinkTable[min(1, len(d.LinkTable)):] {
		if l == nil {
			c.addf("%s.link_table[%d]: nil", path, i+1)
		}
	}
	for i, a := range d.AttributeTable[min(1, len(d.AttributeTable)):] {
		p := fmt.Sprintf("%s.attribute_table[%d]", path, i+1)
		if a == nil {
			c.addf("%s: nil", p)
			continue
		}
		c.str(p+".key_strindex", a.GetKeyStrindex())
		c.str(p+".unit_strindex", a.GetUnitStrindex())
		if a.GetKeyStrindex() == 0 {
			c.addf("%s.key_strindex: empty key", p)
		}
	}
	for i, s := range d.StackTable[min(1, len(d.StackTable)):] {
		p := fmt.Sprintf("%s.stack_table[%d]", path, i+1)
		if s == nil {
			c.addf("%s: nil", p)
			continue
		}
		for j, li := range s.GetLocationIndices() {
			c.index(fmt.Sprintf("%s.location_indices[%d]", p, j), "location_table", li, len(d.LocationTable), true)
		}
	}
}

// zeroEntry reports a table whose entry 0 is missing or not the zero value.
func zeroEntry[M proto.Message](c *checker, path string, table []M, zero func(M) bool) {
	if len(table) == 0 {
		c.addf("%s: empty, entry 0 must be the zero value", path)
		return
	}
	if !zero(table[0]) {
		c.addf("%s[0]: not the zero value", path)
	}
}

func isZero[M proto.Message](m M) bool {
	return m.ProtoReflect().IsValid() && proto.Size(m) == 0
}

// isZeroLink accepts both zero links the specification allows: an empty
// Link, and one whose IDs are all zero bytes of the proper lengths.
func isZeroLink(l *profilespb.Link) bool {
	if l == nil {
		return false
	}
	return allZero(l.TraceId) && allZero(l.SpanId) &&
		(len(l.TraceId) == 0 || len(l.TraceId) == 16) &&
		(len(l.SpanId) == 0 || len(l.SpanId) == 8) &&
		len(l.ProtoReflect().GetUnknown()) == 0
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func (c *checker) profile(path string, p *profilespb.Profile) {
	if p == nil {
		c.addf("%s: nil", path)
		return
	}
	d := c.d
	if p.GetSampleType() == nil {
		c.addf("%s.sample_type: missing", path)
	}
	c.valueType(path+".sample_type", p.GetSampleType())
	c.valueType(path+".period_type", p.GetPeriodType())
	c.attrs(path, p.GetAttributeIndices())
	for i, s := range p.GetSamples() {
		sp := fmt.Sprintf("%s.samples[%d]", path, i)
		if s == nil {
			c.addf("%s: nil", sp)
			continue
		}
		c.index(sp+".stack_index", "stack_table", s.GetStackIndex(), len(d.GetStackTable()), false)
		c.index(sp+".link_index", "link_table", s.GetLinkIndex(), len(d.GetLinkTable()), false)
		c.attrs(sp, s.GetAttributeIndices())
		start, end := p.GetTimeUnixNano(), p.GetTimeUnixNano()+p.GetDurationNano()
		for j, ts := range s.GetTimestampsUnixNano() {
			if ts < start || ts >= end {
				c.addf("%s.timestamps_unix_nano[%d]: %d outside the profile's [%d, %d)", sp, j, ts, start, end)
			}
		}
		nv, nt := len(s.GetValues()), len(s.GetTimestampsUnixNano())
		switch {
		case nv == 1 && nt == 0, nv == 0 && nt > 0, nv == nt && nv > 0:
		default:
			c.addf("%s: %d values and %d timestamps, want 1 value, timestamps only, or one value per timestamp", sp, nv, nt)
		}
	}
}

// Frame is one resolved frame of a sample.
type Frame struct {
	// Name is the name of the first function of the location's lines, or
	// "" for an unnamed frame (a location without lines).
	Name string
	// Functions holds the function names of all the location's lines,
	// innermost (inlined) first.
	Functions []string
	// Type is the location's profile.frame.type attribute ("kernel",
	// "native", "go", ...), or "" when it has none.
	Type string
	// Address is the location's address: a file offset for native frames,
	// a kernel address for kernel frames.
	Address uint64
	// MappingFile is the file name of the location's mapping, or "" when
	// the location has none.
	MappingFile string
}

// Frames resolves sample s of req to its frames, leaf first. It returns an
// error when an index on the way is out of range.
func Frames(req *collectorpb.ExportProfilesServiceRequest, s *profilespb.Sample) ([]Frame, error) {
	d := req.GetDictionary()
	if d == nil {
		return nil, errors.New("otlpcheck: request has no dictionary")
	}
	if s == nil {
		return nil, errors.New("otlpcheck: nil sample")
	}
	si := s.GetStackIndex()
	if si < 0 || int(si) >= len(d.StackTable) || d.StackTable[si] == nil {
		return nil, fmt.Errorf("otlpcheck: stack_index %d out of range of stack_table (%d entries)", si, len(d.StackTable))
	}
	stack := d.StackTable[si]
	frames := make([]Frame, 0, len(stack.GetLocationIndices()))
	for j, li := range stack.GetLocationIndices() {
		if li < 0 || int(li) >= len(d.LocationTable) || d.LocationTable[li] == nil {
			return nil, fmt.Errorf("otlpcheck: stack_table[%d].location_indices[%d]: index %d out of range of location_table (%d entries)",
				si, j, li, len(d.LocationTable))
		}
		loc := d.LocationTable[li]
		f := Frame{Address: loc.GetAddress()}
		for k, ln := range loc.GetLines() {
			fi := ln.GetFunctionIndex()
			if fi < 0 || int(fi) >= len(d.FunctionTable) || d.FunctionTable[fi] == nil {
				return nil, fmt.Errorf("otlpcheck: location_table[%d].lines[%d]: function_index %d out of range of function_table (%d entries)",
					li, k, fi, len(d.FunctionTable))
			}
			name, err := lookupString(d, d.FunctionTable[fi].GetNameStrindex())
			if err != nil {
				return nil, fmt.Errorf("otlpcheck: function_table[%d].name_strindex: %w", fi, err)
			}
			f.Functions = append(f.Functions, name)
		}
		if len(f.Functions) > 0 {
			f.Name = f.Functions[0]
		}
		if mi := loc.GetMappingIndex(); mi != 0 {
			if mi < 0 || int(mi) >= len(d.MappingTable) || d.MappingTable[mi] == nil {
				return nil, fmt.Errorf("otlpcheck: location_table[%d].mapping_index %d out of range of mapping_table (%d entries)",
					li, mi, len(d.MappingTable))
			}
			file, err := lookupString(d, d.MappingTable[mi].GetFilenameStrindex())
			if err != nil {
				return nil, fmt.Errorf("otlpcheck: mapping_table[%d].filename_strindex: %w", mi, err)
			}
			f.MappingFile = file
		}
		typ, err := attr(d, loc.GetAttributeIndices(), semconv.FrameType)
		if err != nil {
			return nil, fmt.Errorf("otlpcheck: location_table[%d]: %w", li, err)
		}
		f.Type = typ
		frames = append(frames, f)
	}
	return frames, nil
}

// Attr returns the value, formatted as by [FormatValue], of the attribute
// with the given key among the dictionary attributes idx refers to, or ""
// when there is none. It returns an error when an index is out of range.
func Attr(req *collectorpb.ExportProfilesServiceRequest, idx []int32, key string) (string, error) {
	v, err := attr(req.GetDictionary(), idx, key)
	if err != nil {
		return "", fmt.Errorf("otlpcheck: %w", err)
	}
	return v, nil
}

func attr(d *profilespb.ProfilesDictionary, idx []int32, key string) (string, error) {
	for _, i := range idx {
		if i < 0 || int(i) >= len(d.GetAttributeTable()) || d.AttributeTable[i] == nil {
			return "", fmt.Errorf("attribute index %d out of range of attribute_table (%d entries)", i, len(d.GetAttributeTable()))
		}
		kv := d.AttributeTable[i]
		k, err := lookupString(d, kv.GetKeyStrindex())
		if err != nil {
			return "", fmt.Errorf("attribute_table[%d].key_strindex: %w", i, err)
		}
		if k == key {
			return FormatValue(kv.GetValue()), nil
		}
	}
	return "", nil
}

// SampleAttr returns the value of the sample attribute with the given key
// (for example "thread.name" or "thread.id"), or "" when s has none. It
// returns an error when an index is out of range.
func SampleAttr(req *collectorpb.ExportProfilesServiceRequest, s *profilespb.Sample, key string) (string, error) {
	v, err := attr(req.GetDictionary(), s.GetAttributeIndices(), key)
	if err != nil {
		return "", fmt.Errorf("otlpcheck: sample: %w", err)
	}
	return v, nil
}

// SampleCount returns the number of observations sample s stands for: its
// single value, the number of its timestamps when it has timestamps only,
// or the sum of its values when it has one value per timestamp.
func SampleCount(s *profilespb.Sample) int64 {
	if len(s.GetValues()) == 0 {
		return int64(len(s.GetTimestampsUnixNano()))
	}
	var n int64
	for _, v := range s.GetValues() {
		n += v
	}
	return n
}

// ResourceAttr returns the value, formatted as by [FormatValue], of the
// resource attribute of rp with the given key (for example "process.pid" or
// "service.name"), or "" when there is none.
func ResourceAttr(rp *profilespb.ResourceProfiles, key string) string {
	for _, kv := range rp.GetResource().GetAttributes() {
		if kv.GetKey() == key {
			return FormatValue(kv.GetValue())
		}
	}
	return ""
}

// ResourceAttrs returns the resource attributes of rp, each value formatted
// as by [FormatValue], so tests can tell an absent attribute from an empty
// one.
func ResourceAttrs(rp *profilespb.ResourceProfiles) map[string]string {
	attrs := make(map[string]string, len(rp.GetResource().GetAttributes()))
	for _, kv := range rp.GetResource().GetAttributes() {
		attrs[kv.GetKey()] = FormatValue(kv.GetValue())
	}
	return attrs
}

// FormatValue formats a scalar attribute value as text: strings as they
// are, integers in decimal, booleans as "true" or "false", doubles in the
// shortest exact form. It returns "" for nil, arrays, maps and bytes.
func FormatValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	}
	return ""
}

func lookupString(d *profilespb.ProfilesDictionary, i int32) (string, error) {
	if i < 0 || int(i) >= len(d.GetStringTable()) {
		return "", fmt.Errorf("index %d out of range of string_table (%d entries)", i, len(d.GetStringTable()))
	}
	return d.StringTable[i], nil
}
