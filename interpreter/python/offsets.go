// Package python recognises CPython 3.8–3.13 processes, gives the eBPF
// unwinder what it needs to walk their Python stacks, and names Python
// frames from the process's memory.
package python

// NoField is the value of an Offsets field that does not exist in a
// version.
const NoField = ^uint32(0)

// FrameOwnedByCStack is FRAME_OWNED_BY_CSTACK, the value of
// _PyInterpreterFrame.owner that marks the shim frame CPython 3.12 and 3.13
// push where C code enters _PyEval_EvalFrameDefault. It is 3 in both (the
// enum _frameowner of 3.11 stops at FRAME_OWNED_BY_FRAME_OBJECT = 2).
const FrameOwnedByCStack = 3

// Offsets are the byte offsets (and a few sizes) of the CPython internals
// stackline reads, for one minor version on x86-64. A field that does not
// exist in a version is NoField.
//
// The str objects read are compact: their characters follow the header in
// the same allocation. PyASCIIObject.state is a 32-bit word of bit-fields
// whose low bits, counted from the least significant, are the same in
// 3.8–3.13:
//
//	bits 0-1  interned
//	bits 2-4  kind     (1, 2 or 4: bytes per character)
//	bit  5    compact
//	bit  6    ascii    (data follows PyASCIIObject, else PyCompactUnicodeObject)
//	bit  7    ready (3.8–3.11) / statically_allocated (3.12, 3.13), unused here
//
// so kind = state>>2 & 7, compact = state>>5 & 1 and ascii = state>>6 & 1
// in every supported version.
type Offsets struct {
	// RuntimeInterpretersMain is offsetof(_PyRuntimeState,
	// interpreters.main): the main PyInterpreterState (interpreters.head
	// is the newest one, a subinterpreter when there are any).
	RuntimeInterpretersMain uint32
	// InterpThreadsHead is the first PyThreadState of an interpreter:
	// tstate_head (3.8–3.10) or threads.head (3.11+).
	InterpThreadsHead uint32
	// TStateNext is PyThreadState.next.
	TStateNext uint32
	// TStateThreadID is PyThreadState.thread_id, the pthread_self() of
	// the thread.
	TStateThreadID uint32
	// TStateFrame is the thread's way to its current frame: frame
	// (PyFrameObject*) up to 3.10, cframe (_PyCFrame*) in 3.11 and 3.12,
	// current_frame (_PyInterpreterFrame*) in 3.13.
	TStateFrame uint32
	// CFrameCurrentFrame is _PyCFrame.current_frame in 3.11 and 3.12.
	CFrameCurrentFrame uint32
	// FrameBack is the caller's frame: PyFrameObject.f_back (3.8–3.10) or
	// _PyInterpreterFrame.previous (3.11+).
	FrameBack uint32
	// FrameCode is the frame's code object: f_code, or f_executable in
	// 3.13.
	FrameCode uint32
	// FrameInstr is the frame's position in its bytecode: f_lasti (an
	// int: bytes in 3.8 and 3.9, code units in 3.10), prev_instr (3.11,
	// 3.12) or instr_ptr (3.13), pointers into co_code_adaptive.
	FrameInstr uint32
	// FrameIsEntry is _PyInterpreterFrame.is_entry (a bool), 3.11 only.
	FrameIsEntry uint32
	// FrameOwner is _PyInterpreterFrame.owner (a char), 3.11+.
	FrameOwner uint32
	// CodeFirstLineno is PyCodeObject.co_firstlineno (an int).
	CodeFirstLineno uint32
	// CodeFilename is PyCodeObject.co_filename.
	CodeFilename uint32
	// CodeName is PyCodeObject.co_name.
	CodeName uint32
	// CodeQualname is PyCodeObject.co_qualname, 3.11+.
	CodeQualname uint32
	// CodeLineTable is the line table: co_lnotab (3.8, 3.9) or
	// co_linetable (3.10+).
	CodeLineTable uint32
	// CodeCodeAdaptive is offsetof(PyCodeObject, co_code_adaptive), where
	// the bytecode lies inside the code object in 3.11+.
	CodeCodeAdaptive uint32
	// UnicodeLength is PyASCIIObject.length, in characters.
	UnicodeLength uint32
	// UnicodeState is PyASCIIObject.state, the word of bit-fields.
	UnicodeState uint32
	// UnicodeASCIIData is sizeof(PyASCIIObject): the characters of a
	// compact ASCII str follow it.
	UnicodeASCIIData uint32
	// UnicodeCompactData is sizeof(PyCompactUnicodeObject): the
	// characters of a compact non-ASCII str follow it.
	UnicodeCompactData uint32
	// BytesSize is ob_size of PyBytesObject's PyVarObject header.
	BytesSize uint32
	// BytesData is offsetof(PyBytesObject, ob_sval).
	BytesData uint32
}

