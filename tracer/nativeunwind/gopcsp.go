package nativeunwind

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/stackline-dev/stackline/internal/gopclntab"
)

// goRows returns the rows of the Go functions of a binary from its
// .gopclntab, tab, read from f. For each function:
//
//   - one with FlagTopFrame (runtime.goexit, runtime.mstart,
//     runtime.rt0_go…), and runtime.mcall and runtime.morestack, the
//     outermost frames on the system stack, are CFAEndOfStack (mcall
//     CFAGoMcall, which the off-CPU unwinder follows to the parked
//     goroutine);
//   - any other follows its pcsp table: CFA = SP + delta + 8, the return
//     address at CFA-8, and the caller's frame pointer at CFA-16 wherever
//     delta ≥ 8 in a function that saves it;
//   - except one with FlagSPWrite, which moves the stack pointer to another
//     stack (runtime.systemstack, runtime.asmcgocall, runtime.nanotime1,
//     time.now…), so that its pcsp table does not hold after the move. If
//     its prologue sets up the frame pointer (PUSHQ BP; MOVQ SP, BP), its
//     rows use that instead once it is set (CFA = BP + 16): unwinding then
//     crosses from the system stack back to the goroutine's, as the
//     runtime's frame pointer unwinder does. Otherwise it is CFAInvalid,
//     where the runtime's traceback stops too.
//
// The compiler saves the frame pointer in every function whose stack
// pointer moves at all (the first thing its prologue pushes, Go 1.21 on,
// or stores right below the return address, before), so those functions
// all do. An assembly function (FlagAsm, Go 1.19 on) may move the stack
// pointer without saving it (NOFRAME); for those, the instruction bytes
// around the first stack pointer adjustment decide (see goRules.prologue).
// Before Go 1.19 assembly functions cannot be told apart and are treated
// like compiled ones. Before Go 1.21, between the SUBQ of the prologue and
// the store of BP, one instruction's row places a frame pointer that is
// not yet saved.
//
// The rows are appended to dst[:0].
func (bs *buildState) goRows(tab *gopclntab.Table, f io.ReaderAt, dst []uint64) ([]uint64, error) {
	g := bs.arch.goRules
	if g == nil || tab.PtrSize() != 8 {
		return dst, fmt.Errorf("%w: Go functions with %d-byte pointers", ErrUnsupportedArch, tab.PtrSize())
	}
	// Go binaries have about eight rows per function.
	hint := 9 * tab.NumFuncs()
	if len(bs.ranges) > 0 {
		// About a row per 40 bytes of code.
		hint = min(hint, int(bs.ranges.size(MaxAddr)/32))
	}
	b := newBuilder(dst, &bs.scratch.rules, bs.opts.MaxRows, hint)
	s := bs.scratch
	if len(s.code) != g.window {
		s.code = make([]byte, g.window)
	}
	code := s.code
	memo := &s.spRules
	clear(memo[:])
	var blocks *[]uint64
	if k := bs.keptFor(f); k != nil && k.goTab == tab {
		blocks = &k.goBlocks
	}
	from, to := goFuncSpan(tab.NumFuncs(), tab.Entry, bs.segs, bs.ranges, blocks)
	for i := from; i < to; i++ {
		fn, ok := tab.Func(i)
		if !ok {
			continue
		}
		lo, hi := fn.Entry, tab.Entry(i+1)
		seg, ok := bs.segs.find(lo)
		if !ok || hi <= lo {
			continue
		}
		hi = min(hi, seg.vaddr+seg.size)
		delta := seg.offset(lo) - lo
		if !bs.ranges.meets(lo+delta, hi+delta) || !b.begin(lo+delta, hi+delta) {
			continue
		}
		goFuncRows(&b, tab, &fn, hi, delta, f, code, g, memo)
		b.finish()
		if b.err != nil {
			return b.rows, b.err
		}
	}
	return b.rows, nil
}

// spMemoLen bounds the stack pointer deltas whose rules an spMemo holds:
// multiples of 8 below 4 KiB, those of nearly every Go function.
const spMemoLen = 512

