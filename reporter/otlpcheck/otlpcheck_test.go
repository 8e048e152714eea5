package otlpcheck

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"
)

// validRequest builds a small self-contained request by hand: one process
// whose single sample runs main -> work (inlined helper) -> an unnamed
// native frame -> a kernel function.
func validRequest() *collectorpb.ExportProfilesServiceRequest {
	strs := []string{
		"",                 // 0
		"samples", "count", // 1, 2
		"cpu", "nanoseconds", // 3, 4
		"profile.frame.type", "native", "kernel", // 5, 6, 7
		"thread.name", "worker", "thread.id", // 8, 9, 10
		"/usr/bin/app", "[kernel.kallsyms]", // 11, 12
		"main", "work", "helper", "do_syscall_64", // 13, 14, 15, 16
		"app.c",                           // 17
		"process.executable.build_id.gnu", // 18
		"abcdef",                          // 19
	}
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	d := &profilespb.ProfilesDictionary{
		StringTable: strs,
		AttributeTable: []*profilespb.KeyValueAndUnit{
			{},
			{KeyStrindex: 5, Value: str("native")}, // 1
			{KeyStrindex: 5, Value: str("kernel")}, // 2
			{KeyStrindex: 8, Value: str("worker")}, // 3
			{KeyStrindex: 10, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 42}}}, // 4
			{KeyStrindex: 18, Value: str("abcdef")},                                                        // 5
		},
		MappingTable: []*profilespb.Mapping{
			{},
			{MemoryStart: 0x1000, MemoryLimit: 0x4000, FileOffset: 0x1000, FilenameStrindex: 11, AttributeIndices: []int32{5}}, // 1
			{MemoryStart: 0xffffffff81000000, MemoryLimit: 0xffffffff82000000, FilenameStrindex: 12},                           // 2
		},
		FunctionTable: []*profilespb.Function{
			{},
			{NameStrindex: 13, SystemNameStrindex: 13, FilenameStrindex: 17}, // 1 main
			{NameStrindex: 14, SystemNameStrindex: 14, FilenameStrindex: 17}, // 2 work
			{NameStrindex: 15, SystemNameStrindex: 15, FilenameStrindex: 17}, // 3 helper
			{NameStrindex: 16, SystemNameStrindex: 16},                       // 4 do_syscall_64
		},
		LocationTable: []*profilespb.Location{
			{},
			{MappingIndex: 2, Address: 0xffffffff81000010, Lines: []*profilespb.Line{{FunctionIndex: 4}}, AttributeIndices: []int32{2}},                            // 1
			{MappingIndex: 1, Address: 0x1234, AttributeIndices: []int32{1}},                                                                                       // 2 unnamed
			{MappingIndex: 1, Address: 0x2000, Lines: []*profilespb.Line{{FunctionIndex: 3, Line: 7}, {FunctionIndex: 2, Line: 20}}, AttributeIndices: []int32{1}}, // 3
			{MappingIndex: 1, Address: 0x3000, Lines: []*profilespb.Line{{FunctionIndex: 1, Line: 3}}, AttributeIndices: []int32{1}},                               // 4
		},
		LinkTable:  []*profilespb.Link{{}},
		StackTable: []*profilespb.Stack{{}, {LocationIndices: []int32{1, 2, 3, 4}}},
	}
	prof := &profilespb.Profile{
		SampleType:   &profilespb.ValueType{TypeStrindex: 1, UnitStrindex: 2},
		PeriodType:   &profilespb.ValueType{TypeStrindex: 3, UnitStrindex: 4},
		Period:       10_000_000,
		TimeUnixNano: 1,
		DurationNano: 10,
		Samples: []*profilespb.Sample{
			{StackIndex: 1, AttributeIndices: []int32{3, 4}, TimestampsUnixNano: []uint64{1, 2, 3}},
			{StackIndex: 1, AttributeIndices: []int32{3, 4}, Values: []int64{5}},
		},
	}
	return &collectorpb.ExportProfilesServiceRequest{
		Dictionary: d,
		ResourceProfiles: []*profilespb.ResourceProfiles{{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
				{Key: "process.pid", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 1234}}},
				{Key: "process.executable.name", Value: str("app")},
			}},
			ScopeProfiles: []*profilespb.ScopeProfiles{{Profiles: []*profilespb.Profile{prof}}},
		}},
	}
}

