package collector

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"google.golang.org/protobuf/encoding/protojson"
)

// maxLine bounds one line of the file exporter's output.
const maxLine = 256 << 20

// Decode reads the file exporter's JSON output, one export request per
// line, into stackline's OTLP types.
//
// The Collector (pdata v1.71) writes a newer profiles protocol than the
// v0.4.0 one stackline speaks, and it differs in one way: the keys and
// string values of resource and scope attributes are written as references
// into the dictionary's string table (keyStrindex, stringValueStrindex)
// rather than inline (key, stringValue). Decode resolves those references,
// leaves out empty attribute values (see [resolver.kvValue]), and then
// decodes strictly, so a field v0.4.0 does not know fails the decoding
// instead of being dropped.
func Decode(r io.Reader) ([]*collectorpb.ExportProfilesServiceRequest, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), maxLine)
	var reqs []*collectorpb.ExportProfilesServiceRequest
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		req, err := DecodeLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		reqs = append(reqs, req)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the file exporter's output: %w", err)
	}
	return reqs, nil
}

// DecodeLine decodes one line of the file exporter's output: a JSON
// ProfilesData (the same fields as an export request).
func DecodeLine(line []byte) (*collectorpb.ExportProfilesServiceRequest, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber() // 64-bit integers pass through unchanged
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value on the line")
	}
	if err := resolveReferences(doc); err != nil {
		return nil, err
	}
	resolved, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	req := new(collectorpb.ExportProfilesServiceRequest)
	if err := protojson.Unmarshal(resolved, req); err != nil {
		return nil, fmt.Errorf("decoding as an OTLP v0.4.0 export request: %w", err)
	}
	return req, nil
}

// resolveReferences replaces the string-table references of resource and
// scope attributes, and of the dictionary's attribute values, in the
// request doc by the strings they refer to.
func resolveReferences(doc map[string]any) error {
	dict, ok := doc["dictionary"].(map[string]any)
	if !ok && doc["dictionary"] != nil {
		return errors.New("dictionary: not an object")
	}
	var r resolver
	if st, ok := dict["stringTable"]; ok {
		list, ok := st.([]any)
		if !ok {
			return errors.New("dictionary.stringTable: not an array")
		}
		for i, s := range list {
			str, ok := s.(string)
			if !ok {
				return fmt.Errorf("dictionary.stringTable[%d]: not a string", i)
			}
			r.strs = append(r.strs, str)
		}
	}
	// Entries of the attribute table keep their keyStrindex (v0.4.0 has it
	// too); only their values may hold a reference.
	attrs, _ := dict["attributeTable"].([]any)
	for i, a := range attrs {
		kv, ok := a.(map[string]any)
		if !ok {
			return fmt.Errorf("dictionary.attributeTable[%d]: not an object", i)
		}
		if err := r.kvValue(fmt.Sprintf("dictionary.attributeTable[%d].value", i), kv); err != nil {
			return err
		}
	}
	rps, _ := doc["resourceProfiles"].([]any)
	for i, x := range rps {
		path := fmt.Sprintf("resourceProfiles[%d]", i)
		rp, ok := x.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: not an object", path)
		}
		if res, ok := rp["resource"].(map[string]any); ok {
			if err := r.keyValues(path+".resource.attributes", res["attributes"]); err != nil {
				return err
			}
		}
		sps, _ := rp["scopeProfiles"].([]any)
		for j, y := range sps {
			sp, ok := y.(map[string]any)
			if !ok {
				return fmt.Errorf("%s.scopeProfiles[%d]: not an object", path, j)
			}
			if scope, ok := sp["scope"].(map[string]any); ok {
				if err := r.keyValues(fmt.Sprintf("%s.scopeProfiles[%d].scope.attributes", path, j), scope["attributes"]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// resolver resolves string-table references in decoded JSON.
type resolver struct {
	strs []string
}

// str returns the string-table entry the JSON number x refers to.
func (r resolver) str(path string, x any) (string, error) {
	n, ok := x.(json.Number)
	if !ok {
		return "", fmt.Errorf("%s: not a number", path)
	}
	i, err := n.Int64()
	if err != nil || i < 0 || i >= int64(len(r.strs)) {
		return "", fmt.Errorf("%s: %s out of range of the string table (%d entries)", path, n, len(r.strs))
	}
	return r.strs[i], nil
}

// keyValues resolves a list of KeyValue: a keyStrindex becomes the key, and
// the value is resolved as by [resolver.value]. A missing list is fine.
func (r resolver) keyValues(path string, x any) error {
	if x == nil {
		return nil
	}
	list, ok := x.([]any)
	if !ok {
		return fmt.Errorf("%s: not an array", path)
	}
	for i, e := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		kv, ok := e.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: not an object", p)
		}
		if ref, ok := kv["keyStrindex"]; ok {
			if k, ok := kv["key"]; ok && k != "" {
				return fmt.Errorf("%s: both key %v and keyStrindex", p, k)
			}
			key, err := r.str(p+".keyStrindex", ref)
			if err != nil {
				return err
			}
			delete(kv, "keyStrindex")
			kv["key"] = key
		}
		if k, _ := kv["key"].(string); k == "" {
			return fmt.Errorf("%s: attribute without a key", p)
		}
		if err := r.kvValue(p+".value", kv); err != nil {
			return err
		}
	}
	return nil
}

// kvValue resolves the value of a KeyValue or KeyValueAndUnit kv. An empty
// value object is removed: pdata cannot leave a value out, so the
// Collector writes "value": {} for an attribute without a value (entry 0
// of the attribute table), which protojson would decode as a present but
// empty AnyValue; both mean no value.
func (r resolver) kvValue(path string, kv map[string]any) error {
	v, ok := kv["value"]
	if !ok {
		return nil
	}
	if m, ok := v.(map[string]any); ok && len(m) == 0 {
		delete(kv, "value")
		return nil
	}
	return r.value(path, v)
}

// value resolves an AnyValue: a stringValueStrindex becomes the
// stringValue, and arrays and key-value lists are resolved inside.
func (r resolver) value(path string, x any) error {
	v, ok := x.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: not an object", path)
	}
	if ref, ok := v["stringValueStrindex"]; ok {
		s, err := r.str(path+".stringValueStrindex", ref)
		if err != nil {
			return err
		}
		delete(v, "stringValueStrindex")
		v["stringValue"] = s
	}
	if a, ok := v["arrayValue"].(map[string]any); ok {
		vals, _ := a["values"].([]any)
		for i, e := range vals {
			if err := r.value(fmt.Sprintf("%s.arrayValue.values[%d]", path, i), e); err != nil {
				return err
			}
		}
	}
	if kvl, ok := v["kvlistValue"].(map[string]any); ok {
		if err := r.keyValues(path+".kvlistValue.values", kvl["values"]); err != nil {
			return err
		}
	}
	return nil
}
