// Package interpreter defines what the tracer needs from a language runtime
// whose frames the eBPF unwinders walk (CPython and HotSpot now; V8, Ruby,
// Perl and PHP can follow without changes to the tracer).
//
// A Runtime recognises its interpreter among the files a process maps and
// returns a Loader for that file; the tracer caches it per file. For each
// process mapping the file, the Loader attaches an Instance, which tells the
// eBPF side where the interpreter's eval loop lies and what to read (Unwind),
// and names the frames the runtime's eBPF unwinder emits (Frame).
package interpreter

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/trace"
)

// Kind numbers a runtime for the eBPF unwinder (enum interp_kind in
// support/ebpf/interp.h, checked by tracer/layout.go).
type Kind uint32

// The runtimes the eBPF side can unwind.
const (
	KindNone    Kind = 0
	KindPython  Kind = 1
	KindHotSpot Kind = 2
	KindV8      Kind = 3
)

// ConfigBytes is the size of Unwind.Config (INTERP_CONFIG_BYTES).
const ConfigBytes = 256

// File is an executable file mapped by a process, as the tracer offers it
// to each Runtime.
type File struct {
	// Path is the file's path as /proc/PID/maps shows it.
	Path string
	// ELF returns the file, opened the way the process sees it and parsed
	// once for all that read it. The caller of Detect owns it: Detect
	// must not close it nor keep it.
	ELF func() (*elffile.File, error)
}

// Mapping is where a process maps a file's code.
type Mapping struct {
	// Start and End are the mapping's address range, Offset the file
	// offset mapped at Start.
	Start, End, Offset uint64
}

// Runtime recognises one runtime's interpreter among mapped files.
type Runtime interface {
	// Name names the runtime in logs ("cpython").
	Name() string
	// Detect reports whether f is this runtime's interpreter. It returns
	// a nil Loader and no error when it is not, and an error when it
	// looks like one but cannot be used (an unsupported version, a
	// file without the symbols it needs).
	Detect(f File) (Loader, error)
}

// Loader is a runtime's interpreter file, ready to attach to processes.
type Loader interface {
	// Attach readies the process pid, which maps the file's code at m.
	Attach(pid uint32, m Mapping, mem Memory) (Instance, error)
}

// Instance is a runtime in one process.
type Instance interface {
	// Unwind is what the eBPF unwinder needs for the process.
	Unwind() Unwind
	// Frame names a frame the runtime's eBPF unwinder emitted. It may read
	// the process's memory; implementations cache what they read, within
	// a fixed bound per process.
	Frame(f Frame) (Symbol, error)
}

// Range is an address range [Start, End).
type Range struct{ Start, End uint64 }

// Unwind is one process's struct interp_proc (support/ebpf/interp.h).
type Unwind struct {
	// Kind selects the eBPF unwinder.
	Kind Kind
	// Handoff are the eval loop's address ranges: a native frame there
	// hands over to the runtime's unwinder. Unused ranges are empty.
	Handoff [2]Range
	// Owned are address ranges whose frames the runtime's unwinder walks
	// itself, to their callers (a JIT's code cache). Unused ranges are
	// empty.
	Owned [2]Range
	// Data and Config are runtime-specific: addresses in the process and
	// constants (struct offsets) in the layout its eBPF unwinder reads.
	Data   [2]uint64
	Config [ConfigBytes]byte
}

// Frame is an interpreted frame as the eBPF unwinder recorded it (struct
// frame in support/ebpf/trace.h).
type Frame struct {
	Type  trace.FrameType
	Addr  uint64
	Aux   uint32
	Extra uint32
	// AuxHigh holds bits 32-47 of a 48-bit aux (V8: of a pc).
	AuxHigh uint16
	// ReturnAddress says the frame's pc is a return address (the frame
	// called another), not the instruction that was running.
	ReturnAddress bool
}

// Symbol names an interpreted frame. Its strings are shared with the
// instance's cache: a Symbol costs no allocation.
type Symbol struct {
	// ID is the frame's identity for the reporter. ID.File stands for the
	// source file.
	ID trace.FrameID
	// Function, File and Line name the frame; Line is 0 when unknown.
	Function string
	File     string
	Line     int64
	// Inlined, when set, names the frame as several lines instead,
	// innermost first (methods a JIT inlined into the one it compiled,
	// which comes last); Function, File and Line are then its first.
	Inlined []trace.Line
}

// Info returns the reporter's metadata for s.
func (s Symbol) Info() trace.FrameInfo {
	if len(s.Inlined) > 0 {
		return trace.FrameInfo{Lines: s.Inlined}
	}
	return trace.FrameInfo{Lines: []trace.Line{{Function: s.Function, File: s.File, Line: s.Line}}}
}

// Memory reads a process's memory.
type Memory interface {
	// ReadAt reads len(p) bytes at addr. A short read is an error.
	ReadAt(p []byte, addr uint64) error
}

// ErrUnreadable wraps failures to read a process's memory: the process
// exited, or the address is not mapped.
var ErrUnreadable = errors.New("process memory unreadable")

// ErrNotReady wraps Attach's failures for a runtime that has not set
// itself up yet in the process (a VM still starting): the tracer attaches
// it again a little later.
var ErrNotReady = errors.New("runtime not initialised yet")

// Closer is implemented by instances that hold what must be released when
// their process is forgotten (cached bytes counted against a bound shared
// by all processes).
type Closer interface {
	Close()
}

// ProcessMemory reads pid's memory with process_vm_readv, which needs no
// file descriptor and no ptrace stop (CAP_SYS_PTRACE, which root has).
type ProcessMemory uint32

// ReadAt implements Memory.
func (pid ProcessMemory) ReadAt(p []byte, addr uint64) error {
	if len(p) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &p[0]}}
	local[0].SetLen(len(p))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(p)}}
	n, err := unix.ProcessVMReadv(int(pid), local, remote, 0)
	if err != nil {
		return fmt.Errorf("%w: pid %d at %#x: %w", ErrUnreadable, pid, addr, err)
	}
	if n != len(p) {
		return fmt.Errorf("%w: pid %d at %#x: %d of %d bytes", ErrUnreadable, pid, addr, n, len(p))
	}
	return nil
}
