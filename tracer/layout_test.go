package tracer

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"

	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// bpfEnum returns the values of C enum name from the committed object's BTF.
func bpfEnum(t *testing.T, name string) []btf.EnumValue {
	t.Helper()
	spec, err := progs.LoadStackline()
	if err != nil {
		t.Fatal(err)
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName(name, &e); err != nil {
		t.Fatalf("enum %s: %v", name, err)
	}
	return e.Values
}

// TestSharedEnums checks that every value the eBPF programs may send has
// its Go counterpart: layout.go checks that the values Go knows are the C
// ones, this that C has no value Go does not know.
func TestSharedEnums(t *testing.T) {
	for _, v := range bpfEnum(t, "frame_type") {
		ft := trace.FrameType(v.Value)
		if uint64(ft) != v.Value || ft.String() == "unknown" {
			t.Errorf("%s = %d: no trace.FrameType of that value", v.Name, v.Value)
		}
	}
	for _, v := range bpfEnum(t, "unwind_error") {
		if name := trace.ErrorName(v.Value); strings.HasPrefix(name, "[unwind error") {
			t.Errorf("%s = %d: no trace.Error constant of that value (named %q)", v.Name, v.Value, name)
		}
	}
	for _, v := range bpfEnum(t, "record_kind") {
		switch uint32(v.Value) {
		case recordTrace, recordProcessExit, recordProcessExec, recordProcessSync, recordOffCPU, recordWakeup:
		default:
			t.Errorf("%s = %d: the tracer does not handle it", v.Name, v.Value)
		}
	}
}
