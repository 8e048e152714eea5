package nativeunwind

import (
	"errors"
	"fmt"
	"math"
)

// Call frame instructions (DW_CFA_*). The first three keep an operand in
// their low six bits.
const (
	cfaAdvanceLoc = 0x40
	cfaOffset     = 0x80
	cfaRestore    = 0xc0

	cfaNop                       = 0x00
	cfaSetLoc                    = 0x01
	cfaAdvanceLoc1               = 0x02
	cfaAdvanceLoc2               = 0x03
	cfaAdvanceLoc4               = 0x04
	cfaOffsetExtended            = 0x05
	cfaRestoreExtended           = 0x06
	cfaUndefined                 = 0x07
	cfaSameValue                 = 0x08
	cfaRegister                  = 0x09
	cfaRememberState             = 0x0a
	cfaRestoreState              = 0x0b
	cfaDefCFA                    = 0x0c
	cfaDefCFARegister            = 0x0d
	cfaDefCFAOffset              = 0x0e
	cfaDefCFAExpression          = 0x0f
	cfaExpression                = 0x10
	cfaOffsetExtendedSF          = 0x11
	cfaDefCFASF                  = 0x12
	cfaDefCFAOffsetSF            = 0x13
	cfaValOffset                 = 0x14
	cfaValOffsetSF               = 0x15
	cfaValExpression             = 0x16
	cfaMIPSAdvanceLoc8           = 0x1d
	cfaGNUArgsSize               = 0x2e
	cfaGNUNegativeOffsetExtended = 0x2f
)

// DWARF expression operations of the PLT's CFA expression.
const (
	opAnd   = 0x1a
	opShl   = 0x24
	opPlus  = 0x22
	opGe    = 0x2a
	opLit0  = 0x30
	opBreg0 = 0x70
)

// maxRememberDepth bounds DW_CFA_remember_state nesting; compilers nest
// one or two deep.
const maxRememberDepth = 64

// ruleKind is how a register of the caller is recovered.
type ruleKind uint8

// The register rules; a register no instruction mentions is unspecified.
const (
	ruleUnspecified ruleKind = iota
	ruleUndefined
	ruleSameValue
	ruleOffset    // saved at CFA+off
	ruleValOffset // is CFA+off
	ruleRegister  // in register off
	ruleExpression
	ruleValExpression
)

// regRule is the rule of one register.
type regRule struct {
	kind ruleKind
	off  int64
}

// cfaHow is the form of the CFA rule.
type cfaHow uint8

// The CFA rules.
const (
	cfaRegOffset cfaHow = iota // register reg + off
	cfaPLT                     // the PLT expression: pltOff, pltThreshold
	cfaExpr                    // any other expression
)

// state is the row of the unwind table under construction: the CFA rule
// and the rules of the two registers rows record.
type state struct {
	how          cfaHow
	pltThreshold uint8
	reg          uint64
	off, pltOff  int64
	fp, ra       regRule
}

// interp runs call frame programs. Its remember stack is reused across
// programs.
type interp struct {
	arch  *arch
	sec   *frameSection
	stack [maxRememberDepth]state
	depth int
}

var errLocInCIE = errors.New("location instruction in a CIE")

// initial runs a CIE's initial instructions, which must not move the
// location. bad reports that they could not be run.
func (in *interp) initial(r *reader, c *cie) (st state, bad bool) {
	in.depth = 0
	for r.more() {
		if _, adv := in.step(r, &st, c, nil, 0); adv {
			r.fail(errLocInCIE)
		}
	}
	return st, r.err != nil
}

