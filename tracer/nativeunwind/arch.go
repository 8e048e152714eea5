package nativeunwind

import (
	"debug/elf"
	"fmt"
	"math"
)

// arch is what the translation of unwind rules into rows knows of one
// machine. Everything machine-specific lives here; the parsers and the
// CFA interpreter only use these fields.
type arch struct {
	// sp, fp and pc are the DWARF numbers of the stack pointer, the frame
	// pointer and the program counter (the column of the return address).
	sp, fp, pc uint64
	// raOffset is where a call leaves the return address, relative to
	// the CFA; a row whose rules put it elsewhere is CFAInvalid.
	raOffset int64
	// pltThreshold is the (pc & 15) threshold of the PLT expression
	// CFAPLT stands for.
	pltThreshold uint8

	// goRules are the rules of Go functions; nil: Go tables are not
	// supported.
	goRules *goRules
}

// goRules are the rules of the Go functions of one machine.
type goRules struct {
	// bySP returns the row of a Go function at a stack pointer delta (the
	// pcsp value) of spDelta; fpSaved says the function saves the
	// caller's frame pointer on entry.
	bySP func(spDelta int32, fpSaved bool) Row
	// byFP is the row of a function whose frame pointer holds the address
	// of its frame (after its prologue).
	byFP Row
	// prologue looks at code, window bytes of a function from the last
	// byte of the instruction that first moved the stack pointer, by
	// spDelta. It reports whether the function saves the caller's frame
	// pointer the way the Go assembler's prologue does and, when the
	// instructions right after set the frame pointer to the frame, how
	// many bytes they take (else -1).
	prologue func(code []byte, spDelta int32) (savesFP bool, setFP int)
	window   int
}

// archFor returns the rules of machine m.
func archFor(m elf.Machine) (arch, error) {
	switch m {
	case elf.EM_X86_64:
		return arch{
			sp: 7, fp: 6, pc: 16,
			raOffset:     -8,
			pltThreshold: 11,
			goRules: &goRules{
				bySP:     goRowAMD64,
				byFP:     Row{CFA: CFAFP, CFAOffset: 16, FPOffset: -16, RAOffset: -8},
				prologue: goPrologueAMD64,
				window:   9,
			},
		}, nil
	}
	return arch{}, fmt.Errorf("%w: %v", ErrUnsupportedArch, m)
}

// goRowAMD64 is the row of a Go amd64 function: the return address is at
// the CFA-8, the CFA is 8 above the stack pointer at entry, and a function
// with a frame pushes the caller's BP first, right below the return
// address, at the CFA-16.
func goRowAMD64(spDelta int32, fpSaved bool) Row {
	const ptr = 8
	if spDelta < 0 || spDelta > math.MaxInt32-ptr {
		return Row{CFA: CFAInvalid}
	}
	r := Row{CFA: CFASP, CFAOffset: spDelta + ptr, RAOffset: -ptr}
	if fpSaved && spDelta >= ptr {
		r.FPOffset = -2 * ptr
	}
	return r
}

// goPrologueAMD64 recognises the two prologues of the Go assembler: since
// Go 1.21 PUSHQ BP (55, the 8-byte adjustment) and MOVQ SP, BP (48 89 e5);
// before, SUBQ $n+8, SP and MOVQ BP, n(SP) (48 89 6c 24 disp8 or 48 89 ac
// 24 disp32).
func goPrologueAMD64(code []byte, spDelta int32) (savesFP bool, setFP int) {
	if len(code) < 9 {
		return false, -1
	}
	if spDelta == 8 && code[0] == 0x55 {
		if code[1] == 0x48 && code[2] == 0x89 && code[3] == 0xe5 {
			return true, 3
		}
		return true, -1
	}
	next, n := code[1:], spDelta-8
	switch {
	case next[0] == 0x48 && next[1] == 0x89 && next[2] == 0x6c && next[3] == 0x24:
		return int32(int8(next[4])) == n, -1
	case next[0] == 0x48 && next[1] == 0x89 && next[2] == 0xac && next[3] == 0x24:
		return int32(uint32(next[4])|uint32(next[5])<<8|uint32(next[6])<<16|uint32(next[7])<<24) == n, -1
	}
	return false, -1
}
