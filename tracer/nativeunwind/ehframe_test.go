package nativeunwind

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// frames assembles an .eh_frame or .debug_frame section for tests.
type frames struct {
	b     []byte
	debug bool
	addr  uint64 // the section's address
}

func uleb(v uint64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		if v >>= 7; v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func sleb(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

// entry appends an entry with a 32-bit length and returns its offset.
func (f *frames) entry(id uint32, body []byte) int {
	off := len(f.b)
	f.b = cat(f.b, u32(uint32(4+len(body))), u32(id), body)
	return off
}

// cie appends a CIE with the body (from the version on).
func (f *frames) cie(body []byte) int {
	if f.debug {
		return f.entry(0xffffffff, body)
	}
	return f.entry(0, body)
}

// fde appends an FDE of the CIE at cie with the body (from the address
// on).
func (f *frames) fde(cie int, body []byte) int {
	if f.debug {
		return f.entry(uint32(cie), body)
	}
	return f.entry(uint32(len(f.b)+4-cie), body)
}

// pcrel returns addr encoded pc-relative (sdata4) at the next FDE's
// address field.
func (f *frames) pcrel(addr uint64) []byte {
	return u32(uint32(addr - (f.addr + uint64(len(f.b)) + 8)))
}

// stdCIE is the usual x86-64 CIE: "zR" with pc-relative sdata4 addresses,
// CFA = rsp+8, return address at CFA-8, followed by insns.
func stdCIE(insns ...byte) []byte {
	return cat([]byte{1, 'z', 'R', 0}, uleb(1), sleb(-8), []byte{16}, uleb(1), []byte{0x1b, cfaDefCFA, 7, 8, cfaOffset | 16, 1}, insns)
}

// stdFDE appends an FDE of a stdCIE for [lo, lo+n).
func (f *frames) stdFDE(cie int, lo uint64, n uint32, insns ...byte) int {
	return f.fde(cie, cat(f.pcrel(lo), u32(n), uleb(0), insns))
}

// testSegs maps the addresses 0x1000-0x8000 to the same file offsets and
// 0x8000-0x10000 to offsets 0x400 higher.
var testSegs = segments{{vaddr: 0x1000, off: 0x1000, size: 0x7000}, {vaddr: 0x8000, off: 0x8400, size: 0x8000}}

// parse runs sectionRows on the section and finalizes the rows.
func (f *frames) parse(t testing.TB, opts Options) ([]Row, error) {
	t.Helper()
	return f.parseWith(t, &Builder{}, opts)
}

// parseWith is parse with the buffers of b.
func (f *frames) parseWith(t testing.TB, b *Builder, opts Options) ([]Row, error) {
	t.Helper()
	a, _ := archFor(elf.EM_X86_64)
	if err := opts.normalize(); err != nil {
		t.Fatal(err)
	}
	sec := &frameSection{name: "test", data: f.b, addr: f.addr, debug: f.debug, order: binary.LittleEndian, ptrSize: 8}
	bs := &buildState{arch: &a, opts: &opts, segs: testSegs, scratch: b}
	b.rules.reset()
	rows, err := bs.sectionRows(sec, newCoverage(nil, nil), b.layer, nil)
	b.layer = rows[:0]
	if err != nil {
		return nil, err
	}
	return unpackRows(&b.rules, finalize(rows)), nil
}

func sp(off, fp int32) Row  { return Row{CFA: CFASP, CFAOffset: off, FPOffset: fp, RAOffset: -8} }
func fpr(off, fp int32) Row { return Row{CFA: CFAFP, CFAOffset: off, FPOffset: fp, RAOffset: -8} }

var (
	invalid = Row{CFA: CFAInvalid}
	eos     = Row{CFA: CFAEndOfStack}
)

func at(addr uint64, r Row) Row {
	r.Addr = addr
	return r
}

func TestPrograms(t *testing.T) {
	pltExpr := func(lit byte) []byte {
		e := cat([]byte{opBreg0 + 7}, sleb(8), []byte{opBreg0 + 16, 0, opLit0 + 15, opAnd, opLit0 + lit, opGe, opLit0 + 3, opShl, opPlus})
		return cat([]byte{cfaDefCFAExpression}, uleb(uint64(len(e))), e)
	}
	// Where the instructions of the FDE start.
	insns := uint64(0x200000 + 8 + len(stdCIE()) + 17)
	remember := make([]byte, maxRememberDepth+1)
	for i := range remember {
		remember[i] = cfaRememberState
	}
	for _, c := range []struct {
		name  string
		insns []byte
		want  []Row
	}{
		{"empty", nil, []Row{at(0x1000, sp(8, 0)), at(0x1040, invalid)}},
		{"push rbp; mov rsp, rbp; leave", cat(
			[]byte{cfaAdvanceLoc | 1, cfaDefCFAOffset, 16, cfaOffset | 6, 2},
			[]byte{cfaAdvanceLoc | 3, cfaDefCFARegister, 6},
			[]byte{cfaAdvanceLoc1, 0x20, cfaDefCFA, 7, 8},
		), []Row{at(0x1000, sp(8, 0)), at(0x1001, sp(16, -16)), at(0x1004, fpr(16, -16)), at(0x1024, sp(8, -16)), at(0x1040, invalid)}},
		{"remember and restore", cat(
			[]byte{cfaAdvanceLoc | 1, cfaDefCFAOffset, 32, cfaRememberState},
			[]byte{cfaAdvanceLoc | 1, cfaDefCFAOffset, 8, cfaAdvanceLoc | 1, cfaRestoreState},
			[]byte{cfaAdvanceLoc | 1, cfaNop, cfaGNUArgsSize, 16},
		), []Row{at(0x1000, sp(8, 0)), at(0x1001, sp(32, 0)), at(0x1002, sp(8, 0)), at(0x1003, sp(32, 0)), at(0x1040, invalid)}},
		{"advance 2 and 4, set_loc", cat(
			[]byte{cfaAdvanceLoc2, 2, 0, cfaDefCFAOffset, 16, cfaAdvanceLoc4, 2, 0, 0, 0, cfaDefCFAOffset, 24},
			[]byte{cfaSetLoc}, u32(uint32(0x1030-(insns+13))), []byte{cfaDefCFAOffset, 32},
		), []Row{at(0x1000, sp(8, 0)), at(0x1002, sp(16, 0)), at(0x1004, sp(24, 0)), at(0x1030, sp(32, 0)), at(0x1040, invalid)}},
		{"signed forms", cat(
			[]byte{cfaAdvanceLoc | 1, cfaDefCFASF, 6}, sleb(-2),
			[]byte{cfaOffsetExtendedSF, 6}, sleb(3),
			[]byte{cfaAdvanceLoc | 1, cfaDefCFAOffsetSF}, sleb(-4),
			[]byte{cfaGNUNegativeOffsetExtended, 6, 4},
		), []Row{at(0x1000, sp(8, 0)), at(0x1001, fpr(16, -24)), at(0x1002, fpr(32, 32)), at(0x1040, invalid)}},
		{"restore to the CIE's rules", cat(
			[]byte{cfaAdvanceLoc | 1, cfaOffset | 6, 2, cfaOffsetExtended, 16, 3},
			[]byte{cfaAdvanceLoc | 1, cfaRestore | 16, cfaAdvanceLoc | 1, cfaRestoreExtended, 6},
		), []Row{at(0x1000, sp(8, 0)), at(0x1001, invalid), at(0x1002, sp(8, -16)), at(0x1003, sp(8, 0)), at(0x1040, invalid)}},
		{"return address undefined", []byte{cfaAdvanceLoc | 4, cfaUndefined, 16}, []Row{at(0x1000, sp(8, 0)), at(0x1004, eos), at(0x1040, invalid)}},
		{"return address elsewhere", []byte{cfaAdvanceLoc | 4, cfaRegister, 16, 3, cfaAdvanceLoc | 4, cfaValOffset, 16, 1, cfaAdvanceLoc | 4, cfaSameValue, 16},
			[]Row{at(0x1000, sp(8, 0)), at(0x1004, invalid)}},
		{"frame pointer unknown", cat(
			[]byte{cfaAdvanceLoc | 1, cfaRegister, 6, 3},
			[]byte{cfaAdvanceLoc | 1, cfaDefCFARegister, 6},
			[]byte{cfaAdvanceLoc | 1, cfaDefCFARegister, 7, cfaExpression, 6, 1, 0x30},
			[]byte{cfaAdvanceLoc | 1, cfaValExpression, 6, 1, 0x30, cfaAdvanceLoc | 1, cfaValOffsetSF, 6, 1},
			[]byte{cfaAdvanceLoc | 1, cfaUndefined, 6, cfaAdvanceLoc | 1, cfaSameValue, 6},
		), []Row{at(0x1000, sp(8, 0)), at(0x1002, invalid), at(0x1003, sp(8, 0)), at(0x1040, invalid)}},
		{"CFA in another register or expression", cat(
			[]byte{cfaAdvanceLoc | 1, cfaDefCFA, 3, 8, cfaAdvanceLoc | 1, cfaDefCFAExpression, 1, 0x30},
			[]byte{cfaAdvanceLoc | 1, cfaDefCFA, 7}, uleb(1<<40),
		), []Row{at(0x1000, sp(8, 0)), at(0x1001, invalid)}},
		{"PLT", cat([]byte{cfaAdvanceLoc | 16}, pltExpr(11)), []Row{at(0x1000, sp(8, 0)), at(0x1010, Row{CFA: CFAPLT, CFAOffset: 8, RAOffset: -8}), at(0x1040, invalid)}},
		{"PLT, threshold 9", cat([]byte{cfaAdvanceLoc | 16}, pltExpr(9)), []Row{
			at(0x1000, sp(8, 0)), at(0x1019, sp(16, 0)),
			at(0x1020, sp(8, 0)), at(0x1029, sp(16, 0)),
			at(0x1030, sp(8, 0)), at(0x1039, sp(16, 0)), at(0x1040, invalid)}},
		{"PLT, threshold 0", cat([]byte{cfaAdvanceLoc | 16}, pltExpr(0)), []Row{at(0x1000, sp(8, 0)), at(0x1010, sp(16, 0)), at(0x1040, invalid)}},
		{"PLT, threshold 20", cat([]byte{cfaAdvanceLoc | 16, cfaDefCFAOffset, 16}, pltExpr(20)), []Row{at(0x1000, sp(8, 0)), at(0x1040, invalid)}},
		{"unknown instruction", []byte{cfaAdvanceLoc | 1, cfaDefCFAOffset, 16, cfaAdvanceLoc | 1, 0x3f, cfaAdvanceLoc | 1, cfaDefCFAOffset, 24},
			[]Row{at(0x1000, sp(8, 0)), at(0x1001, sp(16, 0)), at(0x1002, invalid)}},
		{"restore_state without remember_state", []byte{cfaAdvanceLoc | 1, cfaRestoreState}, []Row{at(0x1000, sp(8, 0)), at(0x1001, invalid)}},
		{"remember_state too deep", cat([]byte{cfaAdvanceLoc | 1}, remember), []Row{at(0x1000, sp(8, 0)), at(0x1001, invalid)}},
		{"set_loc backwards", cat([]byte{cfaAdvanceLoc | 8, cfaSetLoc}, u32(uint32(0x1004-(insns+2)))), []Row{at(0x1000, sp(8, 0)), at(0x1008, invalid)}},
		{"truncated instruction", []byte{cfaAdvanceLoc | 1, cfaDefCFA, 7}, []Row{at(0x1000, sp(8, 0)), at(0x1001, invalid)}},
		{"advance past the end", []byte{cfaAdvanceLoc4, 0, 0, 0, 1, cfaDefCFAOffset, 16, cfaAdvanceLoc | 1, cfaDefCFAOffset, 24}, []Row{at(0x1000, sp(8, 0)), at(0x1040, invalid)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := frames{addr: 0x200000}
			cie := f.cie(stdCIE())
			f.stdFDE(cie, 0x1000, 0x40, c.insns...)
			got, err := f.parse(t, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestSection(t *testing.T) {
	for _, c := range []struct {
		name  string
		debug bool
		make  func(f *frames)
		want  []Row
	}{
		{"ranges: adjacent, apart, overlapping, outside code, across segments", false, func(f *frames) {
			cie := f.cie(stdCIE())
			f.stdFDE(cie, 0x1010, 0x10)
			f.stdFDE(cie, 0x1000, 0x10, cfaAdvanceLoc|1, cfaDefCFAOffset, 16)
			f.stdFDE(cie, 0x1030, 0x10)
			f.stdFDE(cie, 0x1038, 0x10, cfaAdvanceLoc|1, cfaDefCFAOffset, 16, cfaAdvanceLoc|12, cfaDefCFAOffset, 24)
			f.stdFDE(cie, 0x1038, 0x4) // covered by the one before
			f.stdFDE(cie, 0x500, 0x10) // in no segment
			f.stdFDE(cie, 0x7ff0, 0x20)
			f.stdFDE(cie, 0x8000, 0x10)
		}, []Row{
			at(0x1000, sp(8, 0)), at(0x1001, sp(16, 0)), at(0x1010, sp(8, 0)), at(0x1020, invalid),
			at(0x1030, sp(8, 0)), at(0x1040, sp(16, 0)), at(0x1045, sp(24, 0)), at(0x1048, invalid),
			at(0x7ff0, sp(8, 0)), at(0x8000, invalid), at(0x8400, sp(8, 0)), at(0x8410, invalid),
		}},
		{"signal frame, zero terminator", false, func(f *frames) {
			cie := f.cie(cat([]byte{1, 'z', 'R', 'S', 0}, uleb(1), sleb(-8), []byte{16}, uleb(1), []byte{0x1b}))
			f.stdFDE(cie, 0x1000, 0x10, cfaDefCFAOffset, 16)
			f.b = append(f.b, 0, 0, 0, 0)
			f.stdFDE(cie, 0x2000, 0x10)
		}, []Row{at(0x1000, Row{CFA: CFASignal}), at(0x1010, invalid)}},
		{"encodings", false, func(f *frames) {
			// Personality, LSDA and BTI augmentations; code alignment 4.
			cie := func(enc byte) int {
				return f.cie(cat([]byte{3, 'z', 'P', 'L', 'B', 'R', 0}, uleb(4), sleb(-8), uleb(16), uleb(7),
					[]byte{0x9b}, u32(0), []byte{0x1b, enc, cfaDefCFA, 7, 8, cfaOffset | 16, 1}))
			}
			// pos returns the address of the next FDE's address field.
			pos := func() uint64 { return f.addr + uint64(len(f.b)) + 8 }
			fde := func(cie int, addr, n []byte) {
				f.fde(cie, cat(addr, n, uleb(1), []byte{0, cfaAdvanceLoc | 1, cfaDefCFAOffset, 16}))
			}
			le16 := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
			c := cie(peAbsptr)
			fde(c, u64(0x1000), u64(0x10))
			c = cie(peUData2)
			fde(c, le16(0x1010), le16(0x10))
			c = cie(peUData4)
			fde(c, u32(0x1020), u32(0x10))
			c = cie(peUData8)
			fde(c, u64(0x1030), u64(0x10))
			c = cie(peULEB128)
			fde(c, uleb(0x1040), uleb(0x10))
			c = cie(peSLEB128 | pePCRel)
			fde(c, sleb(0x1050-int64(pos())), sleb(0x10))
			c = cie(peSData4 | peDataRel)
			fde(c, u32(uint32(0x1060-f.addr)), u32(0x10))
			c = cie(peSData8)
			fde(c, u64(0x1070), u64(0x10))
			c = cie(peSData2)
			fde(c, le16(0x1080), le16(0x10))
			c = cie(peSData4 | peIndirect) // skipped: only the process knows
			fde(c, u32(0x1090), u32(0x10))
			c = cie(peSData4 | peTextRel) // skipped: not supported
			fde(c, u32(0x10a0), u32(0x10))
			c = cie(peAligned)
			fde(c, append(make([]byte, (8-pos()%8)%8), u64(0x10b0)...), u64(0x10))
		}, []Row{
			at(0x1000, sp(8, 0)), at(0x1004, sp(16, 0)), at(0x1010, sp(8, 0)), at(0x1014, sp(16, 0)),
			at(0x1020, sp(8, 0)), at(0x1024, sp(16, 0)), at(0x1030, sp(8, 0)), at(0x1034, sp(16, 0)),
			at(0x1040, sp(8, 0)), at(0x1044, sp(16, 0)), at(0x1050, sp(8, 0)), at(0x1054, sp(16, 0)),
			at(0x1060, sp(8, 0)), at(0x1064, sp(16, 0)), at(0x1070, sp(8, 0)), at(0x1074, sp(16, 0)),
			at(0x1080, sp(8, 0)), at(0x1084, sp(16, 0)),
			at(0x1090, invalid), at(0x10b0, sp(8, 0)), at(0x10b4, sp(16, 0)), at(0x10c0, invalid),
		}},
		{"64-bit lengths", false, func(f *frames) {
			body := stdCIE()
			cie := len(f.b)
			f.b = cat(f.b, u32(0xffffffff), u64(uint64(8+len(body))), u64(0), body)
			idOff := len(f.b) + 12
			fdeBody := cat(u32(uint32(0x1000-(f.addr+uint64(idOff)+8))), u32(0x10), uleb(0))
			f.b = cat(f.b, u32(0xffffffff), u64(uint64(8+len(fdeBody))), u64(uint64(idOff-cie)), fdeBody)
		}, []Row{at(0x1000, sp(8, 0)), at(0x1010, invalid)}},
		{".debug_frame versions", true, func(f *frames) {
			insns := []byte{cfaDefCFA, 7, 8, cfaOffset | 16, 1}
			v1 := f.cie(cat([]byte{1, 0}, uleb(1), sleb(-8), []byte{16}, insns))
			v3 := f.cie(cat([]byte{3, 0}, uleb(1), sleb(-8), uleb(16), insns))
			v4 := f.cie(cat([]byte{4, 0, 4, 0}, uleb(1), sleb(-8), uleb(16), insns))
			f.fde(v1, cat(u64(0x1000), u64(0x10)))
			f.b = append(f.b, 0, 0, 0, 0) // not a terminator here
			f.fde(v3, cat(u64(0x1010), u64(0x10), []byte{cfaAdvanceLoc | 1, cfaDefCFAOffset, 16}))
			f.fde(v4, cat(u32(0x1020), u32(0x10)))
		}, []Row{at(0x1000, sp(8, 0)), at(0x1011, sp(16, 0)), at(0x1020, sp(8, 0)), at(0x1030, invalid)}},
		{"CIE instructions that cannot run", false, func(f *frames) {
			cie := f.cie(stdCIE(cfaAdvanceLoc | 1))
			f.stdFDE(cie, 0x1000, 0x10)
			cie = f.cie(stdCIE(0x3f))
			f.stdFDE(cie, 0x1010, 0x10)
		}, []Row{at(0x1000, invalid)}},
		{"unknown augmentation after z", false, func(f *frames) {
			cie := f.cie(cat([]byte{1, 'z', 'R', 'X', 'S', 0}, uleb(1), sleb(-8), []byte{16}, uleb(3), []byte{0x1b, 0xaa, 0xbb, cfaDefCFA, 7, 8, cfaOffset | 16, 1}))
			f.stdFDE(cie, 0x1000, 0x10)
		}, []Row{at(0x1000, sp(8, 0)), at(0x1010, invalid)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := frames{addr: 0x200000, debug: c.debug}
			c.make(&f)
			got, err := f.parse(t, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	for _, c := range []struct {
		name  string
		debug bool
		make  func(f *frames)
		want  error
	}{
		{"truncated length", false, func(f *frames) { f.b = []byte{1, 0} }, ErrMalformed},
		{"omitted address", false, func(f *frames) {
			cie := f.cie(cat([]byte{1, 'z', 'R', 0}, uleb(1), sleb(-8), []byte{16}, uleb(1), []byte{peOmit}))
			f.fde(cie, cat(u32(0x1000), u32(0x10), uleb(0)))
		}, ErrMalformed},
		{"length past the end", false, func(f *frames) {
			f.cie(stdCIE())
			f.b = f.b[:len(f.b)-1]
		}, ErrMalformed},
		{"reserved length", false, func(f *frames) { f.b = u32(0xfffffff0) }, ErrMalformed},
		{"truncated 64-bit length", false, func(f *frames) { f.b = cat(u32(0xffffffff), u32(1)) }, ErrMalformed},
		{"CIE pointer before the section", false, func(f *frames) { f.stdFDE(1000, 0x1000, 0x10) }, ErrMalformed},
		{"CIE pointer to itself", false, func(f *frames) { f.stdFDE(0, 0x1000, 0x10) }, ErrMalformed},
		{"CIE pointer to an FDE", false, func(f *frames) {
			cie := f.cie(stdCIE())
			fde := f.stdFDE(cie, 0x1000, 0x10)
			f.stdFDE(fde, 0x1010, 0x10)
		}, ErrMalformed},
		{"CIE pointer loop in .debug_frame", true, func(f *frames) {
			f.fde(4, cat(u64(0x1000), u64(0x10)))
		}, ErrMalformed},
		{"CIE pointer past the end", true, func(f *frames) { f.fde(1<<20, cat(u64(0x1000), u64(0x10))) }, ErrMalformed},
		{"CIE version", false, func(f *frames) {
			body := stdCIE()
			body[0] = 2
			f.stdFDE(f.cie(body), 0x1000, 0x10)
		}, ErrMalformed},
		{"augmentation", false, func(f *frames) {
			f.stdFDE(f.cie(cat([]byte{1, 'e', 'h', 0}, uleb(1), sleb(-8), []byte{16})), 0x1000, 0x10)
		}, ErrMalformed},
		{"augmentation data too long", false, func(f *frames) {
			f.stdFDE(f.cie(cat([]byte{1, 'z', 'R', 0}, uleb(1), sleb(-8), []byte{16}, uleb(100))), 0x1000, 0x10)
		}, ErrMalformed},
		{"segment selectors", true, func(f *frames) {
			f.fde(f.cie(cat([]byte{4, 0, 8, 8}, uleb(1), sleb(-8), uleb(16))), cat(u64(0x1000), u64(0x10)))
		}, ErrMalformed},
		{"truncated FDE", false, func(f *frames) {
			cie := f.cie(stdCIE())
			f.fde(cie, f.pcrel(0x1000))
		}, ErrMalformed},
		{"long LEB128", false, func(f *frames) {
			f.stdFDE(f.cie(cat([]byte{1, 0}, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1}, sleb(-8), []byte{16})), 0x1000, 0x10)
		}, ErrMalformed},
		{"too many CIEs", false, func(f *frames) {
			f.stdFDE(f.cie(stdCIE()), 0x1000, 0x10)
			f.stdFDE(f.cie(stdCIE()), 0x1010, 0x10)
		}, ErrTooLarge},
		{"too many rows", false, func(f *frames) {
			f.stdFDE(f.cie(stdCIE()), 0x1000, 0x10, cfaAdvanceLoc|1, cfaDefCFAOffset, 16, cfaAdvanceLoc|1, cfaDefCFAOffset, 24)
		}, ErrTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := frames{addr: 0x200000, debug: c.debug}
			c.make(&f)
			rows, err := f.parse(t, Options{MaxCIEs: 1, MaxRows: 3})
			if !errors.Is(err, c.want) {
				t.Errorf("got %+v, %v; want %v", rows, err, c.want)
			}
		})
	}
}

func TestOverlay(t *testing.T) {
	gap := Row{CFA: cfaGap}
	top := []Row{at(0x10, sp(8, 0)), at(0x20, gap), at(0x40, sp(16, 0)), at(0x50, gap)}
	bottom := []Row{at(0x0, sp(24, 0)), at(0x18, sp(8, 0)), at(0x30, gap), at(0x38, invalid), at(0x60, gap)}
	rs := newRuleSet()
	packed, err := overlay(packRows(t, rs, top), packRows(t, rs, bottom), 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{at(0x0, sp(24, 0)), at(0x10, sp(8, 0)), at(0x30, gap), at(0x38, invalid), at(0x40, sp(16, 0)), at(0x50, invalid), at(0x60, gap)}
	if got := unpackRows(rs, packed); !slices.Equal(got, want) {
		t.Errorf("overlay:\ngot  %+v\nwant %+v", got, want)
	}
	if got := unpackRows(rs, finalize(packed)); !slices.Equal(got, []Row{at(0x0, sp(24, 0)), at(0x10, sp(8, 0)), at(0x30, invalid), at(0x40, sp(16, 0)), at(0x50, invalid)}) {
		t.Errorf("finalize: %+v", got)
	}
	if _, err := overlay(packRows(t, rs, top), packRows(t, rs, bottom), 3); !errors.Is(err, ErrTooLarge) {
		t.Errorf("overlay with 3 rows at most: %v", err)
	}
}

func TestCoverage(t *testing.T) {
	gap := Row{CFA: cfaGap}
	rs := newRuleSet()
	c := newCoverage(nil, packRows(t, rs, []Row{at(0x10, sp(8, 0)), at(0x20, gap), at(0x30, invalid), at(0x40, sp(16, 0)), at(0x50, gap)}))
	for _, r := range []struct {
		lo, hi uint64
		want   bool
	}{
		{0x0, 0x8, false}, {0x8, 0x11, false}, {0x10, 0x20, true}, {0x18, 0x21, false},
		{0x20, 0x30, false}, {0x2f, 0x31, false}, {0x30, 0x50, true}, {0x48, 0x50, true},
		{0x48, 0x51, false}, {0x60, 0x70, false},
	} {
		if got := c.covers(r.lo, r.hi); got != r.want {
			t.Errorf("covers(%#x, %#x) = %v", r.lo, r.hi, got)
		}
	}
	if newCoverage(nil, nil).covers(0, 1) {
		t.Error("no rows cover something")
	}

	// FDEs of a section all covered by those before are left out.
	f := frames{addr: 0x200000}
	cie := f.cie(stdCIE())
	f.stdFDE(cie, 0x1010, 0x10, cfaAdvanceLoc|1, cfaDefCFAOffset, 16)
	f.stdFDE(cie, 0x1030, 0x20, cfaAdvanceLoc|1, cfaDefCFAOffset, 16)
	a, _ := archFor(elf.EM_X86_64)
	opts := Options{}
	if err := opts.normalize(); err != nil {
		t.Fatal(err)
	}
	sec := &frameSection{name: "test", data: f.b, addr: f.addr, order: binary.LittleEndian, ptrSize: 8}
	b := &Builder{}
	b.rules.reset()
	bs := &buildState{arch: &a, opts: &opts, segs: testSegs, scratch: b}
	packed, err := bs.sectionRows(sec, newCoverage(nil, packRows(t, &b.rules, []Row{at(0x1000, sp(8, 0)), at(0x1020, gap), at(0x1030, sp(8, 0)), at(0x1040, gap)})), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rows, want := unpackRows(&b.rules, packed), []Row{at(0x1030, sp(8, 0)), at(0x1031, sp(16, 0)), at(0x1050, gap)}; !slices.Equal(rows, want) {
		t.Errorf("got  %+v\nwant %+v", rows, want)
	}
}

// TestOverlayInPlace checks overlay, which merges in top's memory, against
// a plain merge, on random rows, with and without room in top's memory.
func TestOverlayInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// randomRows returns n sorted rows of a few rules, gaps among them.
	randomRows := func(n int) []Row {
		var rows []Row
		addr := uint64(rng.IntN(8))
		for range n {
			r := sp(int32(8*rng.IntN(3)), 0)
			if rng.IntN(3) == 0 {
				r = Row{CFA: cfaGap}
			}
			r.Addr = addr
			if len(rows) == 0 || !sameRule(rows[len(rows)-1], r) {
				rows = append(rows, r)
			}
			addr += 1 + uint64(rng.IntN(8))
		}
		return append(rows, Row{Addr: addr, CFA: cfaGap})
	}
	// want is the rule of top at each address, or bottom's in top's gaps,
	// equal neighbours merged.
	want := func(top, bottom []Row) []Row {
		var addrs []uint64
		for _, r := range slices.Concat(top, bottom) {
			addrs = append(addrs, r.Addr)
		}
		slices.Sort(addrs)
		var out []Row
		for _, a := range slices.Compact(addrs) {
			r := Row{CFA: cfaGap}
			if i := sort.Search(len(top), func(i int) bool { return top[i].Addr > a }); i > 0 {
				r = top[i-1]
			}
			if r.CFA == cfaGap {
				r = Row{CFA: cfaGap}
				if i := sort.Search(len(bottom), func(i int) bool { return bottom[i].Addr > a }); i > 0 {
					r = bottom[i-1]
				}
			}
			r.Addr = a
			if n := len(out); n > 0 && sameRule(out[n-1], r) {
				continue
			}
			out = append(out, r)
		}
		return out
	}
	for i := range 500 {
		top, bottom := randomRows(rng.IntN(40)), randomRows(rng.IntN(40))
		w := want(top, bottom)
		buf := slices.Clone(top)
		if i%2 == 0 {
			buf = slices.Grow(buf, len(bottom)+rng.IntN(4)) // room to merge in place
		}
		rs := newRuleSet()
		packedBuf := packRows(t, rs, buf)
		if i%2 == 0 {
			packedBuf = slices.Grow(packedBuf, cap(buf)-len(buf)) // the same room
		}
		packed, err := overlay(packedBuf, packRows(t, rs, bottom), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if got := unpackRows(rs, packed); !slices.Equal(got, w) {
			t.Fatalf("overlay(\n%+v,\n%+v):\ngot  %+v\nwant %+v", top, bottom, got, w)
		}
	}
}
