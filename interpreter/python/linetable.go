package python

import (
	"errors"
	"fmt"
	"math"
	"sync"
)

// ErrMalformedLineTable is wrapped by every error ParseLineTable returns for
// a line table that CPython could not have written: a truncated entry, an
// odd-length table of byte pairs, an oversized varint, a line number or code
// offset out of range, or more ranges than a LineTable may hold.
var ErrMalformedLineTable = errors.New("malformed python line table")

// maxLineTableRanges caps the ranges one LineTable holds (8 bytes each), so a
// hostile or corrupt table cannot make the decoder allocate without bound.
// Real code objects have far fewer changes of line than this.
const maxLineTableRanges = 1 << 20

// lineNone is the line of a range whose instructions have no source line.
const lineNone int32 = -1

// lineRange is one entry of a LineTable: the instructions from start up to
// the start of the next entry share line.
type lineRange struct {
	start uint32 // byte offset into co_code
	line  int32  // source line, or lineNone
}

// LineTable maps bytecode offsets of one code object to source lines.
//
// It holds the table as ranges sorted by start byte offset; a range ends
// where the next one starts, and adjacent ranges never share a line, so its
// size is bounded by the number of entries in the decoded table.
type LineTable struct {
	ranges []lineRange
}

// lineTableScratch recycles the buffers ranges are decoded into before they
// are copied into a LineTable of exact size.
var lineTableScratch = sync.Pool{
	New: func() any {
		s := make([]lineRange, 0, 256)
		return &s
	},
}

// lineTableBuilder accumulates ranges while a table is decoded.
type lineTableBuilder struct {
	ranges []lineRange
	end    uint64 // byte offset where the next range starts
}

// malformedLineTable returns an error wrapping ErrMalformedLineTable.
func malformedLineTable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedLineTable, fmt.Sprintf(format, args...))
}

// push appends a range starting at b.end with line, unless it continues the
// line of the range before it. A negative line is stored as lineNone.
func (b *lineTableBuilder) push(line int64) error {
	l := lineNone
	if line >= 0 {
		l = int32(line)
	}
	n := len(b.ranges)
	if n > 0 && b.ranges[n-1].line == l {
		return nil
	}
	if n == 0 && l == lineNone {
		// Offsets before the first range already have no line.
		return nil
	}
	if n >= maxLineTableRanges {
		return malformedLineTable("more than %d line ranges", maxLineTableRanges)
	}
	b.ranges = append(b.ranges, lineRange{start: uint32(b.end), line: l})
	return nil
}

// add records that the next size bytes of code have line.
func (b *lineTableBuilder) add(size uint64, line int64) error {
	if size == 0 {
		return nil
	}
	if b.end+size > math.MaxUint32 {
		return malformedLineTable("code offset %d out of range", b.end+size)
	}
	if err := b.push(line); err != nil {
		return err
	}
	b.end += size
	return nil
}

// checkLineNumber rejects a computed line number that does not fit CPython's int.
func checkLineNumber(line int64) error {
	if line < math.MinInt32 || line > math.MaxInt32 {
		return malformedLineTable("line number %d out of range", line)
	}
	return nil
}

// ParseLineTable decodes a code object's line table as CPython 3.minor
// stores it: co_lnotab for 3.8 and 3.9, the PEP 626 co_linetable for 3.10,
// the location table (PEP 657) for 3.11 to 3.13. firstLine is co_firstlineno.
// Malformed input returns an error (wrapping ErrMalformedLineTable); it never
// panics, and work is linear in len(table). Another minor version returns an
// error that does not wrap ErrMalformedLineTable.
//
// Like CPython's own decoders, it never reports a negative line: code whose
// computed line is below zero has no line.
func ParseLineTable(minor int, table []byte, firstLine int) (*LineTable, error) {
	if minor < 8 || minor > 13 {
		return nil, fmt.Errorf("python: no line table decoder for CPython 3.%d", minor)
	}
	if err := checkLineNumber(int64(firstLine)); err != nil {
		return nil, fmt.Errorf("first line: %w", err)
	}

	scratch := lineTableScratch.Get().(*[]lineRange)
	b := lineTableBuilder{ranges: (*scratch)[:0]}
	var err error
	switch {
	case minor <= 9:
		err = b.lnotab(table, int64(firstLine))
	case minor == 10:
		err = b.linetable310(table, int64(firstLine))
	default:
		err = b.locations(table, int64(firstLine))
	}

	var t *LineTable
	if err == nil {
		t = &LineTable{}
		if len(b.ranges) > 0 {
			t.ranges = make([]lineRange, len(b.ranges))
			copy(t.ranges, b.ranges)
		}
	}
	// Keep moderately sized buffers for the next table; drop huge ones.
	if cap(b.ranges) <= 1<<14 {
		*scratch = b.ranges[:0]
		lineTableScratch.Put(scratch)
	}
	return t, err
}

// lnotab decodes the co_lnotab of CPython 3.8 and 3.9: pairs of an unsigned
// byte increment and a signed line increment. An increment of the line takes
// effect at the offset reached after the pair's byte increment, and the line
// reached last holds to the end of the code, wherever that is.
func (b *lineTableBuilder) lnotab(table []byte, line int64) error {
	if len(table)%2 != 0 {
		return malformedLineTable("co_lnotab has odd length %d", len(table))
	}
	for i := 0; i < len(table); i += 2 {
		if err := b.add(uint64(table[i]), line); err != nil {
			return err
		}
		line += int64(int8(table[i+1]))
		if err := checkLineNumber(line); err != nil {
			return err
		}
	}
	// The table does not record where the code ends.
	return b.push(line)
}