// run executes an FDE's program and gives its rows to b. An instruction
// it cannot run makes the rest of the FDE's range CFAInvalid. lo is the
// file offset of the start of its range.
func (in *interp) run(c *cie, f *fde, lo uint64, b *builder) {
	delta := lo - f.vlo // file offset - address
	switch {
	case c.signal:
		b.span(lo, lo+(f.vhi-f.vlo), Row{CFA: CFASignal})
		return
	case c.initBad:
		b.span(lo, lo+(f.vhi-f.vlo), Row{CFA: CFAInvalid})
		return
	}
	st := c.init
	in.depth = 0
	r := reader{b: in.sec.data[:f.insnEnd], off: int(f.insnOff), order: in.sec.order}
	loc := f.vlo
	for r.more() {
		next, adv := in.step(&r, &st, c, &c.init, loc)
		if r.err != nil || !adv || next == loc {
			continue
		}
		next = min(next, f.vhi)
		in.emit(b, &st, loc, next, delta)
		if loc = next; loc == f.vhi {
			return
		}
	}
	if r.err != nil {
		b.span(loc+delta, f.vhi+delta, Row{CFA: CFAInvalid})
		return
	}
	in.emit(b, &st, loc, f.vhi, delta)
}

// step executes one instruction at location loc. When it moves the
// location it returns the new one (at least loc) and true. Errors stop r.
// init is the state the CIE's instructions left (nil while running them).
func (in *interp) step(r *reader, st *state, c *cie, init *state, loc uint64) (uint64, bool) {
	op := r.u8()
	switch op &^ 0x3f {
	case cfaAdvanceLoc:
		return in.advance(loc, uint64(op&0x3f), c), true
	case cfaOffset:
		in.setRule(st, c, uint64(op&0x3f), ruleOffset, int64(r.uleb())*c.dataAlign)
		return loc, false
	case cfaRestore:
		in.restore(st, c, init, uint64(op&0x3f))
		return loc, false
	}
	switch op {
	case cfaNop:
	case cfaSetLoc:
		v, indirect, err := in.sec.pointer(r, c.fdeEnc, c.addrSize)
		switch {
		case err != nil || indirect:
			r.fail(errors.New("DW_CFA_set_loc: unsupported address"))
		case v < loc:
			r.fail(errors.New("DW_CFA_set_loc moves backwards"))
		}
		return v, true
	case cfaAdvanceLoc1:
		return in.advance(loc, uint64(r.u8()), c), true
	case cfaAdvanceLoc2:
		return in.advance(loc, uint64(r.u16()), c), true
	case cfaAdvanceLoc4:
		return in.advance(loc, uint64(r.u32()), c), true
	case cfaMIPSAdvanceLoc8:
		return in.advance(loc, r.u64(), c), true
	case cfaOffsetExtended:
		reg := r.uleb()
		in.setRule(st, c, reg, ruleOffset, int64(r.uleb())*c.dataAlign)
	case cfaOffsetExtendedSF:
		reg := r.uleb()
		in.setRule(st, c, reg, ruleOffset, r.sleb()*c.dataAlign)
	case cfaGNUNegativeOffsetExtended:
		reg := r.uleb()
		in.setRule(st, c, reg, ruleOffset, -int64(r.uleb())*c.dataAlign)
	case cfaValOffset:
		reg := r.uleb()
		in.setRule(st, c, reg, ruleValOffset, int64(r.uleb())*c.dataAlign)
	case cfaValOffsetSF:
		reg := r.uleb()
		in.setRule(st, c, reg, ruleValOffset, r.sleb()*c.dataAlign)
	case cfaRestoreExtended:
		in.restore(st, c, init, r.uleb())
	case cfaUndefined:
		in.setRule(st, c, r.uleb(), ruleUndefined, 0)
	case cfaSameValue:
		in.setRule(st, c, r.uleb(), ruleSameValue, 0)
	case cfaRegister:
		reg := r.uleb()
		in.setRule(st, c, reg, ruleRegister, int64(r.uleb()))
	case cfaExpression:
		reg := r.uleb()
		r.block()
		in.setRule(st, c, reg, ruleExpression, 0)
	case cfaValExpression:
		reg := r.uleb()
		r.block()
		in.setRule(st, c, reg, ruleValExpression, 0)
	case cfaRememberState:
		if in.depth == len(in.stack) {
			r.fail(fmt.Errorf("DW_CFA_remember_state nested more than %d deep", len(in.stack)))
			break
		}
		in.stack[in.depth] = *st
		in.depth++
	case cfaRestoreState:
		if in.depth == 0 {
			r.fail(errors.New("DW_CFA_restore_state without DW_CFA_remember_state"))
			break
		}
		in.depth--
		*st = in.stack[in.depth]
	case cfaDefCFA:
		st.how, st.reg = cfaRegOffset, r.uleb()
		st.off = int64(r.uleb())
	case cfaDefCFASF:
		st.how, st.reg = cfaRegOffset, r.uleb()
		st.off = r.sleb() * c.dataAlign
	case cfaDefCFARegister:
		st.how, st.reg = cfaRegOffset, r.uleb()
	case cfaDefCFAOffset:
		// Like libgcc, this keeps the form of the rule.
		st.off = int64(r.uleb())
	case cfaDefCFAOffsetSF:
		st.off = r.sleb() * c.dataAlign
	case cfaDefCFAExpression:
		st.how = cfaExpr
		if off, thr, ok := in.arch.pltExpression(r.block()); ok {
			st.how, st.pltOff, st.pltThreshold = cfaPLT, off, thr
		}
	case cfaGNUArgsSize:
		r.uleb()
	default:
		r.fail(fmt.Errorf("unknown call frame instruction %#x", op))
	}
	return loc, false
}

