package nativeunwind

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/stackline-dev/stackline/internal/keysort"
)

// frameSection is one .eh_frame or .debug_frame section.
type frameSection struct {
	name  string // for errors
	data  []byte
	addr  uint64 // the section's address, for pc- and data-relative pointers
	debug bool   // .debug_frame rather than .eh_frame
	order binary.ByteOrder
	// ptrSize is the size of an absolute pointer (the ELF class).
	ptrSize int
	// hdr is the .eh_frame_hdr section of an .eh_frame, at hdrAddr,
	// when the build is of ranges.
	hdr     []byte
	hdrAddr uint64
}

// cie is a parsed Common Information Entry.
type cie struct {
	codeAlign uint64
	dataAlign int64
	raReg     uint64 // the return address column
	fdeEnc    uint8  // how FDE addresses are encoded
	addrSize  uint8  // of .debug_frame addresses
	hasAug    bool   // 'z': FDEs carry augmentation data
	signal    bool   // 'S': FDEs describe signal trampolines
	// init is the state after the initial instructions; initBad says they
	// could not be run, so the CIE's FDEs get CFAInvalid rows.
	init    state
	initBad bool
}

// fde is an FDE's header: the address range it covers, in the file's
// virtual addresses, the executable segment that holds it (which gives
// its file offsets: see lo), its CIE and where its instructions are in
// the section.
type fde struct {
	vlo, vhi         uint64
	seg              uint32 // index in the file's segments
	cie              int32
	insnOff, insnEnd uint32
}

// lo returns the file offset of f's start, in the segments segs.
func (f *fde) lo(segs segments) uint64 { return segs[f.seg].offset(f.vlo) }

// Pointer encodings (DW_EH_PE_*): a format in the low four bits, how it is
// applied in the next three, and an indirection flag.
const (
	peAbsptr  = 0x00
	peULEB128 = 0x01
	peUData2  = 0x02
	peUData4  = 0x03
	peUData8  = 0x04
	peSLEB128 = 0x09
	peSData2  = 0x0a
	peSData4  = 0x0b
	peSData8  = 0x0c

	pePCRel   = 0x10
	peTextRel = 0x20
	peDataRel = 0x30
	peFuncRel = 0x40
	peAligned = 0x50

	peIndirect = 0x80
	peOmit     = 0xff
)

// errUnsupportedPointer says an FDE's address uses an encoding that cannot
// be resolved from the file alone; the FDE is skipped.
var errUnsupportedPointer = errors.New("unsupported pointer encoding")

// frameParser walks one section, parsing CIEs as FDEs refer to them, and
// runs the FDEs' programs. Its slices, map and interpreter are the
// Builder's, kept from one section to the next.
type frameParser struct {
	sec     *frameSection
	arch    *arch
	opts    *Options
	segs    segments
	ranges  rangeSet
	covered coverage

	cies     []cie
	cieIndex map[uint64]int32 // section offset → index in cies
	fdes     []fde
	keys     *keysort.Buffer // for sorting fdes

	interp *interp
	rules  *ruleSet // of the rows
	// kept is what the builds of a kept file keep of the section (see
	// Builder.Keep), nil for others: its CIEs and the samples of its
	// .eh_frame_hdr table.
	kept *keptFrames
}

// sectionRows returns the rows of one .eh_frame or .debug_frame section,
// sorted, with cfaGap rows where no FDE covers the addresses, in dst[:0].
// FDEs whose ranges are all covered (by the rows of sources preferred to
// this one) are left out. The section is read in place: FDE headers are
// decoded one after the other and only their ranges and where their
// programs are kept (to run them in address order, which the section's
// need not be), CIEs are decoded once, when an FDE first refers to them.
func (bs *buildState) sectionRows(sec *frameSection, covered coverage, dst []uint64, kept *keptFrames) ([]uint64, error) {
	s := bs.scratch
	p := &frameParser{sec: sec, arch: bs.arch, opts: bs.opts, segs: bs.segs, ranges: bs.ranges, covered: covered,
		fdes: s.fdes[:0], keys: &s.keys, interp: &s.interp, rules: &s.rules, kept: kept}
	if kept != nil {
		// The CIEs parsed by the builds before, which this one adds
		// to.
		p.cies, p.cieIndex = kept.cies, kept.cieIndex
	} else {
		if s.cieIndex == nil {
			s.cieIndex = make(map[uint64]int32)
		}
		clear(s.cieIndex)
		p.cies, p.cieIndex = s.cies[:0], s.cieIndex
	}
	p.interp.arch = bs.arch
	p.interp.sec = sec
	defer func() {
		if kept != nil {
			kept.cies = p.cies
		} else {
			s.cies = p.cies[:0]
		}
		s.fdes = p.fdes[:0]
		p.interp.sec = nil
	}()
	walk := p.walk
	if idx, ok := p.index(); ok {
		walk = func() error { return p.walkIndexed(idx) }
	}
	if err := walk(); err != nil {
		return dst, fmt.Errorf("%s: %w", sec.name, err)
	}
	rows, err := p.run(dst)
	if err != nil {
		return rows, fmt.Errorf("%s: %w", sec.name, err)
	}
	return rows, nil
}

