package python

import (
	"reflect"
	"testing"
)

// TestConfigSetsEveryField checks that every field of struct py_offsets
// (the Go type bpf2go generates from support/ebpf/python.h) is given a
// value by some supported version: a field added to the C struct and not
// filled in by config fails here.
func TestConfigSetsEveryField(t *testing.T) {
	var set map[string]bool
	var versions int
	for minor := range 20 {
		off, ok := OffsetsFor(minor)
		if !ok {
			continue
		}
		versions++
		l := &loader{minor: minor, offsets: off}
		v := reflect.ValueOf(l.config())
		if set == nil {
			set = make(map[string]bool)
			for i := range v.NumField() {
				if name := v.Type().Field(i).Name; name != "_" {
					set[name] = false
				}
			}
		}
		for i := range v.NumField() {
			if f := v.Field(i); v.Type().Field(i).Name != "_" && !f.IsZero() {
				set[v.Type().Field(i).Name] = true
			}
		}
	}
	if versions == 0 {
		t.Fatal("no supported version")
	}
	for name, ok := range set {
		if !ok {
			t.Errorf("py_offsets.%s is 0 for every supported version: config does not fill it in", name)
		}
	}
}