// advance returns loc moved by delta code alignment units, saturating.
func (in *interp) advance(loc, delta uint64, c *cie) uint64 {
	d := delta * c.codeAlign
	if c.codeAlign != 0 && d/c.codeAlign != delta || loc+d < loc {
		return math.MaxUint64
	}
	return loc + d
}

// setRule sets the rule of reg when it is one that rows record.
func (in *interp) setRule(st *state, c *cie, reg uint64, kind ruleKind, off int64) {
	switch reg {
	case in.arch.fp:
		st.fp = regRule{kind, off}
	case c.raReg:
		st.ra = regRule{kind, off}
	}
}

// restore gives reg back the rule the CIE's instructions left.
func (in *interp) restore(st *state, c *cie, init *state, reg uint64) {
	var zero state
	if init == nil {
		init = &zero
	}
	switch reg {
	case in.arch.fp:
		st.fp = init.fp
	case c.raReg:
		st.ra = init.ra
	}
}

// emit gives b the row of st for the addresses [lo, hi), which are
// delta below their file offsets.
func (in *interp) emit(b *builder, st *state, lo, hi, delta uint64) {
	if i, ok := in.arch.memoIndex(st); ok {
		// Most states: their rule looked up by index, not interned.
		rule, ok := b.rules.memoized(i)
		if !ok {
			if rule, ok = b.rules.intern(in.arch.row(st)); !ok {
				b.span(lo+delta, hi+delta, in.arch.row(st)) // fails the build
				return
			}
			b.rules.memoize(i, rule)
		}
		b.spanRule(lo+delta, hi+delta, rule)
		return
	}
	r := in.arch.row(st)
	thr := uint64(st.pltThreshold)
	if r.CFA != CFAPLT || thr == uint64(in.arch.pltThreshold) && delta%16 == 0 {
		b.span(lo+delta, hi+delta, r)
		return
	}
	// Another linker's threshold, or file offsets not aligned like
	// addresses: spell the expression out, block by 16-byte block.
	below, above := r, r
	below.CFA, above.CFA = CFASP, CFASP
	above.CFAOffset += 8
	switch {
	case thr == 0:
		b.span(lo+delta, hi+delta, above)
		return
	case thr >= 16:
		b.span(lo+delta, hi+delta, below)
		return
	}
	for pc := lo; pc < hi && b.err == nil; {
		block := pc &^ 15
		split, next := min(block+thr, hi), min(block+16, hi)
		if next <= pc { // the block wraps around
			next = hi
		}
		if pc < split {
			b.span(pc+delta, split+delta, below)
			pc = split
		}
		b.span(pc+delta, next+delta, above)
		pc = next
	}
}

// Bounds of the states whose rules a ruleSet memoizes (arch.memoIndex):
// the CFA at a multiple of 8 below 2 KiB above the stack or frame pointer,
// the frame pointer not saved or at a multiple of 8 below 128 under the
// CFA.
const (
	memoCFAOffsets = 256
	memoFPOffsets  = 16
	memoStates     = 2 * memoCFAOffsets * memoFPOffsets
)