// walk reads the headers of all entries, collecting the FDEs that cover
// executable code.
func (p *frameParser) walk() error {
	if len(p.ranges) == 0 {
		p.fdes = slices.Grow(p.fdes[:0], min(p.countFDEs(), p.opts.MaxRows))
	}
	for off := 0; off < len(p.sec.data); {
		next, done, err := p.entry(off)
		if err != nil || done {
			return err
		}
		off = next
	}
	return nil
}

// entry reads the header of the entry at off, collecting it if it is an
// FDE that covers executable code, and returns the offset of the next
// entry; done says it was the terminator of an .eh_frame.
func (p *frameParser) entry(off int) (next int, done bool, err error) {
	data := p.sec.data
	r := reader{b: data, off: off, order: p.sec.order}
	length := uint64(r.u32())
	idSize := uint64(4)
	switch {
	case r.err != nil:
		return 0, false, fmt.Errorf("%w: entry at %#x: %w", ErrMalformed, off, r.err)
	case length == 0:
		return r.off, !p.sec.debug, nil
	case length == 0xffffffff:
		length, idSize = r.u64(), 8
	case length >= 0xfffffff0:
		return 0, false, fmt.Errorf("%w: entry at %#x: reserved length %#x", ErrMalformed, off, length)
	}
	if r.err != nil || length > uint64(len(data)-r.off) || length < idSize {
		return 0, false, fmt.Errorf("%w: entry at %#x: length %#x does not fit", ErrMalformed, off, length)
	}
	end := r.off + int(length)
	r.b = data[:end]
	idOff := r.off
	id := r.u32n(idSize)
	if !p.isCIE(id, idSize) {
		if err := p.addFDE(&r, uint64(idOff), id, off); err != nil {
			return 0, false, err
		}
	}
	return end, false, nil
}

// countFDEs returns how many FDEs the section has, reading only the
// entries' lengths and ids, so that the FDE index is allocated once. It
// stops at the first malformed entry, which walk reports.
func (p *frameParser) countFDEs() int {
	data := p.sec.data
	n := 0
	for off := 0; off < len(data); {
		r := reader{b: data, off: off, order: p.sec.order}
		length := uint64(r.u32())
		idSize := uint64(4)
		switch {
		case r.err != nil || length >= 0xfffffff0 && length != 0xffffffff:
			return n
		case length == 0:
			if !p.sec.debug {
				return n
			}
			off = r.off
			continue
		case length == 0xffffffff:
			length, idSize = r.u64(), 8
		}
		if r.err != nil || length > uint64(len(data)-r.off) || length < idSize {
			return n
		}
		end := r.off + int(length)
		if !p.isCIE(r.u32n(idSize), idSize) {
			n++
		}
		off = end
	}
	return n
}

// u32n reads a 4- or 8-byte unsigned number.
func (r *reader) u32n(size uint64) uint64 {
	if size == 8 {
		return r.u64()
	}
	return uint64(r.u32())
}

// isCIE reports whether an entry's id field marks a CIE.
func (p *frameParser) isCIE(id, idSize uint64) bool {
	if !p.sec.debug {
		return id == 0
	}
	if idSize == 8 {
		return id == ^uint64(0)
	}
	return id == 0xffffffff
}