// spMemo holds the rules of a build's Go rows by stack pointer delta, so
// that a row (most of those of a Go binary) costs an array load instead
// of an intern of its rule: 1+the index of the rule of g.bySP(8*i, false)
// at i, of g.bySP(8*i, true) at spMemoLen+i; 0 when not looked up yet.
type spMemo [2 * spMemoLen]uint32

// spanSP is b.span(lo, hi, g.bySP(v, saves)), its rule found in memo.
func (b *builder) spanSP(lo, hi uint64, g *goRules, v int32, saves bool, memo *spMemo) {
	if v < 0 || v%8 != 0 || v/8 >= spMemoLen {
		b.span(lo, hi, g.bySP(v, saves))
		return
	}
	i := int(v / 8)
	if saves {
		i += spMemoLen
	}
	if memo[i] == 0 {
		rule, ok := b.rules.intern(g.bySP(v, saves))
		if !ok {
			b.span(lo, hi, g.bySP(v, saves)) // fails the build
			return
		}
		memo[i] = rule + 1
	}
	b.spanRule(lo, hi, memo[i]-1)
}

// goFuncRows gives b the rows of the Go function fn, which ends at hi and
// whose file offsets are delta above its addresses, the rules of stack
// pointer deltas through memo; see goRows.
func goFuncRows(b *builder, tab *gopclntab.Table, fn *gopclntab.Func, hi, delta uint64, f io.ReaderAt, code []byte, g *goRules, memo *spMemo) {
	named := namedApart(tab, fn)
	switch {
	case named && tab.Name(fn.NameOff) == "runtime.mcall":
		b.span(fn.Entry+delta, hi+delta, Row{CFA: CFAGoMcall})
	case isTopFrame(tab, fn, named):
		b.span(fn.Entry+delta, hi+delta, Row{CFA: CFAEndOfStack})
	case fn.Flag&gopclntab.FlagSPWrite != 0:
		_, fpSet := goPrologue(tab, fn, hi, f, delta, code, g)
		if fpSet == 0 {
			b.span(fn.Entry+delta, hi+delta, Row{CFA: CFAInvalid})
			break
		}
		for r := newPCSPRuns(tab, fn, hi); r.next(); {
			start, end, v := r.it.Start(), r.it.End(), r.it.Value()
			if v == 0 {
				b.spanSP(start+delta, end+delta, g, 0, true, memo)
				continue
			}
			if start < fpSet {
				b.spanSP(start+delta, min(end, fpSet)+delta, g, v, true, memo)
			}
			b.span(max(start, fpSet)+delta, end+delta, g.byFP)
		}
	default:
		saves := true
		if fn.Flag&gopclntab.FlagAsm != 0 {
			saves, _ = goPrologue(tab, fn, hi, f, delta, code, g)
		}
		for r := newPCSPRuns(tab, fn, hi); r.next(); {
			b.spanSP(r.it.Start()+delta, r.it.End()+delta, g, r.it.Value(), saves, memo)
		}
	}
}

// pcspRuns iterates over the runs of a function's pcsp table that start
// below hi, the end of the function: at most one per byte, so that a
// malformed table cannot make the work grow with anything but the size of
// the code.
type pcspRuns struct {
	it   gopclntab.Values
	hi   uint64
	left uint64
}

func newPCSPRuns(tab *gopclntab.Table, fn *gopclntab.Func, hi uint64) pcspRuns {
	return pcspRuns{it: tab.Values(fn.Entry, fn.PCSP), hi: hi, left: hi - fn.Entry}
}

// next moves to the next run.
func (r *pcspRuns) next() bool {
	if r.left == 0 || !r.it.Next() || r.it.Start() >= r.hi {
		return false
	}
	r.left--
	return true
}

