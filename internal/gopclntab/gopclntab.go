// Package gopclntab reads the Go runtime's function table, .gopclntab:
// its header, the function records and the pc-value tables (stack pointer
// deltas, files, lines, inline tree indexes) that hang off them. It knows
// the layouts of Go 1.16 and 1.17 (magic 0xfffffffa), 1.18 and 1.19
// (0xfffffff0) and 1.20 and later (0xfffffff1).
//
// A Table reads the section in place, as the runtime does; once its text
// address is set (SetText, ResolveText), it is safe for concurrent use. Every read is bounds-checked: a malformed table yields
// errors or empty values, never a panic.
package gopclntab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// Magic numbers of the .gopclntab layouts this package reads.
const (
	Magic116 = 0xfffffffa // Go 1.16 and 1.17
	Magic118 = 0xfffffff0 // Go 1.18 and 1.19
	Magic120 = 0xfffffff1 // Go 1.20 and later
)

// Indexes of a function's pc-value tables (PCData) and data (FuncData)
// defined by the runtime (internal/abi).
const (
	PCDataInlTreeIndex = 2
	FuncDataInlTree    = 3
)

// FuncFlag holds the runtime's flag bits of a function (internal/abi).
// Go 1.16 has none: its flags always read as zero.
type FuncFlag uint8

// The function flags.
const (
	// FlagTopFrame marks a function at the top of its stack (the
	// outermost frame), such as runtime.goexit, runtime.mstart and
	// runtime.rt0_go. Go 1.17 and later.
	FlagTopFrame FuncFlag = 1 << iota
	// FlagSPWrite marks a function that writes an arbitrary value to the
	// stack pointer, so its stack pointer delta cannot be trusted
	// everywhere. Go 1.17 and later.
	FlagSPWrite
	// FlagAsm marks a function written in assembly. Go 1.19 and later.
	FlagAsm
)

// ErrUnsupportedVersion says a table has a layout this package does not
// read, such as that of Go 1.15 and earlier.
var ErrUnsupportedVersion = errors.New("gopclntab: unsupported version")

// maxPCData bounds the number of pc-value tables of one function record;
// the runtime defines a handful.
const maxPCData = 1 << 10

// Table is a parsed .gopclntab.
type Table struct {
	order   binary.ByteOrder
	magic   uint32
	ptrSize int
	quantum uint64
	nfunc   int
	text    uint64 // address that 1.18+ function entries are relative to
	size    int    // of the whole section

	// The sub-tables are parts of the section's bytes, viewed as strings.
	funcnamesOff                              int
	funcnames, cutab, filetab, pctab, functab string
}

// Func is one function's record (the runtime's _func), decoded.
type Func struct {
	// Entry is the function's entry address.
	Entry uint64
	// NameOff is the offset of the function's name (see Table.Name).
	NameOff int32
	// PCSP, PCFile and PCLn are the offsets of the function's stack
	// pointer delta, file number and line number tables (see
	// Table.Values); 0 means none.
	PCSP, PCFile, PCLn uint32
	// NPCData and NFuncData count the function's further pc-value tables
	// and data (see Table.PCData and Table.FuncData).
	NPCData   uint32
	NFuncData uint8
	// CUOff is the index of the function's compilation unit in the file
	// table.
	CUOff uint32
	// FuncID identifies special runtime functions; its values differ
	// between releases.
	FuncID uint8
	// Flag holds the function's flags.
	Flag FuncFlag

	pcdataOff, fdataOff int // offsets of the pcdata and funcdata arrays in functab
}