// addFDE parses the header of the FDE whose id field, at idOff, holds id.
func (p *frameParser) addFDE(r *reader, idOff, id uint64, off int) error {
	cieOff := id // .debug_frame: an offset in the section
	if !p.sec.debug {
		// .eh_frame: a distance back from the id field.
		if id > idOff {
			return fmt.Errorf("%w: FDE at %#x: CIE pointer %#x out of range", ErrMalformed, off, id)
		}
		cieOff = idOff - id
	}
	ci, err := p.cie(cieOff)
	if err != nil {
		return fmt.Errorf("FDE at %#x: %w", off, err)
	}
	c := &p.cies[ci]
	lo, indirect, perr := p.sec.pointer(r, c.fdeEnc, c.addrSize)
	var n uint64
	if p.sec.debug {
		n = p.sec.value(r, 0, c.addrSize)
	} else {
		n = p.sec.value(r, c.fdeEnc&0x0f, c.addrSize)
	}
	if c.hasAug {
		r.take(r.uleb())
	}
	if r.err != nil {
		return fmt.Errorf("%w: FDE at %#x: %w", ErrMalformed, off, r.err)
	}
	hi := lo + n
	if perr != nil || indirect || n == 0 || hi < lo {
		return nil // nothing usable
	}
	si, ok := p.segs.index(lo)
	if !ok {
		return nil // not code
	}
	seg := p.segs[si]
	hi = min(hi, seg.vaddr+seg.size)
	if !p.ranges.meets(seg.offset(lo), seg.offset(hi)) || p.covered.covers(seg.offset(lo), seg.offset(hi)) {
		return nil
	}
	if len(p.fdes) >= p.opts.MaxRows {
		// Each FDE makes a row at least.
		return fmt.Errorf("%w: more than %d FDEs", ErrTooLarge, p.opts.MaxRows)
	}
	p.fdes = append(p.fdes, fde{
		vlo: lo, vhi: hi, seg: uint32(si),
		cie:     ci,
		insnOff: uint32(r.off), insnEnd: uint32(len(r.b)),
	})
	return nil
}

// cie returns the index of the CIE at off, parsing it on first use.
func (p *frameParser) cie(off uint64) (int32, error) {
	if i, ok := p.cieIndex[off]; ok {
		return i, nil
	}
	c, err := p.parseCIE(off)
	if err != nil {
		return 0, fmt.Errorf("%w: CIE at %#x: %w", ErrMalformed, off, err)
	}
	if len(p.cies) >= p.opts.MaxCIEs {
		return 0, fmt.Errorf("%w: more than %d CIEs", ErrTooLarge, p.opts.MaxCIEs)
	}
	i := int32(len(p.cies))
	p.cies = append(p.cies, c)
	p.cieIndex[off] = i
	return i, nil
}

// parseCIE parses the CIE at off and runs its initial instructions.
func (p *frameParser) parseCIE(off uint64) (cie, error) {
	data := p.sec.data
	if off > uint64(len(data)) {
		return cie{}, errors.New("out of range")
	}
	r := reader{b: data, off: int(off), order: p.sec.order}
	length := uint64(r.u32())
	idSize := uint64(4)
	if length == 0xffffffff {
		length, idSize = r.u64(), 8
	}
	if r.err != nil || length > uint64(len(data)-r.off) || length < idSize {
		return cie{}, errors.New("bad length")
	}
	r.b = data[:r.off+int(length)]
	if id := r.u32n(idSize); !p.isCIE(id, idSize) {
		return cie{}, errors.New("not a CIE")
	}
	c := cie{addrSize: uint8(p.sec.ptrSize)}
	version := r.u8()
	switch {
	case version == 1 || version == 3:
	case version == 4 && p.sec.debug:
	default:
		return cie{}, fmt.Errorf("unsupported version %d", version)
	}
	aug := r.cstring()
	if version == 4 {
		c.addrSize = r.u8()
		if segSize := r.u8(); segSize != 0 {
			return cie{}, fmt.Errorf("segment selectors of %d bytes", segSize)
		}
		if c.addrSize != 4 && c.addrSize != 8 {
			return cie{}, fmt.Errorf("address size %d", c.addrSize)
		}
	}
	c.codeAlign = r.uleb()
	c.dataAlign = r.sleb()
	if version == 1 {
		c.raReg = uint64(r.u8())
	} else {
		c.raReg = r.uleb()
	}
	if err := p.augmentation(&r, &c, aug); err != nil {
		return cie{}, err
	}
	if r.err != nil {
		return cie{}, r.err
	}
	c.init, c.initBad = p.interp.initial(&r, &c)
	return c, nil
}

