package nativeunwind

import (
	"errors"
	"slices"
)

// ehIndex is the binary search table of an .eh_frame_hdr section: for
// each FDE of .eh_frame, sorted by it, the address its range starts at
// and the FDE's own address. A build of ranges (BuildRanges) reads the
// headers of the FDEs it finds there instead of every entry of the
// section.
type ehIndex struct {
	// table holds n entries of two 4-byte numbers relative to base, the
	// section's address (DW_EH_PE_datarel|DW_EH_PE_sdata4, the encoding
	// linkers write; others are not used).
	table []byte
	base  uint64
	n     int
	// blocks samples the entries' starts (see searchBlocks), for a
	// kept file (nil: none).
	blocks []uint64
}

// tableEncoding is the only .eh_frame_hdr table encoding used.
const tableEncoding = peDataRel | peSData4

// errBadIndex says .eh_frame_hdr does not describe .eh_frame: the
// section's entries are all read instead.
var errBadIndex = errors.New("bad .eh_frame_hdr")

// index returns the .eh_frame_hdr table of the section, when the build is
// of ranges and the section has a usable one. For a kept file, its
// header is read once (kept.hdrOff, hdrN): the builds after touch only
// the pages of the table they search.
func (p *frameParser) index() (ehIndex, bool) {
	s := p.sec
	h := s.hdr
	if len(p.ranges) == 0 || s.debug || len(h) < 4 {
		return ehIndex{}, false
	}
	k := p.kept
	if k == nil || k.hdrOff == 0 {
		off, n, ok := p.indexTable()
		if !ok {
			return ehIndex{}, false
		}
		x := ehIndex{table: h[off : off+8*n], base: s.hdrAddr, n: n}
		if k == nil {
			return x, true
		}
		k.hdrOff, k.hdrN = off, n
		k.hdrBlocks = searchBlocks(n, x.starts(p))
	}
	if k.hdrOff+8*k.hdrN > len(h) {
		return ehIndex{}, false
	}
	return ehIndex{table: h[k.hdrOff : k.hdrOff+8*k.hdrN], base: s.hdrAddr, n: k.hdrN, blocks: k.hdrBlocks}, true
}

// indexTable reads the header of the section's .eh_frame_hdr and returns
// where its table starts and its number of entries; false when it is not
// one this package reads.
func (p *frameParser) indexTable() (off, n int, ok bool) {
	s := p.sec
	h := s.hdr
	if h[0] != 1 || h[3] != tableEncoding {
		return 0, 0, false
	}
	hs := frameSection{addr: s.hdrAddr, order: s.order, ptrSize: s.ptrSize}
	r := reader{b: h, off: 4, order: s.order}
	ehPtr, ind1, err1 := hs.pointer(&r, h[1], uint8(s.ptrSize))
	count, ind2, err2 := hs.pointer(&r, h[2], uint8(s.ptrSize))
	if r.err != nil || err1 != nil || err2 != nil || ind1 || ind2 || ehPtr != s.addr || count > uint64(len(h)-r.off)/8 {
		return 0, 0, false
	}
	return r.off, int(count), true
}

// search returns the first entry of x whose range starts at v or after
// (x.n when none does).
func (x ehIndex) search(p *frameParser, v uint64) int {
	return searchFirst(x.n, x.starts(p), x.blocks, v)
}

// starts returns the key x is sorted by: the start of entry i's range.
func (x ehIndex) starts(p *frameParser) func(i int) uint64 {
	return func(i int) uint64 { loc, _ := x.at(p, i); return loc }
}

// at returns entry i of x: the start of an FDE's range and the FDE's
// address.
func (x ehIndex) at(p *frameParser, i int) (loc, fde uint64) {
	o := p.sec.order
	loc = x.base + uint64(int64(int32(o.Uint32(x.table[8*i:]))))
	fde = x.base + uint64(int64(int32(o.Uint32(x.table[8*i+4:]))))
	return loc, fde
}

// walkIndexed collects the FDEs that meet the ranges of the build, found
// through x: those whose ranges start in them, and those before that
// reach into them, back to the first that does not. When x turns out not
// to describe the section, it falls back to walk.
func (p *frameParser) walkIndexed(x ehIndex) error {
	err := p.indexed(x)
	if errors.Is(err, errBadIndex) {
		p.fdes = p.fdes[:0]
		return p.walk()
	}
	// run sorts them stably by address: first in section order, as walk
	// collects them, so that FDEs of the same address keep it.
	slices.SortFunc(p.fdes, func(a, b fde) int { return int(a.insnOff) - int(b.insnOff) })
	return err
}

func (p *frameParser) indexed(x ehIndex) error {
	// The entries whose ranges start in the ranges of the build, as
	// intervals of indices, in order.
	type span struct{ from, to int }
	var spans []span
	for _, r := range p.ranges {
		for _, seg := range p.segs {
			lo, hi := max(r.Lo, seg.off), min(r.Hi, seg.off+seg.size)
			if lo >= hi {
				continue
			}
			vlo, vhi := seg.vaddr+(lo-seg.off), seg.vaddr+(hi-seg.off)
			from, to := x.search(p, vlo), x.search(p, vhi)
			spans = append(spans, span{from, to})
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.from - b.from })
	done := 0 // entries below are read
	for _, sp := range spans {
		// Back from the span's start while the FDEs reach into the
		// ranges.
		for i := sp.from - 1; i >= done; i-- {
			n := len(p.fdes)
			if err := p.indexedEntry(x, i); err != nil {
				return err
			}
			if len(p.fdes) == n {
				break
			}
		}
		for i := max(sp.from, done); i < sp.to; i++ {
			if err := p.indexedEntry(x, i); err != nil {
				return err
			}
		}
		done = max(done, sp.to)
	}
	return nil
}

// indexedEntry reads the FDE of entry i of x.
func (p *frameParser) indexedEntry(x ehIndex, i int) error {
	_, fdeAddr := x.at(p, i)
	off := fdeAddr - p.sec.addr
	if fdeAddr < p.sec.addr || off >= uint64(len(p.sec.data)) {
		return errBadIndex
	}
	_, done, err := p.entry(int(off))
	if done {
		return errBadIndex
	}
	return err
}
