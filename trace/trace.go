// Package trace holds the types that the tracer, the symbolizer and the
// reporter share: file and frame identities, the metadata that names a frame,
// and a sampled trace with its metadata.
//
// It owns no behaviour beyond computing identities, so every other package
// can depend on it without depending on each other.
package trace

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// FileID identifies the contents of an executable or shared object: the
// OpenTelemetry process.executable.build_id.htlhash, computed by
// FileIDFromReader. The kernel and each kernel module get a FileID too,
// derived from their build IDs by KernelFileID.
type FileID [16]byte

// String returns the FileID in lower-case hex, as exported in OTLP.
func (id FileID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero FileID, which names no file.
func (id FileID) IsZero() bool { return id == FileID{} }

// FrameType says which unwinder produced a frame and how its address is to
// be read. It is exported as the profile.frame.type attribute.
type FrameType uint8

// Frame types. The numeric values of the first ones are those of the eBPF
// trace record (enum frame_type of support/ebpf/trace.h): tracer/layout.go
// does not compile when they differ.
const (
	FrameUnknown FrameType = 0
	// FrameNative is a user-space machine-code frame; its address is a file
	// offset inside the mapped file.
	FrameNative FrameType = 1
	// FrameKernel is a kernel frame; its address is a kernel virtual address.
	FrameKernel FrameType = 2
	// FrameError marks where an unwinder stopped for lack of data; its
	// address carries the error code.
	FrameError FrameType = 3
	// FrameCPython is a Python function run by CPython. The FrameID's File
	// stands for the source file, its Addr for the function and line.
	FrameCPython FrameType = 4
	// FrameJVMInterpreted, FrameJVMCompiled and FrameJVMStub are HotSpot
	// frames: a method the interpreter runs, a compiled method (whose one
	// frame may stand for several inlined methods), and other VM code
	// (stubs, adapters). The FrameID's File stands for the source file.
	FrameJVMInterpreted FrameType = 5
	FrameJVMCompiled    FrameType = 6
	FrameJVMStub        FrameType = 7
	// FrameV8Interpreted, FrameV8Code and FrameV8Stub are V8 (node)
	// frames: a JavaScript function V8's interpreter runs, one running
	// Sparkplug, Maglev or TurboFan code (whose one frame may stand for
	// several inlined functions), and V8's typed frames (entry, exit,
	// stub, ...). The FrameID's File stands for the script.
	FrameV8Interpreted FrameType = 8
	FrameV8Code        FrameType = 9
	FrameV8Stub        FrameType = 10
	// FrameGo is a native frame in a Go binary. The eBPF side never emits it:
	// the tracer sets it when the mapped file is known to be Go.
	FrameGo FrameType = 64
)

// Interpreted reports whether t is the frame type of an interpreter's
// unwinder: the values 4 to 63 are theirs (FrameCPython and those to come),
// named by the process's interpreter.Instance.
func (t FrameType) Interpreted() bool { return t >= FrameCPython && t < FrameGo }

// String returns the profile.frame.type value of t.
func (t FrameType) String() string {
	switch t {
	case FrameNative:
		return "native"
	case FrameKernel:
		return "kernel"
	case FrameError:
		return "abort"
	case FrameGo:
		return "go"
	case FrameCPython:
		return "cpython"
	case FrameJVMInterpreted, FrameJVMCompiled, FrameJVMStub:
		return "jvm"
	case FrameV8Interpreted, FrameV8Code, FrameV8Stub:
		return "v8js"
	}
	return "unknown"
}

// FrameID identifies one frame across processes: the file it lies in and
// the address inside it. Two processes that map the same libc share the
// FrameIDs of their libc frames.
type FrameID struct {
	// File is the mapped file's FileID, or the kernel's/module's.
	File FileID
	// Addr is the file offset of the instruction for native frames (the
	// return address minus one for frames other than the leaf) and the
	// kernel virtual address for kernel frames.
	Addr uint64
	// Type is the kind of frame.
	Type FrameType
}

// Line is one source position of a frame. A frame has several when calls
// were inlined; the first is the innermost.
type Line struct {
	// Function is the function's name as a person reads it (demangled).
	Function string
	// SystemName is the name as the binary spells it, when it differs.
	SystemName string
	// File is the source file name, when known.
	File string
	// Line is the line number inside File, 0 when unknown.
	Line int64
}

// FrameInfo names a frame. An empty Lines means the frame could not be
// named; the export then still carries its mapping and address.
type FrameInfo struct {
	Lines []Line
}

// ExecutableInfo describes a mapped file (or the kernel or a module) for the
// OTLP mapping table.
type ExecutableInfo struct {
	// FileName is the base name shown for the mapping (e.g. "libc.so.6",
	// "vmlinux", a module name).
	FileName string
	// GNUBuildID is the hex .note.gnu.build-id, when present.
	GNUBuildID string
	// GoBuildID is the Go build ID, when present.
	GoBuildID string
	// Pseudo marks memory that is no file ([vdso], [anon], JIT code): its
	// FileID is derived from a name, not hashed from contents, so it is
	// not exported as a build ID.
	Pseudo bool
}

// Trace is one sampled stack, leaf first.
type Trace struct {
	Frames []FrameID
}

// TraceMeta says where and when a trace was sampled.
type TraceMeta struct {
	// TimestampNS is the sample time in nanoseconds since the Unix epoch.
	TimestampNS uint64
	// PID is the process (thread group) ID, TID the thread ID.
	PID, TID uint32
	// CPU is the CPU the sample was taken on.
	CPU uint32
	// Comm is the thread name.
	Comm string
	// OffCPUNS is, for a trace of a thread that was off the CPU (blocked)
	// rather than a CPU sample, how long it waited, in nanoseconds, up to
	// TimestampNS; 0 for CPU samples.
	OffCPUNS uint64
	// ExecutablePath is the process's executable path as the process sees
	// it, "" for kernel threads.
	ExecutablePath string
	// ProcessName is the process's name (the main thread's comm).
	ProcessName string
	// Process is what else is known of the process, read once per
	// process (and again after an exec), or nil when nothing is. The
	// tracer shares one ProcessMeta between the traces of a process and
	// never changes it: a change is a new ProcessMeta.
	Process *ProcessMeta
}

// ProcessMeta describes a process for the resource its samples are
// exported under. Empty fields are unknown.
type ProcessMeta struct {
	// ContainerID is the ID of the container the process runs in, from
	// its cgroup (container.id).
	ContainerID string
	// PodUID is the UID of the Kubernetes pod the process runs in, from
	// its cgroup (k8s.pod.uid).
	PodUID string
	// ServiceName is the service name the process's own environment sets
	// (OTEL_SERVICE_NAME, or service.name in OTEL_RESOURCE_ATTRIBUTES).
	ServiceName string
	// RuntimeName is the process's runtime (process.runtime.name):
	// "cpython" for a Python interpreter, "go" for a Go executable.
	RuntimeName string
}

// SourceFileID derives a FileID for a source file of an interpreted
// runtime (e.g. "cpython" and a .py path), which stands for the file in
// the frames of its functions.
func SourceFileID(runtime, path string) FileID {
	return fileIDOfString("source\x00" + runtime + "\x00" + path)
}

// KernelFileID derives a FileID for the kernel or a kernel module from its
// name and GNU build ID (hex), since neither is a file the agent can hash.
func KernelFileID(name, buildID string) FileID {
	return fileIDOfString("kernel\x00" + strings.ToLower(name) + "\x00" + buildID)
}

// Error codes carried in the address of FrameError frames: those of enum
// unwind_error of support/ebpf/trace.h (checked by tracer/layout.go).
const (
	ErrorNone uint64 = iota
	// ErrorMaxDepth: the stack was deeper than the configured maximum.
	ErrorMaxDepth
	// ErrorReadFailed: reading the user stack failed.
	ErrorReadFailed
	// ErrorNoMapping: an address fell outside every mapping of the process.
	ErrorNoMapping
	// ErrorNoCFI: no unwind information covers an address.
	ErrorNoCFI
	// ErrorNotReady: the process's mappings were not loaded into the
	// unwinder yet (its first milliseconds).
	ErrorNotReady
	// ErrorBadFrame: a caller's frame did not lie above its callee's.
	ErrorBadFrame
	// ErrorInterpreter: an interpreter's frames could not be read (its
	// thread state not found, or its memory unreadable). Unlike the
	// others it does not end the stack: native frames follow.
	ErrorInterpreter
)

// ErrorName returns the frame name shown for an error frame's code.
func ErrorName(code uint64) string {
	switch code {
	case ErrorMaxDepth:
		return "[truncated: max stack depth]"
	case ErrorReadFailed:
		return "[unwind stopped: stack unreadable]"
	case ErrorNoMapping:
		return "[unwind stopped: address not mapped]"
	case ErrorNoCFI:
		return "[unwind stopped: no unwind information]"
	case ErrorNotReady:
		return "[unwind stopped: process not loaded yet]"
	case ErrorBadFrame:
		return "[unwind stopped: corrupt frame]"
	case ErrorInterpreter:
		return "[interpreter frames unreadable]"
	}
	return fmt.Sprintf("[unwind error %d]", code)
}
