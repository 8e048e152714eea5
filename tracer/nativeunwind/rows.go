package nativeunwind

import (
	"cmp"
	"debug/elf"
	"fmt"
	"math"
	"slices"
)

// cfaGap marks, while a table is built, addresses that no function of a
// source covers: another source may fill them. Build turns the gaps left
// into CFAInvalid rows.
const cfaGap CFAKind = 0xff

// sameRule reports whether two rows say the same (everything but Addr).
func sameRule(a, b Row) bool {
	return a.CFA == b.CFA && a.CFAOffset == b.CFAOffset && a.FPOffset == b.FPOffset && a.RAOffset == b.RAOffset
}

// builder collects the rows of one source in address order, merging
// equal neighbours. Rows come in ranges (an FDE, a Go function): begin a
// range, give it spans, finish it. A range that starts below the end of
// the ranges before it is clipped to start there.
type builder struct {
	rows []Row
	max  int
	err  error

	lo, hi uint64 // the current range
	last   uint64 // end of its last span
	end    uint64 // end of the earlier ranges
}

// newBuilder returns a builder of at most maxRows rows that appends them
// to dst[:0], grown to capHint rows first.
func newBuilder(dst []Row, maxRows, capHint int) builder {
	return builder{max: maxRows, rows: slices.Grow(dst[:0], max(min(capHint, maxRows), 0)+1)}
}

// begin starts the range [lo, hi) of file offsets; false means nothing of
// it is left to add.
func (b *builder) begin(lo, hi uint64) bool {
	lo = max(lo, b.end)
	if b.err != nil || hi <= lo {
		return false
	}
	b.lo, b.hi, b.last = lo, hi, lo
	return true
}

// span sets the rule r for the offsets [lo, hi) of the current range.
// Spans come in address order.
func (b *builder) span(lo, hi uint64, r Row) {
	lo, hi = max(lo, b.lo), min(hi, b.hi)
	if lo >= hi || lo < b.last {
		return
	}
	if lo > b.last {
		// A hole inside the range: nothing said how to unwind there.
		b.add(Row{Addr: b.last, CFA: CFAInvalid})
	}
	r.Addr = lo
	b.add(r)
	b.last = hi
}

// finish ends the current range with a gap, which the next range replaces
// when it starts right there.
func (b *builder) finish() {
	if b.last > b.lo {
		b.add(Row{Addr: b.last, CFA: cfaGap})
		b.end = b.last
	}
}

// add appends r, which replaces a row at the same address, unless the row
// before says the same.
func (b *builder) add(r Row) {
	n := len(b.rows)
	if n > 0 && b.rows[n-1].Addr == r.Addr {
		n--
		b.rows = b.rows[:n]
	}
	if n > 0 && sameRule(b.rows[n-1], r) {
		return
	}
	if n >= b.max {
		if b.err == nil {
			b.err = fmt.Errorf("%w: more than %d rows", ErrTooLarge, b.max)
		}
		return
	}
	b.rows = append(b.rows, r)
}

// overlay returns the rows of top where top has rules and those of bottom
// in top's gaps. When both have rows, they are merged in top's memory
// (grown if it has no room for len(bottom) more rows), which must not
// overlap bottom's: top's rows are moved to its end and merged from there
// into its start, where a row is written only once the rows it overwrites
// have been read.
func overlay(top, bottom []Row, maxRows int) ([]Row, error) {
	if len(bottom) == 0 {
		return top, nil
	}
	if len(top) == 0 {
		return bottom, nil
	}
	n, m := len(top), len(bottom)
	buf := slices.Grow(top, m)[:n+m]
	copy(buf[m:], buf[:n])
	top = buf[m:]
	// After reading i rows of top and j of bottom, at most i+j rows are
	// written, all below top[i], which is buf[m+i], since j <= m.
	b := builder{rows: buf[:0], max: maxRows}
	t, u := Row{CFA: cfaGap}, Row{CFA: cfaGap} // the rules in effect
	for i, j := 0, 0; i < len(top) || j < len(bottom); {
		var addr uint64
		switch {
		case j == len(bottom) || i < len(top) && top[i].Addr <= bottom[j].Addr:
			addr = top[i].Addr
		default:
			addr = bottom[j].Addr
		}
		if i < len(top) && top[i].Addr == addr {
			t = top[i]
			i++
		}
		if j < len(bottom) && bottom[j].Addr == addr {
			u = bottom[j]
			j++
		}
		r := t
		if r.CFA == cfaGap {
			r = u
		}
		r.Addr = addr
		b.add(r)
	}
	return b.rows, b.err
}