// linetable310 decodes the co_linetable of CPython 3.10 (PEP 626): pairs of
// an unsigned byte count and a signed line delta, where the delta -128 marks
// code without a line and leaves the running line alone. Offsets past the
// last pair have no line.
func (b *lineTableBuilder) linetable310(table []byte, line int64) error {
	if len(table)%2 != 0 {
		return malformedLineTable("co_linetable has odd length %d", len(table))
	}
	for i := 0; i < len(table); i += 2 {
		size, delta := uint64(table[i]), int8(table[i+1])
		entryLine := int64(lineNone)
		if delta != -128 {
			line += int64(delta)
			if err := checkLineNumber(line); err != nil {
				return err
			}
			entryLine = line
		}
		if err := b.add(size, entryLine); err != nil {
			return err
		}
	}
	return b.push(int64(lineNone))
}

// Location entry codes of the CPython 3.11+ location table.
const (
	locShortLast    = 9  // codes 0 to 9: same line, column in the code
	locOneLineFirst = 10 // codes 10 to 12: line delta 0 to 2, two column bytes
	locNoColumns    = 13 // signed varint line delta
	locLong         = 14 // signed varint line delta, three varints
	locNone         = 15 // no location
)

// locations decodes the location table of CPython 3.11 to 3.13 (PEP 657).
// Each entry starts with a byte with bit 7 set, holding a 4-bit code and the
// number of code units (2 bytes each) it covers minus one; the bytes after
// it have bit 7 clear. Offsets past the last entry have no line.
func (b *lineTableBuilder) locations(table []byte, line int64) error {
	i := 0
	for i < len(table) {
		head := table[i]
		if head&0x80 == 0 {
			return malformedLineTable("location entry at %d lacks a header byte", i)
		}
		i++
		code := (head >> 3) & 15
		size := (uint64(head&7) + 1) * 2
		var (
			delta int64
			err   error
		)
		switch {
		case code == locNone:
		case code == locLong:
			if delta, i, err = readLocationSvarint(table, i); err != nil {
				return err
			}
			// End line delta, start column + 1, end column + 1.
			for range 3 {
				if _, i, err = readLocationVarint(table, i); err != nil {
					return err
				}
			}
		case code == locNoColumns:
			if delta, i, err = readLocationSvarint(table, i); err != nil {
				return err
			}
		case code >= locOneLineFirst:
			delta = int64(code - locOneLineFirst)
			if i, err = skipLocationBytes(table, i, 2); err != nil {
				return err
			}
		default: // 0 to locShortLast
			if i, err = skipLocationBytes(table, i, 1); err != nil {
				return err
			}
		}
		line += delta
		if err := checkLineNumber(line); err != nil {
			return err
		}
		entryLine := line
		if code == locNone {
			entryLine = int64(lineNone)
		}
		if err := b.add(size, entryLine); err != nil {
			return err
		}
	}
	return b.push(int64(lineNone))
}

// skipLocationBytes skips n payload bytes of a location entry at table[i:].
func skipLocationBytes(table []byte, i, n int) (int, error) {
	for range n {
		if i >= len(table) || table[i]&0x80 != 0 {
			return i, malformedLineTable("location entry truncated at %d", i)
		}
		i++
	}
	return i, nil
}

// readLocationVarint reads an unsigned varint of the location table at
// table[i:]: 6-bit groups, least significant first, bit 6 set on every group
// but the last. Values beyond 32 bits are malformed.
func readLocationVarint(table []byte, i int) (uint32, int, error) {
	var val uint64
	for shift := 0; ; shift += 6 {
		if shift > 30 {
			return 0, i, malformedLineTable("location varint too long at %d", i)
		}
		if i >= len(table) || table[i]&0x80 != 0 {
			return 0, i, malformedLineTable("location varint truncated at %d", i)
		}
		c := table[i]
		i++
		val |= uint64(c&63) << shift
		if val > math.MaxUint32 {
			return 0, i, malformedLineTable("location varint overflows at %d", i)
		}
		if c&64 == 0 {
			return uint32(val), i, nil
		}
	}
}

// readLocationSvarint reads a signed varint of the location table: an
// unsigned varint holding the magnitude shifted left by one, with the sign in
// bit 0.
func readLocationSvarint(table []byte, i int) (int64, int, error) {
	u, i, err := readLocationVarint(table, i)
	if err != nil {
		return 0, i, err
	}
	if u&1 != 0 {
		return -int64(u >> 1), i, nil
	}
	return int64(u >> 1), i, nil
}

// Line returns the line of the instruction starting at byte offset off of
// the code, and false when the table has no line for it (e.g. the "no
// location" entries, or an offset past the end). The co_lnotab of 3.8 and 3.9
// does not record where the code ends, so there the last line extends past
// it, as it does in CPython.
func (t *LineTable) Line(off uint32) (int, bool) {
	if t == nil {
		return 0, false
	}
	r := t.ranges
	// Find the number of ranges starting at or before off.
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m].start <= off {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 || r[lo-1].line == lineNone {
		return 0, false
	}
	return int(r[lo-1].line), true
}
