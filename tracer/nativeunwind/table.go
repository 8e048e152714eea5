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

import "fmt"

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
//
// A table holds its rows compactly, 8 bytes a row: each row is its file
// offset and the index of its rule (the row's fields but Addr) among the
// table's distinct rules, which are few (hundreds to a few thousand in
// large files). Len, Row and At read them; Rows copies them out.
type Table struct {
	Sources Source
	// rows are packed rows (see packRow); rules the rules they index.
	rows  []uint64
	rules []Row
}

// NewTable returns a table of the given rows, as they are: they are not
// sorted or merged. It fails with ErrTooLarge for a row whose Addr is
// MaxAddr or more, or for more distinct rules than a table may index.
func NewTable(rows []Row, src Source) (*Table, error) {
	var rs ruleSet
	rs.reset()
	t := &Table{Sources: src, rows: make([]uint64, len(rows))}
	for i, r := range rows {
		if r.Addr >= MaxAddr {
			return nil, fmt.Errorf("nativeunwind: %w: file offset %#x", ErrTooLarge, r.Addr)
		}
		rule, ok := rs.intern(r)
		if !ok {
			return nil, fmt.Errorf("nativeunwind: %w: more than %d rules", ErrTooLarge, maxRules)
		}
		t.rows[i] = packRow(r.Addr, rule)
	}
	t.rules = rs.rules
	return t, nil
}

// Len returns the number of rows of t.
func (t *Table) Len() int { return len(t.rows) }

// At returns the file offset of row i of t and the index of its rule in
// t.Rules().
func (t *Table) At(i int) (addr uint64, rule int) {
	p := t.rows[i]
	return p & addrMask, int(p >> addrBits)
}

// Row returns row i of t.
func (t *Table) Row(i int) Row {
	addr, rule := t.At(i)
	r := t.rules[rule]
	r.Addr = addr
	return r
}

// Rules returns the rules that rows of t refer to by index (see At), as
// rows with Addr 0. It may hold rules that no row has. The slice is t's:
// it must not be modified.
func (t *Table) Rules() []Row { return t.rules }

// Rows returns the rows of t in a new slice of Row (24 bytes a row, three
// times the table's own memory).
func (t *Table) Rows() []Row {
	out := make([]Row, len(t.rows))
	for i := range t.rows {
		out[i] = t.Row(i)
	}
	return out
}
