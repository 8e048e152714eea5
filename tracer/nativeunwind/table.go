// Package nativeunwind turns an ELF file's call frame information
// (.eh_frame, .debug_frame, and for Go binaries .gopclntab) into compact
// stack-delta tables: for each address range of the file, how to find the
// caller's frame. The tracer loads these tables into eBPF maps; this package
// never touches maps.
//
// Addresses in a Table are file offsets, the same space as the tracer's
// frame IDs: an address is mapped to a row by subtracting the mapping's
// start and adding its file offset.
package nativeunwind

// CFAKind says how the canonical frame address (CFA: the stack pointer
// value just before the call that created the frame) is computed, or why it
// cannot be.
type CFAKind uint8

// The CFA rules.
const (
	// CFAInvalid marks addresses without usable unwind information: none
	// was given, or it uses a form this package does not translate.
	// Unwinding stops there with an error.
	CFAInvalid CFAKind = iota
	// CFAEndOfStack marks the outermost frame (the return address is
	// undefined, as in _start or a thread's entry): unwinding is complete.
	CFAEndOfStack
	// CFASP: CFA = stack pointer + CFAOffset.
	CFASP
	// CFAFP: CFA = frame pointer + CFAOffset.
	CFAFP
	// CFAPLT: the lazy-binding PLT stub expression: CFA = stack pointer +
	// CFAOffset, plus 8 more when (pc & 15) >= 11.
	CFAPLT
	// CFASignal: a signal trampoline (its CIE has the 'S' augmentation).
	// The interrupted registers are restored from the kernel's signal
	// frame at the stack pointer; the offsets are unused.
	CFASignal
	// CFAGoMcall: Go's runtime.mcall, the outermost frame of the
	// thread's system stack (g0), as CFAEndOfStack; below it, the
	// goroutine that called it (and parked, when the thread then
	// blocked) can be found through the g it passed to the function it
	// called. The offsets are unused.
	CFAGoMcall
)

// Row is the rule for the addresses from Addr up to the next row's Addr.
type Row struct {
	// Addr is a file offset.
	Addr uint64
	// CFA and CFAOffset compute the canonical frame address.
	CFA       CFAKind
	CFAOffset int32
	// FPOffset is where the caller's frame pointer is saved, relative to
	// the CFA; 0 means the frame pointer register still holds the
	// caller's value.
	FPOffset int32
	// RAOffset is where the return address is saved, relative to the
	// CFA; 0 means it is in the link register (not on x86-64, where it is
	// always -8).
	RAOffset int32
}

// Source says where a table's rows came from.
type Source uint8

// Sources of rows, combined as bits.
const (
	SourceEHFrame Source = 1 << iota
	SourceDebugFrame
	SourceGoPCLNTab
)

// Table is a file's stack-delta table: rows sorted by Addr, neighbours with
// equal rules merged, gaps between functions covered by CFAInvalid rows.
type Table struct {
	Rows    []Row
	Sources Source
}
