package nativeunwind

import (
	"cmp"
	"debug/elf"
	"errors"
	"fmt"
	"slices"

	"github.com/stackline-dev/stackline/internal/elffile"
)

// Range is the range [Lo, Hi) of file offsets.
type Range struct{ Lo, Hi uint64 }

// Regional reports whether f's table can be built by ranges of its code
// (BuildRanges) at a cost that follows the ranges: its call frame
// information is in .eh_frame or .gopclntab, whose entries can be told
// apart by address without running them. A file that has neither (only
// .debug_frame, or no section headers) is built whole.
func Regional(f *elffile.File) bool {
	ef := f.ELF
	return withData(ef, ".eh_frame") != nil || withData(ef, ".gopclntab") != nil
}

// CodeEnd returns the end of the file offsets of f's executable segments:
// the table of f has no row past it but, at most, one that ends the last
// segment's code.
func CodeEnd(f *elffile.File) uint64 {
	var end uint64
	for _, s := range appendExecSegments(nil, f.ELF) {
		end = max(end, s.off+s.size)
	}
	return end
}

// BuildRanges returns the rows of f's table (see Build) at the file
// offsets of ranges, which must be sorted and disjoint, in b's memory as
// Builder.Build returns them: for each range, a row at its start with the
// rule of the whole table there (none when no row of the table is at or
// before it), then the table's rows inside it. The rows of ranges that
// together cover every offset, concatenated and with a row dropped where
// the one before it has the same rule, are exactly the rows of Build.
//
// Only what the ranges need is run: the call frame programs of the FDEs
// whose address ranges meet them, and the pc-sp tables of the Go
// functions that do. The FDE headers of a section are still all read, to
// find those.
func (b *Builder) BuildRanges(f, debug *elffile.File, opts Options, ranges []Range) (*Table, error) {
	if len(ranges) == 0 {
		return nil, errors.New("nativeunwind: no ranges to build")
	}
	for i, r := range ranges {
		if r.Hi <= r.Lo || i > 0 && r.Lo < ranges[i-1].Hi {
			return nil, fmt.Errorf("nativeunwind: ranges not sorted and disjoint at %#x-%#x", r.Lo, r.Hi)
		}
	}
	b.ranges = append(b.ranges[:0], ranges...)
	defer func() { b.ranges = b.ranges[:0] }()
	if k := b.kept[f.OSFile()]; k != nil {
		defer k.release()
	}
	return b.Build(f, debug, opts)
}

// rangeSet is the ranges a build is limited to; empty means all.
type rangeSet []Range

// meets reports whether [lo, hi) meets one of the ranges (always when
// there are none).
func (rs rangeSet) meets(lo, hi uint64) bool {
	if len(rs) == 0 {
		return true
	}
	// The first range that ends after lo must start before hi.
	i, _ := slices.BinarySearchFunc(rs, lo, func(r Range, lo uint64) int { return cmp.Compare(r.Hi, lo+1) })
	return i < len(rs) && rs[i].Lo < hi
}

// holdsEntry reports whether the ELF entry point of ef, in its
// executable segments segs, is in the ranges (always when there are
// none): only then are its rows built (see markEntry).
func (rs rangeSet) holdsEntry(ef *elf.File, segs segments) bool {
	if len(rs) == 0 {
		return true
	}
	seg, ok := segs.find(ef.Entry)
	if !ok {
		return false
	}
	off := seg.offset(ef.Entry)
	return rs.meets(off, off+1)
}

// size returns the bytes the ranges cover, up to limit.
func (rs rangeSet) size(limit uint64) uint64 {
	var n uint64
	for _, r := range rs {
		n += min(r.Hi, limit) - min(r.Lo, limit)
	}
	return n
}

// cut appends to dst[:0] the rows of the whole table rows (packed,
// sorted) that BuildRanges returns for the ranges: for each, the rule in
// effect at its start, then the rows inside it.
func (rs rangeSet) cut(dst, rows []uint64) []uint64 {
	out := dst[:0]
	for _, r := range rs {
		i, found := slices.BinarySearchFunc(rows, r.Lo, func(p uint64, a uint64) int { return cmp.Compare(rowAddr(p), a) })
		if !found && i > 0 {
			out = append(out, packRow(r.Lo, rowRule(rows[i-1])))
		}
		for ; i < len(rows) && rowAddr(rows[i]) < r.Hi; i++ {
			out = append(out, rows[i])
		}
	}
	return out
}

// goFuncSpan returns the indices [from, to) of the Go functions of tab,
// sorted by entry, that may meet the ranges: all of them unless the file
// has one executable segment, where entries and file offsets grow alike.
// blocks, when not nil, is where the builds of a kept file keep samples
// of its functions' file offsets (see searchBlocks), which narrow the
// searches to a page of the function table; they are taken there when
// *blocks is nil.
func goFuncSpan(n int, entry func(int) uint64, segs segments, rs rangeSet, blocks *[]uint64) (from, to int) {
	if len(rs) == 0 || len(segs) != 1 {
		return 0, n
	}
	seg := segs[0]
	off := func(i int) uint64 {
		e := entry(i)
		if e < seg.vaddr {
			return 0
		}
		return seg.offset(e)
	}
	var sampled []uint64
	if blocks != nil {
		if *blocks == nil {
			*blocks = searchBlocks(n, off)
		}
		sampled = *blocks
	}
	lo, hi := rs[0].Lo, rs[len(rs)-1].Hi
	// The last function starting at or before lo, and the first at or
	// after hi.
	from = max(searchFirst(n, off, sampled, lo+1)-1, 0)
	to = searchFirst(n, off, sampled, hi)
	return from, to
}