// coverage is the set of file offsets that some rows have rules for, as
// the sorted list of the holes between them.
type coverage struct {
	holes []hole
}

// hole is a range [lo, hi) of file offsets without rules.
type hole struct{ lo, hi uint64 }

// newCoverage returns the coverage of rows (sorted, ending in a gap), its
// holes in dst[:0].
func newCoverage(dst []hole, rows []Row) coverage {
	if len(rows) == 0 {
		return coverage{holes: append(dst[:0], hole{0, math.MaxUint64})}
	}
	c := coverage{holes: append(dst[:0], hole{0, rows[0].Addr})}
	for i, r := range rows {
		if r.CFA != cfaGap {
			continue
		}
		end := uint64(math.MaxUint64)
		if i+1 < len(rows) {
			end = rows[i+1].Addr
		}
		c.holes = append(c.holes, hole{r.Addr, end})
	}
	return c
}

// covers reports whether all of [lo, hi) has rules.
func (c coverage) covers(lo, hi uint64) bool {
	// The first hole that ends after lo must start at hi or later.
	i, _ := slices.BinarySearchFunc(c.holes, lo, func(h hole, lo uint64) int { return cmp.Compare(h.hi, lo+1) })
	return i == len(c.holes) || c.holes[i].lo >= hi
}

// finalize turns gaps into CFAInvalid rows, merging them with their
// neighbours, in place.
func finalize(rows []Row) []Row {
	out := rows[:0]
	for _, r := range rows {
		if r.CFA == cfaGap {
			r.CFA = CFAInvalid
		}
		if n := len(out); n > 0 && sameRule(out[n-1], r) {
			continue
		}
		out = append(out, r)
	}
	return out
}

// markEntry makes the ELF entry point the end of the stack when no call
// frame information covers it. The entry point is the outermost frame of
// a process by definition, but hand-written entry code often says nothing
// (the dynamic loader's _start, static musl binaries): without this mark an
// unwinder reaching it would report missing information instead of a
// complete stack.
func markEntry(rows []Row, ef *elf.File, segs segments) []Row {
	seg, ok := segs.find(ef.Entry)
	if !ok || ef.Entry == 0 {
		return rows
	}
	off := seg.offset(ef.Entry)
	i, found := slices.BinarySearchFunc(rows, off, func(r Row, a uint64) int { return cmp.Compare(r.Addr, a) })
	switch {
	case found && rows[i].CFA == CFAInvalid:
		rows[i] = Row{Addr: off, CFA: CFAEndOfStack}
	case !found && (i == 0 || rows[i-1].CFA == CFAInvalid):
		rows = slices.Insert(rows, i, Row{Addr: off, CFA: CFAEndOfStack})
		if i == len(rows)-1 {
			// Nothing after the entry point: end its rule at the
			// end of its segment.
			rows = append(rows, Row{Addr: seg.off + seg.size, CFA: CFAInvalid})
		}
	}
	return rows
}

// segment is the file part of an executable PT_LOAD segment: addresses
// [vaddr, vaddr+size) are file offsets [off, off+size).
type segment struct {
	vaddr, off, size uint64
}

// offset returns the file offset of an address of s.
func (s segment) offset(vaddr uint64) uint64 { return vaddr - s.vaddr + s.off }

// segments are a file's executable segments.
type segments []segment

// appendExecSegments appends the executable PT_LOAD segments of ef to
// segs.
func appendExecSegments(segs segments, ef *elf.File) segments {
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && p.Filesz > 0 && p.Vaddr+p.Filesz > p.Vaddr {
			segs = append(segs, segment{vaddr: p.Vaddr, off: p.Off, size: p.Filesz})
		}
	}
	return segs
}

// find returns the segment holding the address.
func (s segments) find(vaddr uint64) (segment, bool) {
	for _, seg := range s {
		if vaddr >= seg.vaddr && vaddr-seg.vaddr < seg.size {
			return seg, true
		}
	}
	return segment{}, false
}