// offsets38 holds 3.8 and 3.9, which agree on every field.
var offsets38 = Offsets{
	RuntimeInterpretersMain: 40,
	InterpThreadsHead:       8,
	TStateNext:              8,
	TStateThreadID:          176,
	TStateFrame:             24,
	CFrameCurrentFrame:      NoField,
	FrameBack:               24,
	FrameCode:               32,
	FrameInstr:              104,
	FrameIsEntry:            NoField,
	FrameOwner:              NoField,
	CodeFirstLineno:         40,
	CodeFilename:            104,
	CodeName:                112,
	CodeQualname:            NoField,
	CodeLineTable:           120,
	CodeCodeAdaptive:        NoField,
	UnicodeLength:           16,
	UnicodeState:            32,
	UnicodeASCIIData:        48,
	UnicodeCompactData:      72,
	BytesSize:               16,
	BytesData:               32,
}

// offsetsByMinor holds the offsets of CPython 3.8-3.13, indexed by minor
// version, read from the DWARF of 3.8.18, 3.9.18, 3.10.13, 3.11.7, 3.12.1
// and 3.13.0 (offsets_test.go checks them).
var offsetsByMinor = map[int]Offsets{
	8: offsets38,
	9: offsets38,
	10: func() Offsets {
		o := offsets38
		// 3.10 replaced the f_stacktop pointer before f_lasti by an
		// int f_stackdepth packed with the two chars after it.
		o.FrameInstr = 96
		return o
	}(),
	11: {
		RuntimeInterpretersMain: 48,
		InterpThreadsHead:       16,
		TStateNext:              8,
		TStateThreadID:          152,
		TStateFrame:             56,
		CFrameCurrentFrame:      8,
		FrameBack:               48,
		FrameCode:               32,
		FrameInstr:              56,
		FrameIsEntry:            68,
		FrameOwner:              69,
		CodeFirstLineno:         72,
		CodeFilename:            112,
		CodeName:                120,
		CodeQualname:            128,
		CodeLineTable:           136,
		CodeCodeAdaptive:        184,
		UnicodeLength:           16,
		UnicodeState:            32,
		UnicodeASCIIData:        48,
		UnicodeCompactData:      72,
		BytesSize:               16,
		BytesData:               32,
	},
	12: {
		RuntimeInterpretersMain: 48,
		InterpThreadsHead:       72,
		TStateNext:              8,
		TStateThreadID:          136,
		TStateFrame:             56,
		CFrameCurrentFrame:      0,
		FrameBack:               8,
		FrameCode:               0,
		FrameInstr:              56,
		FrameIsEntry:            NoField,
		FrameOwner:              70,
		CodeFirstLineno:         68,
		CodeFilename:            112,
		CodeName:                120,
		CodeQualname:            128,
		CodeLineTable:           136,
		CodeCodeAdaptive:        192,
		UnicodeLength:           16,
		UnicodeState:            32,
		UnicodeASCIIData:        40,
		UnicodeCompactData:      56,
		BytesSize:               16,
		BytesData:               32,
	},
	13: {
		RuntimeInterpretersMain: 640,
		InterpThreadsHead:       7344,
		TStateNext:              8,
		TStateThreadID:          152,
		TStateFrame:             72,
		CFrameCurrentFrame:      NoField,
		FrameBack:               8,
		FrameCode:               0,
		FrameInstr:              56,
		FrameIsEntry:            NoField,
		FrameOwner:              70,
		CodeFirstLineno:         68,
		CodeFilename:            112,
		CodeName:                120,
		CodeQualname:            128,
		CodeLineTable:           136,
		CodeCodeAdaptive:        200,
		UnicodeLength:           16,
		UnicodeState:            32,
		UnicodeASCIIData:        40,
		UnicodeCompactData:      56,
		BytesSize:               16,
		BytesData:               32,
	},
}

// OffsetsFor returns the offsets of CPython 3.minor, false when not
// supported.
func OffsetsFor(minor int) (Offsets, bool) {
	o, ok := offsetsByMinor[minor]
	return o, ok
}
