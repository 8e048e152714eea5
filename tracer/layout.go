package tracer

import (
	"github.com/stackline-dev/stackline/interpreter"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// The eBPF programs' constants that other packages define for their own
// use (trace's frame types and error codes, interpreter's kinds and the
// shape of its unwind data) must equal the ones bpf2go generates from the
// C: when one differs, this does not compile (an index out of range, or a
// constant overflow, on its line). TestSharedEnums checks that every C
// value has its Go counterpart.
func _() {
	var x [1]struct{}
	_ = x[trace.FrameNative-trace.FrameType(progs.StacklineFrameTypeFRAME_NATIVE)]
	_ = x[trace.FrameKernel-trace.FrameType(progs.StacklineFrameTypeFRAME_KERNEL)]
	_ = x[trace.FrameError-trace.FrameType(progs.StacklineFrameTypeFRAME_ERROR)]
	_ = x[trace.FrameCPython-trace.FrameType(progs.StacklineFrameTypeFRAME_CPYTHON)]
	_ = x[trace.FrameJVMInterpreted-trace.FrameType(progs.StacklineFrameTypeFRAME_JVM_INTERPRETED)]
	_ = x[trace.FrameJVMCompiled-trace.FrameType(progs.StacklineFrameTypeFRAME_JVM_COMPILED)]
	_ = x[trace.FrameJVMStub-trace.FrameType(progs.StacklineFrameTypeFRAME_JVM_STUB)]
	_ = x[trace.FrameV8Interpreted-trace.FrameType(progs.StacklineFrameTypeFRAME_V8JS_INTERPRETED)]
	_ = x[trace.FrameV8Code-trace.FrameType(progs.StacklineFrameTypeFRAME_V8JS_CODE)]
	_ = x[trace.FrameV8Stub-trace.FrameType(progs.StacklineFrameTypeFRAME_V8JS_STUB)]

	_ = x[trace.ErrorMaxDepth-uint64(progs.StacklineUnwindErrorUNWIND_ERR_MAX_DEPTH)]
	_ = x[trace.ErrorReadFailed-uint64(progs.StacklineUnwindErrorUNWIND_ERR_READ_FAILED)]
	_ = x[trace.ErrorNoMapping-uint64(progs.StacklineUnwindErrorUNWIND_ERR_NO_MAPPING)]
	_ = x[trace.ErrorNoCFI-uint64(progs.StacklineUnwindErrorUNWIND_ERR_NO_CFI)]
	_ = x[trace.ErrorNotReady-uint64(progs.StacklineUnwindErrorUNWIND_ERR_NOT_READY)]
	_ = x[trace.ErrorBadFrame-uint64(progs.StacklineUnwindErrorUNWIND_ERR_BAD_FRAME)]
	_ = x[trace.ErrorInterpreter-uint64(progs.StacklineUnwindErrorUNWIND_ERR_INTERP)]

	_ = x[interpreter.KindNone-interpreter.Kind(progs.StacklineInterpKindINTERP_NONE)]
	_ = x[interpreter.KindPython-interpreter.Kind(progs.StacklineInterpKindINTERP_PYTHON)]
	_ = x[interpreter.KindHotSpot-interpreter.Kind(progs.StacklineInterpKindINTERP_HOTSPOT)]
	_ = x[interpreter.KindV8-interpreter.Kind(progs.StacklineInterpKindINTERP_V8)]
	_ = x[interpreter.ConfigBytes-len(progs.StacklineInterpProc{}.Config)]
	_ = x[len(interpreter.Unwind{}.Handoff)-len(progs.StacklineInterpProc{}.HandoffStart)]
	_ = x[len(interpreter.Unwind{}.Data)-len(progs.StacklineInterpProc{}.Data)]
	_ = x[len(interpreter.Unwind{}.Owned)-len(progs.StacklineInterpProc{}.OwnedStart)]
}
