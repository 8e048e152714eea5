package hotspot

import (
	"encoding/binary"
	"fmt"
)

// maxLineEntries bounds a decoded line number table. A method has at most
// 65,535 bytes of bytecode, and javac writes at most one entry per
// statement start; the bound is far above any real table.
const maxLineEntries = 1 << 16

// LineEntry maps the bytecode from BCI on to a source line.
type LineEntry struct {
	BCI, Line int32
}

// LineTable is a method's line number table, in the order the class file
// lists it (not necessarily by bytecode index).
type LineTable []LineEntry

// DecodeLineTable decodes the compressed line number table HotSpot keeps
// after a method's bytecodes in its ConstMethod (when the ConstMethod's
// has_linenumber_table flag is set). It returns the table and the number of
// bytes it took, terminator included.
//
// The table is a list of (bci, line) pairs, each a delta to the one before
// (starting from 0, 0) and ended by a zero byte: a pair is one byte, the
// bci delta in its top five bits and the line delta in its low three, or
// the escape byte 0xFF followed by both deltas as signed compressed
// integers of enc. Data that ends before the terminator is ErrTruncated,
// so a caller reading process memory can read more and retry.
func DecodeLineTable(b []byte, enc Encoding) (LineTable, int, error) {
	var t LineTable
	s := NewStream(b, 0, enc)
	var bci, line int32
	for {
		c, err := s.Byte()
		if err != nil {
			return nil, 0, fmt.Errorf("line table: no terminator in %d bytes: %w", len(b), err)
		}
		switch c {
		case 0:
			return t, s.Pos(), nil
		case 0xFF:
			db, err := s.Int()
			if err != nil {
				return nil, 0, fmt.Errorf("line table entry %d: %w", len(t), err)
			}
			dl, err := s.Int()
			if err != nil {
				return nil, 0, fmt.Errorf("line table entry %d: %w", len(t), err)
			}
			bci += db
			line += dl
		default:
			bci += int32(c >> 3)
			line += int32(c & 7)
		}
		if len(t) >= maxLineEntries {
			return nil, 0, fmt.Errorf("line table: over %d entries", maxLineEntries)
		}
		t = append(t, LineEntry{BCI: bci, Line: line})
	}
}

// Line returns the source line of the bytecode at bci: the line of the
// entry for bci itself, else of the entry with the greatest bci below it
// (the later one on a tie), as HotSpot's Method::line_from_bci chooses. It
// returns 0 when no entry is at or before bci.
func (t LineTable) Line(bci int) int {
	best, bestBCI := 0, int32(0)
	found := false
	for _, e := range t {
		switch {
		case int(e.BCI) == bci:
			return int(e.Line)
		case int(e.BCI) < bci && e.BCI >= bestBCI:
			best, bestBCI, found = int(e.Line), e.BCI, true
		}
	}
	if !found {
		return 0
	}
	return best
}

// ConstMethodLayout is where a ConstMethod (a method's read-only part)
// keeps what naming the method needs. Its bytecodes follow the
// ConstMethod itself, and the compressed line number table follows them.
type ConstMethodLayout struct {
	// Size is sizeof(ConstMethod): the header bytes to read.
	Size uint64
	// Constants is the offset of _constants (the ConstantPool*);
	// NameIndex, SignatureIndex and CodeSize of the u2 fields
	// _name_index, _signature_index (constant pool indices) and
	// _code_size.
	Constants, NameIndex, SignatureIndex, CodeSize uint64
	// Flags is the offset of the flags: "_flags" (u2) in JDK 17,
	// "_flags._flags" (u4) from JDK 21. HasLineTable is the flag
	// saying a line table follows the bytecodes (bit 0 in all three;
	// JDK 21 moved it to the low 16 bits of a 32-bit field).
	Flags        uint64
	HasLineTable uint16
}

// ConstMethodLayoutOf returns the ConstMethod layout l states.
func ConstMethodLayoutOf(l *Layout) (ConstMethodLayout, error) {
	var c ConstMethodLayout
	var ok bool
	if c.Size, ok = l.Size("ConstMethod"); !ok || c.Size > 1024 {
		return c, fmt.Errorf("hotspot: ConstMethod size %d, %v", c.Size, ok)
	}
	flags := "_flags._flags"
	if _, ok := l.Field("ConstMethod", flags); !ok {
		flags = "_flags"
	}
	for _, f := range []struct {
		name string
		into *uint64
		size uint64
	}{
		{"_constants", &c.Constants, 8}, {"_name_index", &c.NameIndex, 2},
		{"_signature_index", &c.SignatureIndex, 2}, {"_code_size", &c.CodeSize, 2},
		{flags, &c.Flags, 2},
	} {
		if *f.into, ok = l.Field("ConstMethod", f.name); !ok {
			return c, fmt.Errorf("hotspot: the VM states no ConstMethod::%s", f.name)
		}
		if *f.into > c.Size || f.size > c.Size-*f.into {
			return c, fmt.Errorf("hotspot: ConstMethod::%s at %d, outside the %d-byte ConstMethod", f.name, *f.into, c.Size)
		}
	}
	// JDK 17 states the flag as ConstMethod's, 21 and 25 as
	// ConstMethodFlags'; both are bit 0, the fallback.
	c.HasLineTable = 1
	for _, name := range []string{"ConstMethod::_has_linenumber_table", "ConstMethodFlags::_misc_has_linenumber_table"} {
		v, ok := l.Int(name)
		if !ok {
			continue
		}
		if v <= 0 || v > 0x8000 || v&(v-1) != 0 {
			return c, fmt.Errorf("hotspot: %s is %d, not one bit of 16", name, v)
		}
		c.HasLineTable = uint16(v)
		break
	}
	return c, nil
}

// LineTableAt returns the address of the line number table of the
// ConstMethod at addr, given its header (at least c.Size bytes read
// there); false when it has none.
func (c ConstMethodLayout) LineTableAt(addr uint64, header []byte) (uint64, bool) {
	if uint64(len(header)) < c.Size {
		return 0, false
	}
	if binary.LittleEndian.Uint16(header[c.Flags:])&c.HasLineTable == 0 {
		return 0, false
	}
	return addr + c.Size + uint64(binary.LittleEndian.Uint16(header[c.CodeSize:])), true
}
