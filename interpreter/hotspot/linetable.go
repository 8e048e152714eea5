package hotspot

import (
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