// Parse checks the header of a .gopclntab and returns a Table reading
// data in place. data must not be modified while the Table is in use.
func Parse(data []byte, order binary.ByteOrder) (*Table, error) {
	if len(data) < 16 {
		return nil, errors.New("gopclntab: too short")
	}
	t := &Table{order: order, magic: order.Uint32(data), size: len(data)}
	if data[4] != 0 || data[5] != 0 {
		return nil, errors.New("gopclntab: bad header")
	}
	t.quantum = uint64(data[6])
	t.ptrSize = int(data[7])
	if t.quantum != 1 && t.quantum != 2 && t.quantum != 4 || t.ptrSize != 4 && t.ptrSize != 8 {
		return nil, fmt.Errorf("gopclntab: bad quantum %d or pointer size %d", t.quantum, t.ptrSize)
	}
	var nwords int
	switch t.magic {
	case Magic118, Magic120:
		nwords = 8
	case Magic116:
		nwords = 7
	default:
		return nil, fmt.Errorf("%w: magic %#x", ErrUnsupportedVersion, t.magic)
	}
	if len(data) < 8+nwords*t.ptrSize {
		return nil, errors.New("gopclntab: truncated header")
	}
	var w [8]uint64
	for i := range nwords {
		w[i] = t.word(data[8+i*t.ptrSize:])
	}
	if t.magic == Magic116 {
		// No text start: the words after it move up one.
		copy(w[3:], w[2:7])
		w[2] = 0
	}
	nfunc := w[0]
	t.text = w[2]
	offs := w[3:8] // funcnames, cutab, filetab, pctab, functab
	for i, o := range offs {
		if o > uint64(len(data)) || i > 0 && o < offs[i-1] {
			return nil, errors.New("gopclntab: table offsets out of order or range")
		}
	}
	entSize := uint64(8)
	if t.magic == Magic116 {
		entSize = 2 * uint64(t.ptrSize)
	}
	// The entries of the functions and the end of the last.
	if fit := (uint64(len(data)) - offs[4]) / entSize; nfunc == 0 || fit == 0 || nfunc > fit-1 {
		return nil, fmt.Errorf("gopclntab: %d functions do not fit", nfunc)
	}
	t.nfunc = int(nfunc)
	s := unsafe.String(unsafe.SliceData(data), len(data))
	t.funcnamesOff = int(offs[0])
	t.funcnames = s[offs[0]:offs[1]]
	t.cutab = s[offs[1]:offs[2]]
	t.filetab = s[offs[2]:offs[3]]
	t.pctab = s[offs[3]:offs[4]]
	t.functab = s[offs[4]:]
	return t, nil
}

// Magic returns the table's magic number, which names its layout.
func (t *Table) Magic() uint32 { return t.magic }

// PtrSize returns the size of a pointer in the binary, 4 or 8.
func (t *Table) PtrSize() int { return t.ptrSize }

// NumFuncs returns the number of functions.
func (t *Table) NumFuncs() int { return t.nfunc }

// Size returns the length of the section the table reads.
func (t *Table) Size() int { return t.size }

// Text returns the address that function entries are relative to (0 for
// Go 1.16 and 1.17, whose entries are absolute).
func (t *Table) Text() uint64 { return t.text }

// SetText sets the address that function entries are relative to; see
// ResolveText. It has no effect on Go 1.16 and 1.17 tables.
func (t *Table) SetText(addr uint64) {
	if t.magic != Magic116 {
		t.text = addr
	}
}

func (t *Table) word(b []byte) uint64 {
	if t.ptrSize == 4 {
		return uint64(t.order.Uint32(b))
	}
	return t.order.Uint64(b)
}

// u32 reads a uint32 at off in s; false when out of range.
func (t *Table) u32(s string, off int) (uint32, bool) {
	if off < 0 || off > len(s)-4 {
		return 0, false
	}
	return t.order.Uint32(unsafe.Slice(unsafe.StringData(s[off:]), 4)), true
}

// entry returns the entry address of function i (i ≤ nfunc; nfunc is the
// end of the last function) and the offset of its record in functab.
func (t *Table) entry(i int) (entry uint64, funcOff uint64) {
	if t.magic == Magic116 {
		off := i * 2 * t.ptrSize
		b := unsafe.Slice(unsafe.StringData(t.functab[off:]), 2*t.ptrSize)
		return t.word(b), t.word(b[t.ptrSize:])
	}
	e, _ := t.u32(t.functab, i*8)
	f, _ := t.u32(t.functab, i*8+4)
	return t.text + uint64(e), uint64(f)
}

// Entry returns the entry address of function i, for 0 ≤ i < NumFuncs; i
// = NumFuncs gives the end of the last function.
func (t *Table) Entry(i int) uint64 {
	if i < 0 || i > t.nfunc {
		return 0
	}
	e, _ := t.entry(i)
	return e
}