func TestValidateValid(t *testing.T) {
	if err := Validate(validRequest()); err != nil {
		t.Fatalf("Validate(valid request) = %v", err)
	}
	// The zero link may also carry all-zero IDs of full length.
	req := validRequest()
	req.Dictionary.LinkTable[0] = &profilespb.Link{TraceId: make([]byte, 16), SpanId: make([]byte, 8)}
	if err := Validate(req); err != nil {
		t.Fatalf("Validate(request with full-length zero link) = %v", err)
	}
	// An empty request with a proper dictionary is valid too.
	req = validRequest()
	req.ResourceProfiles = nil
	if err := Validate(req); err != nil {
		t.Fatalf("Validate(request without profiles) = %v", err)
	}
}

func TestValidateBroken(t *testing.T) {
	sample := func(r *collectorpb.ExportProfilesServiceRequest) *profilespb.Sample {
		return r.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples[0]
	}
	const prof = "resource_profiles[0].scope_profiles[0].profiles[0]"
	tests := []struct {
		name   string
		mutate func(r *collectorpb.ExportProfilesServiceRequest)
		want   string
	}{
		{"nil request", nil, "request is nil"},
		{"no dictionary", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary = nil }, "dictionary: missing"},
		{"string 0", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.StringTable[0] = "x" }, `dictionary.string_table[0]: is "x"`},
		{"no strings", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.StringTable = nil }, "dictionary.string_table: empty"},
		{"mapping 0", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.MappingTable[0] = &profilespb.Mapping{FilenameStrindex: 1}
		}, "dictionary.mapping_table[0]: not the zero value"},
		{"location 0", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.LocationTable[0] = &profilespb.Location{Address: 1}
		}, "dictionary.location_table[0]: not the zero value"},
		{"function 0", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.FunctionTable[0] = &profilespb.Function{NameStrindex: 1}
		}, "dictionary.function_table[0]: not the zero value"},
		{"link 0", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.LinkTable[0] = &profilespb.Link{SpanId: []byte{1}}
		}, "dictionary.link_table[0]: not the zero value"},
		{"no links", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.LinkTable = nil }, "dictionary.link_table: empty"},
		{"two profiles of one type", func(r *collectorpb.ExportProfilesServiceRequest) {
			sp := r.ResourceProfiles[0].ScopeProfiles[0]
			sp.Profiles = append(sp.Profiles, proto.Clone(sp.Profiles[0]).(*profilespb.Profile))
		}, "resource_profiles[0].scope_profiles[0].profiles[1].sample_type: the same as profiles[0]'s"},
		{"attribute 0", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.AttributeTable[0] = &profilespb.KeyValueAndUnit{KeyStrindex: 5}
		}, "dictionary.attribute_table[0]: not the zero value"},
		{"stack 0", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.StackTable[0] = &profilespb.Stack{LocationIndices: []int32{1}}
		}, "dictionary.stack_table[0]: not the zero value"},
		{"nil stack 0", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.StackTable[0] = nil }, "dictionary.stack_table[0]: not the zero value"},
		{"sample stack_index", func(r *collectorpb.ExportProfilesServiceRequest) { sample(r).StackIndex = 9 },
			prof + ".samples[0].stack_index: index 9 out of range of stack_table (2 entries)"},
		{"negative stack_index", func(r *collectorpb.ExportProfilesServiceRequest) { sample(r).StackIndex = -1 },
			prof + ".samples[0].stack_index: index -1 out of range"},
		{"sample link_index", func(r *collectorpb.ExportProfilesServiceRequest) { sample(r).LinkIndex = 1 },
			prof + ".samples[0].link_index: index 1 out of range of link_table"},
		{"sample attribute", func(r *collectorpb.ExportProfilesServiceRequest) { sample(r).AttributeIndices[1] = 99 },
			prof + ".samples[0].attribute_indices[1]: index 99 out of range of attribute_table"},
		{"sample zero attribute", func(r *collectorpb.ExportProfilesServiceRequest) { sample(r).AttributeIndices[0] = 0 },
			prof + ".samples[0].attribute_indices[0]: refers to the zero entry of attribute_table"},
		{"sample repeated key", func(r *collectorpb.ExportProfilesServiceRequest) { sample(r).AttributeIndices[1] = 3 },
			prof + `.samples[0].attribute_indices[1]: key "thread.name" repeated`},
		{"profile attribute", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].AttributeIndices = []int32{6}
		}, prof + ".attribute_indices[0]: index 6 out of range of attribute_table"},
		{"sample values", func(r *collectorpb.ExportProfilesServiceRequest) {
			s := sample(r)
			s.Values, s.TimestampsUnixNano = []int64{1, 2}, nil
		}, prof + ".samples[0]: 2 values and 0 timestamps"},
		{"sample empty", func(r *collectorpb.ExportProfilesServiceRequest) {
			s := sample(r)
			s.Values, s.TimestampsUnixNano = nil, nil
		}, prof + ".samples[0]: 0 values and 0 timestamps"},
		{"sample type missing", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].SampleType = nil
		}, prof + ".sample_type: missing"},
		{"sample type strindex", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].SampleType.UnitStrindex = 100
		}, prof + ".sample_type.unit_strindex: index 100 out of range of string_table"},
		{"period type strindex", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].PeriodType.TypeStrindex = 100
		}, prof + ".period_type.type_strindex: index 100 out of range"},
		{"stack location", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.StackTable[1].LocationIndices[2] = 5 },
			"dictionary.stack_table[1].location_indices[2]: index 5 out of range of location_table (5 entries)"},
		{"stack zero location", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.StackTable[1].LocationIndices[0] = 0 },
			"dictionary.stack_table[1].location_indices[0]: refers to the zero entry of location_table"},
		{"location mapping", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.LocationTable[2].MappingIndex = 3 },
			"dictionary.location_table[2].mapping_index: index 3 out of range of mapping_table (3 entries)"},
		{"location attribute", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.LocationTable[1].AttributeIndices = []int32{-2}
		},
			"dictionary.location_table[1].attribute_indices[0]: index -2 out of range of attribute_table"},
		{"line function", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.LocationTable[3].Lines[1].FunctionIndex = 5
		},
			"dictionary.location_table[3].lines[1].function_index: index 5 out of range of function_table (5 entries)"},
		{"nil line", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.LocationTable[3].Lines[0] = nil },
			"dictionary.location_table[3].lines[0]: nil"},
		{"function name", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.FunctionTable[1].NameStrindex = 20 },
			"dictionary.function_table[1].name_strindex: index 20 out of range of string_table (20 entries)"},
		{"function system name", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.FunctionTable[2].SystemNameStrindex = 21
		},
			"dictionary.function_table[2].system_name_strindex: index 21 out of range"},
		{"function filename", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.FunctionTable[3].FilenameStrindex = 22 },
			"dictionary.function_table[3].filename_strindex: index 22 out of range"},
		{"mapping filename", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.MappingTable[1].FilenameStrindex = 23 },
			"dictionary.mapping_table[1].filename_strindex: index 23 out of range"},
		{"mapping attribute", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.MappingTable[2].AttributeIndices = []int32{7}
		},
			"dictionary.mapping_table[2].attribute_indices[0]: index 7 out of range of attribute_table (6 entries)"},
		{"attribute key", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.AttributeTable[3].KeyStrindex = 24 },
			"dictionary.attribute_table[3].key_strindex: index 24 out of range"},
		{"attribute empty key", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.AttributeTable[3].KeyStrindex = 0 },
			"dictionary.attribute_table[3].key_strindex: empty key"},
		{"attribute unit", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.AttributeTable[4].UnitStrindex = 25 },
			"dictionary.attribute_table[4].unit_strindex: index 25 out of range"},
		{"nil function", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.FunctionTable[4] = nil },
			"dictionary.function_table[4]: nil"},
		{"timestamp before the profile", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].TimeUnixNano = 2
		}, "samples[0].timestamps_unix_nano[0]: 1 outside the profile's [2, 12)"},
		{"timestamp at the profile's end", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].DurationNano = 2
		}, "samples[0].timestamps_unix_nano[2]: 3 outside the profile's [1, 3)"},
		{"address outside mapping", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.MappingTable[1].MemoryLimit = 0x3000 },
			"dictionary.location_table[4].address: 0x3000 outside its mapping's [0x1000, 0x3000)"},
		{"mapping range reversed", func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.MappingTable[1].MemoryStart = 0x5000 },
			"dictionary.mapping_table[1]: memory_start 0x5000 above memory_limit 0x4000"},
		{"nil profile", func(r *collectorpb.ExportProfilesServiceRequest) {
			r.ResourceProfiles[0].ScopeProfiles[0].Profiles = append(r.ResourceProfiles[0].ScopeProfiles[0].Profiles, nil)
		}, "resource_profiles[0].scope_profiles[0].profiles[1]: nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req *collectorpb.ExportProfilesServiceRequest
			if tt.mutate != nil {
				req = validRequest()
				tt.mutate(req)
			}
			err := Validate(req)
			if err == nil {
				t.Fatalf("Validate = nil, want an error containing %q", tt.want)
			}
			var verr *Error
			if !errors.As(err, &verr) {
				t.Fatalf("Validate error %T is not *Error", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateLimitsProblems(t *testing.T) {
	req := validRequest()
	p := req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0]
	for range MaxProblems + 10 {
		p.Samples = append(p.Samples, &profilespb.Sample{StackIndex: 100, Values: []int64{1}})
	}
	err := Validate(req)
	var verr *Error
	if !errors.As(err, &verr) {
		t.Fatalf("Validate = %v, want *Error", err)
	}
	if len(verr.Problems) != MaxProblems || verr.Omitted != 10 {
		t.Errorf("got %d problems listed and %d omitted, want %d and 10", len(verr.Problems), verr.Omitted, MaxProblems)
	}
	if want := fmt.Sprintf("otlpcheck: %d problems", MaxProblems+10); !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error starts %q, want %q", err.Error()[:40], want)
	}
	if !strings.HasSuffix(err.Error(), "... and 10 more") {
		t.Errorf("error does not end with the omitted count: %q", err.Error()[len(err.Error())-40:])
	}
}

func TestFrames(t *testing.T) {
	req := validRequest()
	s := req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples[0]

	frames, err := Frames(req, s)
	if err != nil {
		t.Fatal(err)
	}
	var names, types []string
	for _, f := range frames {
		names = append(names, f.Name)
		types = append(types, f.Type)
	}
	if want := []string{"do_syscall_64", "", "helper", "main"}; !slices.Equal(names, want) {
		t.Errorf("frame names = %q, want %q", names, want)
	}
	if want := []string{"kernel", "native", "native", "native"}; !slices.Equal(types, want) {
		t.Errorf("frame types = %q, want %q", types, want)
	}
	frames, err = Frames(req, s)
	if err != nil {
		t.Fatal(err)
	}
	if f := frames[2]; !slices.Equal(f.Functions, []string{"helper", "work"}) || f.MappingFile != "/usr/bin/app" || f.Address != 0x2000 {
		t.Errorf("frame 2 = %+v, want helper inlined into work in /usr/bin/app at 0x2000", f)
	}
	if f := frames[1]; f.Name != "" || len(f.Functions) != 0 || f.Address != 0x1234 {
		t.Errorf("frame 1 = %+v, want unnamed at 0x1234", f)
	}

	if got, err := SampleAttr(req, s, "thread.name"); err != nil || got != "worker" {
		t.Errorf("SampleAttr(thread.name) = %q, %v, want worker", got, err)
	}
	if got, err := SampleAttr(req, s, "thread.id"); err != nil || got != "42" {
		t.Errorf("SampleAttr(thread.id) = %q, %v, want 42", got, err)
	}
	if got, err := SampleAttr(req, s, "nope"); err != nil || got != "" {
		t.Errorf("SampleAttr(nope) = %q, %v, want empty", got, err)
	}
	if n := SampleCount(s); n != 3 {
		t.Errorf("SampleCount(timestamps only) = %d, want 3", n)
	}
	if n := SampleCount(req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples[1]); n != 5 {
		t.Errorf("SampleCount(one value) = %d, want 5", n)
	}

	rp := req.ResourceProfiles[0]
	if got := ResourceAttr(rp, "process.pid"); got != "1234" {
		t.Errorf("ResourceAttr(process.pid) = %q, want 1234", got)
	}
	if got := ResourceAttr(rp, "process.executable.name"); got != "app" {
		t.Errorf("ResourceAttr(process.executable.name) = %q, want app", got)
	}
	if got := ResourceAttr(rp, "host.name"); got != "" {
		t.Errorf("ResourceAttr(host.name) = %q, want empty", got)
	}
}

func TestFramesBrokenIndex(t *testing.T) {
	for name, breakReq := range map[string]func(*collectorpb.ExportProfilesServiceRequest){
		"stack": func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.StackTable = r.Dictionary.StackTable[:1]
		},
		"location": func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.StackTable[1].LocationIndices[0] = 50 },
		"function": func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.LocationTable[1].Lines[0].FunctionIndex = 50
		},
		"name":    func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.FunctionTable[1].NameStrindex = 50 },
		"mapping": func(r *collectorpb.ExportProfilesServiceRequest) { r.Dictionary.LocationTable[1].MappingIndex = 50 },
		"attr": func(r *collectorpb.ExportProfilesServiceRequest) {
			r.Dictionary.LocationTable[1].AttributeIndices[0] = 50
		},
	} {
		req := validRequest()
		breakReq(req)
		s := req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples[0]
		if _, err := Frames(req, s); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%s: Frames error = %v, want out of range", name, err)
		}
	}
}