// memoIndex returns the index, below memoStates, of the common state st
// (see the bounds above), whose row is then a function of the index
// alone; false for another.
func (a *arch) memoIndex(st *state) (int, bool) {
	if st.ra.kind != ruleOffset || st.ra.off != a.raOffset || st.how != cfaRegOffset ||
		st.off < 0 || st.off%8 != 0 || st.off/8 >= memoCFAOffsets {
		return 0, false
	}
	i := int(st.off / 8)
	switch st.reg {
	case a.sp:
	case a.fp:
		i += memoCFAOffsets
	default:
		return 0, false
	}
	fp := 0
	switch st.fp.kind {
	case ruleUnspecified, ruleSameValue:
	case ruleOffset:
		if st.fp.off >= 0 || st.fp.off%8 != 0 || -st.fp.off/8 >= memoFPOffsets {
			return 0, false
		}
		fp = int(-st.fp.off / 8)
	default:
		return 0, false
	}
	return i*memoFPOffsets + fp, true
}

// row translates an unwinding state into a row; see Row and Build.
func (a *arch) row(st *state) Row {
	invalid := Row{CFA: CFAInvalid}
	switch {
	case st.ra.kind == ruleUndefined:
		return Row{CFA: CFAEndOfStack}
	case st.ra.kind != ruleOffset || st.ra.off != a.raOffset:
		return invalid
	}
	r := Row{RAOffset: int32(a.raOffset)}
	switch st.how {
	case cfaRegOffset:
		switch st.reg {
		case a.sp:
			r.CFA = CFASP
		case a.fp:
			r.CFA = CFAFP
		default:
			return invalid
		}
		if !fitsInt32(st.off) {
			return invalid
		}
		r.CFAOffset = int32(st.off)
	case cfaPLT:
		if !fitsInt32(st.pltOff + 8) {
			return invalid
		}
		r.CFA, r.CFAOffset = CFAPLT, int32(st.pltOff)
	default:
		return invalid
	}
	switch st.fp.kind {
	case ruleUnspecified, ruleSameValue:
	case ruleOffset:
		if st.fp.off != 0 && fitsInt32(st.fp.off) {
			r.FPOffset = int32(st.fp.off)
			break
		}
		fallthrough
	default:
		// Saved where rows cannot say (in a register, by an
		// expression, or lost): the caller's frame pointer is unknown.
		// Only a CFA computed from it makes the row useless; otherwise
		// the row leaves the frame pointer as it is.
		if r.CFA == CFAFP {
			return invalid
		}
	}
	return r
}

// pltExpression recognises the CFA expression linkers give lazy-binding
// PLT stubs: DW_OP_breg(sp) N; DW_OP_breg(pc) 0; DW_OP_lit15; DW_OP_and;
// DW_OP_lit<T>; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus, that is
// CFA = sp + N + 8*((pc & 15) >= T). GNU ld uses T = 11 for the plain PLT
// and other thresholds for its IBT and MPX variants (9 and 5 in binutils
// 2.40 on x86-64).
func (a *arch) pltExpression(e []byte) (off int64, threshold uint8, ok bool) {
	if a.sp > 31 || a.pc > 31 {
		return 0, 0, false
	}
	r := reader{b: e}
	if r.u8() != opBreg0+uint8(a.sp) {
		return 0, 0, false
	}
	off = r.sleb()
	if r.u8() != opBreg0+uint8(a.pc) || r.sleb() != 0 || r.u8() != opLit0+15 || r.u8() != opAnd {
		return 0, 0, false
	}
	lit := r.u8()
	if lit < opLit0 || lit > opLit0+31 {
		return 0, 0, false
	}
	if r.u8() != opGe || r.u8() != opLit0+3 || r.u8() != opShl || r.u8() != opPlus || r.more() || r.err != nil {
		return 0, 0, false
	}
	return off, lit - opLit0, true
}

func fitsInt32(v int64) bool { return v >= math.MinInt32 && v <= math.MaxInt32 }