// TextRange returns the addresses the table's functions cover.
func (t *Table) TextRange() (lo, hi uint64) {
	return t.Entry(0), t.Entry(t.nfunc)
}

// Find returns the index of the function containing pc.
func (t *Table) Find(pc uint64) (int, bool) {
	lo, hi := t.TextRange()
	if pc < lo || pc >= hi {
		return 0, false
	}
	i, j := 0, t.nfunc
	for i < j {
		m := int(uint(i+j) >> 1)
		if e, _ := t.entry(m); e <= pc {
			i = m + 1
		} else {
			j = m
		}
	}
	return i - 1, i > 0
}

// Func decodes the record of function i, for 0 ≤ i < NumFuncs; false when
// it is out of range or malformed.
func (t *Table) Func(i int) (Func, bool) {
	if i < 0 || i >= t.nfunc {
		return Func{}, false
	}
	entry, off := t.entry(i)
	if off >= uint64(len(t.functab)) {
		return Func{}, false
	}
	base := 4
	if t.magic == Magic116 {
		base = t.ptrSize
	}
	hdr := base + 36
	if t.magic == Magic120 {
		hdr += 4 // startLine
	}
	rec := t.functab[off:]
	if len(rec) < hdr {
		return Func{}, false
	}
	u := func(o int) uint32 { v, _ := t.u32(rec, o); return v }
	f := Func{
		Entry:     entry,
		NameOff:   int32(u(base)),
		PCSP:      u(base + 12),
		PCFile:    u(base + 16),
		PCLn:      u(base + 20),
		NPCData:   u(base + 24),
		CUOff:     u(base + 28),
		FuncID:    rec[hdr-4],
		Flag:      FuncFlag(rec[hdr-3]), // padding, so zero, in Go 1.16
		NFuncData: rec[hdr-1],
		pcdataOff: int(off) + hdr,
	}
	if f.NPCData > maxPCData {
		return Func{}, false
	}
	f.fdataOff = f.pcdataOff + 4*int(f.NPCData)
	if t.magic == Magic116 {
		f.fdataOff = (f.fdataOff + t.ptrSize - 1) &^ (t.ptrSize - 1)
	}
	return f, true
}

// PCData returns the offset of the function's pc-value table k, 0 if none.
func (t *Table) PCData(f *Func, k uint32) uint32 {
	if k >= f.NPCData {
		return 0
	}
	v, _ := t.u32(t.functab, f.pcdataOff+4*int(k))
	return v
}

// FuncData returns the offset, from the binary's go:func.* symbol, of the
// function's data k. Go 1.18 and later; false when absent.
func (t *Table) FuncData(f *Func, k uint32) (uint32, bool) {
	if k >= uint32(f.NFuncData) || t.magic == Magic116 {
		return 0, false
	}
	v, ok := t.u32(t.functab, f.fdataOff+4*int(k))
	return v, ok && v != ^uint32(0)
}

// Name returns the function name at off in the name table, as held by a
// Func's NameOff or an inline tree entry; "" when there is none. The
// string points into the table's data.
func (t *Table) Name(off int32) string {
	return cstring(t.funcnames, int(off))
}

// FileName returns the name of file number fileno (a value of the PCFile
// table) of the function's compilation unit; "" when there is none. The
// string points into the table's data.
func (t *Table) FileName(f *Func, fileno int32) string {
	if fileno < 0 {
		return ""
	}
	foff, ok := t.u32(t.cutab, 4*(int(f.CUOff)+int(fileno)))
	if !ok || foff == ^uint32(0) {
		return ""
	}
	return cstring(t.filetab, int(foff))
}

// FuncnamesOffset returns the offset of the function name table in the
// section; the runtime's moduledata points there.
func (t *Table) FuncnamesOffset() int { return t.funcnamesOff }

func cstring(s string, off int) string {
	if off < 0 || off >= len(s) {
		return ""
	}
	s = s[off:]
	if i := strings.IndexByte(s, 0); i >= 0 {
		return s[:i]
	}
	return ""
}
