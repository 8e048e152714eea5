package ebpf

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// TestLoad loads every program and map into the running kernel: the
// verifier accepts them and the CO-RE relocations resolve.
func TestLoad(t *testing.T) {
	testenv.RequireBPF(t)
	spec, err := LoadStackline()
	if err != nil {
		t.Fatal(err)
	}
	var objs StacklineObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			t.Fatalf("verifier: %+v", verr)
		}
		t.Fatal(err)
	}
	defer objs.Close()
	for name, prog := range map[string]*ebpf.Program{"sample": objs.Sample, "unwind_native": objs.UnwindNative} {
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := info.VerifiedInstructions(); ok {
			t.Logf("%s: %d instructions verified", name, n)
		}
	}
}