// augmentation reads the CIE's augmentation data as its augmentation
// string describes it.
func (p *frameParser) augmentation(r *reader, c *cie, aug []byte) error {
	if len(aug) == 0 {
		return nil
	}
	if aug[0] != 'z' {
		return fmt.Errorf("unsupported augmentation %q", aug)
	}
	c.hasAug = true
	n := r.uleb()
	if n > uint64(len(r.b)-r.off) {
		r.fail(errTruncated)
		return nil
	}
	end := r.off + int(n)
	d := reader{b: r.b[:end], off: r.off, order: r.order}
parse:
	for _, ch := range aug[1:] {
		switch ch {
		case 'L': // the LSDA's encoding
			d.u8()
		case 'R':
			c.fdeEnc = d.u8()
		case 'P': // the personality routine's encoding and address
			p.sec.pointer(&d, d.u8(), c.addrSize)
		case 'S':
			c.signal = true
		case 'B': // AArch64 BTI; nothing to read
		default:
			// Unknown: its data cannot be skipped, but the length
			// says where the instructions start.
			break parse
		}
	}
	if d.err != nil {
		return fmt.Errorf("augmentation data %q: %w", aug, d.err)
	}
	r.off = end
	return nil
}

// pointer reads an address encoded as enc. indirect says the value is the
// address of the address, which only the loaded program holds.
func (s *frameSection) pointer(r *reader, enc, addrSize uint8) (v uint64, indirect bool, err error) {
	if s.debug {
		return s.value(r, peAbsptr, addrSize), false, nil
	}
	if enc == peOmit {
		return 0, false, errUnsupportedPointer
	}
	if enc&0x70 == peAligned {
		pos := s.addr + uint64(r.off)
		size := uint64(addrSize)
		r.take((size - pos%size) % size)
		return s.value(r, peAbsptr, addrSize), enc&peIndirect != 0, nil
	}
	pos := s.addr + uint64(r.off)
	v = s.value(r, enc&0x0f, addrSize)
	switch enc & 0x70 {
	case 0:
	case pePCRel:
		v += pos
	case peDataRel:
		v += s.addr
	default: // textrel and funcrel need more than the section
		return 0, false, errUnsupportedPointer
	}
	return v, enc&peIndirect != 0, nil
}

// value reads a number in one of the pointer formats, sign-extended for
// the signed ones. An unknown format stops the reader.
func (s *frameSection) value(r *reader, format, addrSize uint8) uint64 {
	switch format {
	case peAbsptr:
		if addrSize == 4 {
			return uint64(r.u32())
		}
		return r.u64()
	case peULEB128:
		return r.uleb()
	case peUData2:
		return uint64(r.u16())
	case peUData4:
		return uint64(r.u32())
	case peUData8, peSData8:
		return r.u64()
	case peSLEB128:
		return uint64(r.sleb())
	case peSData2:
		return uint64(int64(int16(r.u16())))
	case peSData4:
		return uint64(int64(int32(r.u32())))
	}
	r.fail(fmt.Errorf("unknown pointer format %#x", format))
	return 0
}

// run executes the FDEs in address order and returns the rows, in
// dst[:0].
func (p *frameParser) run(dst []uint64) ([]uint64, error) {
	fdes := p.fdes
	// walk appends FDEs in section order, so by increasing insnOff: a
	// stable sort by address orders them as cmpFDE does. The radix sort
	// of keysort is several times faster than a comparison sort of the
	// FDEs; it declines only for addresses too large to pack.
	segs := p.segs
	if !keysort.Stable(fdes, func(f *fde) uint64 { return f.lo(segs) }, p.keys) {
		slices.SortFunc(fdes, func(a, b fde) int { return cmpFDE(segs, &a, &b) })
	}
	// Compilers spend about three bytes of instructions per row.
	estimate := 0
	for i := range fdes {
		estimate += int(fdes[i].insnEnd-fdes[i].insnOff)/3 + 1
	}
	b := newBuilder(dst, p.rules, p.opts.MaxRows, estimate)
	for i := range fdes {
		f := &fdes[i]
		lo := f.lo(segs)
		if !b.begin(lo, lo+(f.vhi-f.vlo)) {
			continue
		}
		p.interp.run(&p.cies[f.cie], f, lo, &b)
		b.finish()
		if b.err != nil {
			return b.rows, b.err
		}
	}
	return b.rows, nil
}

// cmpFDE orders FDEs by address, then by their place in the section.
func cmpFDE(segs segments, a, b *fde) int {
	if c := cmp.Compare(a.lo(segs), b.lo(segs)); c != 0 {
		return c
	}
	return cmp.Compare(a.insnOff, b.insnOff)
}
