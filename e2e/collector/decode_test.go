package collector

import (
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
)

// line is one request in the form the Collector's file exporter writes it:
// resource and scope attributes by string-table reference (a string, an
// int, an array and a key-value list), and "value": {} in entry 0 of the
// attribute table.
const line = `{"resourceProfiles":[{"resource":{"attributes":[` +
	`{"keyStrindex":4,"value":{"intValue":"77"}},` +
	`{"keyStrindex":5,"value":{"stringValueStrindex":6}},` +
	`{"keyStrindex":7,"value":{"arrayValue":{"values":[{"stringValueStrindex":1},{"intValue":"2"}]}}},` +
	`{"keyStrindex":8,"value":{"kvlistValue":{"values":[{"keyStrindex":1,"value":{"stringValueStrindex":6}}]}}},` +
	`{"key":"inline","value":{"stringValue":"kept"}}]},` +
	`"scopeProfiles":[{"scope":{"name":"stackline","attributes":[{"keyStrindex":5,"value":{"stringValueStrindex":6}}]},` +
	`"profiles":[{"sampleType":{"typeStrindex":2,"unitStrindex":3},"samples":[{"stackIndex":1,"timestampsUnixNano":["1795978279258764461","1795978279258764462"]}],` +
	`"timeUnixNano":"1795978279000000000","durationNano":"1000000000"}]}]}],` +
	`"dictionary":{"mappingTable":[{}],"locationTable":[{},{"lines":[{"functionIndex":1}],"attributeIndices":[1]}],` +
	`"functionTable":[{},{"nameStrindex":1}],"linkTable":[{}],` +
	`"stringTable":["","main.leaf","samples","count","process.pid","service.name","svc","list","map"],` +
	`"attributeTable":[{"value":{}},{"keyStrindex":1,"value":{"stringValue":"go"}}],` +
	`"stackTable":[{},{"locationIndices":[1]}]}}`

func TestDecodeLine(t *testing.T) {
	req, err := DecodeLine([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if err := otlpcheck.Validate(req); err != nil {
		t.Errorf("decoded request: %v", err)
	}
	rp := req.ResourceProfiles[0]
	for key, want := range map[string]string{"process.pid": "77", "service.name": "svc", "inline": "kept"} {
		if got := otlpcheck.ResourceAttr(rp, key); got != want {
			t.Errorf("resource attribute %s = %q, want %q", key, got, want)
		}
	}
	attrs := rp.Resource.Attributes
	if got := attrs[2].Value.GetArrayValue().GetValues()[0].GetStringValue(); attrs[2].Key != "list" || got != "main.leaf" {
		t.Errorf("array attribute %s: first value %q, want list: main.leaf", attrs[2].Key, got)
	}
	kvl := attrs[3].Value.GetKvlistValue().GetValues()
	if attrs[3].Key != "map" || len(kvl) != 1 || kvl[0].Key != "main.leaf" || kvl[0].Value.GetStringValue() != "svc" {
		t.Errorf("key-value list attribute %s: %v", attrs[3].Key, kvl)
	}
	scope := req.ResourceProfiles[0].ScopeProfiles[0].Scope
	if scope.Name != "stackline" || len(scope.Attributes) != 1 || scope.Attributes[0].Key != "service.name" || scope.Attributes[0].Value.GetStringValue() != "svc" {
		t.Errorf("scope: %v", scope)
	}
	s := rp.ScopeProfiles[0].Profiles[0].Samples[0]
	if n := otlpcheck.SampleCount(s); n != 2 {
		t.Errorf("sample count %d, want 2", n)
	}
	frames, err := otlpcheck.Frames(req, s)
	if err != nil || len(frames) != 1 || frames[0].Name != "main.leaf" {
		t.Errorf("frames %v, %v; want main.leaf", frames, err)
	}
}

func TestDecodeLines(t *testing.T) {
	reqs, err := Decode(strings.NewReader(line + "\n\n" + line + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 2 {
		t.Errorf("%d requests, want 2", len(reqs))
	}
}

func TestDecodeBroken(t *testing.T) {
	for _, c := range []struct {
		name, line, want string
	}{
		{"not JSON", `{"resourceProfiles":`, "not a JSON object"},
		{"two values", `{} {}`, "more than one JSON value"},
		{"key reference out of range", strings.Replace(line, `"keyStrindex":4,`, `"keyStrindex":40,`, 1), "resource.attributes[0].keyStrindex: 40 out of range"},
		{"negative key reference", strings.Replace(line, `"keyStrindex":4,`, `"keyStrindex":-1,`, 1), "out of range"},
		{"value reference out of range", strings.Replace(line, `"stringValueStrindex":6}},{"keyStrindex":7`, `"stringValueStrindex":9}},{"keyStrindex":7`, 1), "resource.attributes[1].value.stringValueStrindex: 9 out of range"},
		{"key and reference", strings.Replace(line, `{"keyStrindex":4,`, `{"key":"x","keyStrindex":4,`, 1), "both key"},
		{"no key", strings.Replace(line, `{"keyStrindex":4,`, `{`, 1), "attribute without a key"},
		{"string table not strings", strings.Replace(line, `"stringTable":["",`, `"stringTable":[1,`, 1), "stringTable[0]: not a string"},
		{"field v0.4.0 lacks", strings.Replace(line, `"timeUnixNano"`, `"newField":1,"timeUnixNano"`, 1), "newField"},
		{"reference where v0.4.0 has none", strings.Replace(line, `"name":"stackline"`, `"nameStrindex":3`, 1), "nameStrindex"},
	} {
		_, err := DecodeLine([]byte(c.line))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// FuzzDecodeLine checks that no line makes the decoder panic and that what
// it accepts has no string-table reference left where v0.4.0 has none.
func FuzzDecodeLine(f *testing.F) {
	f.Add([]byte(line))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"resourceProfiles":[{"resource":{"attributes":[{"keyStrindex":1,"value":{}}]}}],"dictionary":{"stringTable":["","k"]}}`))
	f.Add([]byte(`{"dictionary":{"attributeTable":[{"value":{"kvlistValue":{"values":[{"keyStrindex":0}]}}}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeLine(b)
		if err != nil {
			return
		}
		for _, rp := range req.ResourceProfiles {
			for _, kv := range rp.GetResource().GetAttributes() {
				if kv.Key == "" {
					t.Errorf("resource attribute without a key accepted: %v", kv)
				}
			}
		}
	})
}