// namedApart reports whether fn may be one of the functions whose rows
// its name decides (runtime.mcall, runtime.morestack, and in Go 1.16
// those isTopFrame names): its name must then be read. They are all
// written in assembly, and from Go 1.20 (the first with a magic number of
// its own since Go 1.19 flagged them) every assembly function has
// FlagAsm: the names of the others, nearly all, are not read, so that a
// build touches neither the names nor their pages in the file.
func namedApart(tab *gopclntab.Table, fn *gopclntab.Func) bool {
	return tab.Magic() != gopclntab.Magic120 || fn.Flag&gopclntab.FlagAsm != 0
}

// isTopFrame reports whether fn is the outermost function of its stacks.
// runtime.mcall and runtime.morestack switch to the thread's system stack
// (g0) and call a function there: on that stack they are the outermost
// frame, as the runtime's own traceback has it. named is
// namedApart(tab, fn): false when fn's name need not be read.
func isTopFrame(tab *gopclntab.Table, fn *gopclntab.Func, named bool) bool {
	if fn.Flag&gopclntab.FlagTopFrame != 0 {
		return true
	}
	if !named {
		return false
	}
	switch tab.Name(fn.NameOff) {
	case "runtime.mcall", "runtime.morestack":
		return true
	}
	if tab.Magic() != gopclntab.Magic116 {
		return false
	}
	// Go 1.16 has no flags; Go 1.17, with the same magic, sets them.
	switch tab.Name(fn.NameOff) {
	case "runtime.goexit", "runtime.mstart", "runtime.rt0_go":
		return true
	}
	return false
}

// goPrologue reads, into code, the instructions around the first stack
// pointer adjustment of the function fn, which ends at hi and whose file
// offsets are delta above its addresses, and recognises its prologue. It
// reports whether the function saves the caller's frame pointer and the
// address from which the frame pointer holds the function's frame (0 if
// unknown).
func goPrologue(tab *gopclntab.Table, fn *gopclntab.Func, hi uint64, f io.ReaderAt, delta uint64, code []byte, g *goRules) (saves bool, fpSet uint64) {
	for r := newPCSPRuns(tab, fn, hi); r.next(); {
		it := &r.it
		if it.Value() == 0 {
			continue
		}
		if it.Start() == fn.Entry {
			return false, 0 // no instruction moved it
		}
		off := it.Start() - 1 + delta
		if off > 1<<62 {
			return false, 0
		}
		if _, err := f.ReadAt(code, int64(off)); err != nil {
			return false, 0
		}
		saves, n := g.prologue(code, it.Value())
		if !saves || n < 0 {
			return saves, 0
		}
		return true, it.Start() + uint64(n)
	}
	return false, 0
}

// loadGoTable reads and parses the .gopclntab section of ef and finds the
// address its function entries are relative to. mapping is the section's
// mapping, to unmap (with unmap) once the table is no longer used; nil
// when the Builder keeps it (see Builder.Keep), with the table parsed.
func (bs *buildState) loadGoTable(ef *elf.File, f io.ReaderAt, sec *elf.Section) (tab *gopclntab.Table, mapping []byte, err error) {
	k := bs.keptFor(f)
	if k != nil && k.goTab != nil && k.goOff == sec.Offset && sec.Size <= uint64(bs.opts.MaxSectionBytes) {
		return k.goTab, nil, nil
	}
	data, mapping, err := bs.sectionData(f, sec)
	if err != nil {
		return nil, nil, err
	}
	// The section is read in place (gopclntab.Parse copies nothing), so
	// the rows are derived from the mapped file.
	tab, err = gopclntab.Parse(data, ef.ByteOrder)
	if err != nil {
		unmap(mapping)
		if !errors.Is(err, gopclntab.ErrUnsupportedVersion) {
			err = fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return nil, nil, err
	}
	// Without the moduledata, the header's text address is used, which
	// the linker may have left unrelocated.
	md, _ := tab.FindModuledata(ef, sec.Addr)
	tab.ResolveText(ef, md)
	if k != nil {
		if _, kept := k.sections[sec.Offset]; kept {
			// Mapped for the next builds: parsed for them too.
			k.goTab, k.goOff, k.goBlocks = tab, sec.Offset, nil
		}
	}
	return tab, mapping, nil
}
