package nativeunwind

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"slices"
	"testing"

	"github.com/stackline-dev/stackline/internal/gopclntab"
	"github.com/stackline-dev/stackline/internal/gopclntab/gopclntabtest"
	"github.com/stackline-dev/stackline/internal/testenv"
)

// goTestFuncs are laid out from 0x1000; goTestCode holds the instructions
// their prologues are recognised by.
var goTestFuncs = []gopclntabtest.Func{
	{Name: "main.leaf", PCSP: gopclntabtest.Runs(0, 16)},                                                                                  // 0x1000
	{Name: "main.framed", PCSP: gopclntabtest.Runs(0, 5, 8, 3, 40, 20, 8, 1, 0, 3)},                                                       // 0x1010
	{Name: "asm.noframe", Flag: gopclntab.FlagAsm, PCSP: gopclntabtest.Runs(0, 2, 8, 4, 0, 2)},                                            // 0x1030: PUSHQ AX at 0x1031
	{Name: "asm.frame", Flag: gopclntab.FlagAsm, PCSP: gopclntabtest.Runs(0, 1, 8, 3, 24, 4, 0, 1)},                                       // 0x1038: PUSHQ BP
	{Name: "runtime.nanotime1", Flag: gopclntab.FlagAsm | gopclntab.FlagSPWrite, PCSP: gopclntabtest.Runs(0, 1, 8, 3, 24, 8, 8, 1, 0, 1)}, // 0x1041: PUSHQ BP; MOVQ SP, BP
	{Name: "runtime.morestack", Flag: gopclntab.FlagAsm | gopclntab.FlagSPWrite, PCSP: gopclntabtest.Runs(0, 8)},                          // 0x104f
	{Name: "runtime.goexit", Flag: gopclntab.FlagAsm | gopclntab.FlagTopFrame, PCSP: gopclntabtest.Runs(0, 8)},                            // 0x1057
	{Name: "main.after", PCSP: gopclntabtest.Runs(0, 4)},                                                                                  // 0x105f
}

func goTestCode() []byte {
	code := make([]byte, 0x1100)
	code[0x1031] = 0x50 // PUSHQ AX
	code[0x1038] = 0x55 // PUSHQ BP
	copy(code[0x1041:], []byte{0x55, 0x48, 0x89, 0xe5})
	return code
}

// goRowsOf returns the finalized rows of a .gopclntab whose code is code,
// at the same file offsets.
func goRowsOf(t testing.TB, data, code []byte) ([]Row, error) {
	t.Helper()
	return goRowsWith(t, &Builder{}, data, code)
}

// goRowsWith is goRowsOf with the buffers of b.
func goRowsWith(t testing.TB, b *Builder, data, code []byte) ([]Row, error) {
	t.Helper()
	tab, err := gopclntab.Parse(data, binary.LittleEndian)
	if err != nil {
		return nil, err
	}
	a, _ := archFor(elf.EM_X86_64)
	opts := Options{MaxRows: 1 << 16}
	if err := opts.normalize(); err != nil {
		t.Fatal(err)
	}
	bs := &buildState{arch: &a, opts: &opts, segs: segments{{vaddr: 0, off: 0, size: 1 << 40}}, scratch: b}
	b.rules.reset()
	rows, err := bs.goRows(tab, bytes.NewReader(code), b.layer)
	b.layer = rows[:0]
	if err != nil {
		return nil, err
	}
	return unpackRows(&b.rules, finalize(rows)), nil
}

func TestGoLayouts(t *testing.T) {
	byFP := Row{CFA: CFAFP, CFAOffset: 16, FPOffset: -16, RAOffset: -8}
	want := []Row{
		at(0x1000, sp(8, 0)),
		at(0x1015, sp(16, -16)), at(0x1018, sp(48, -16)), at(0x102c, sp(16, -16)), at(0x102d, sp(8, 0)),
		at(0x1032, sp(16, 0)), at(0x1036, sp(8, 0)),
		at(0x1039, sp(16, -16)), at(0x103c, sp(32, -16)), at(0x1040, sp(8, 0)),
		at(0x1042, sp(16, -16)), at(0x1045, byFP), at(0x104e, sp(8, 0)),
		at(0x104f, eos), at(0x105f, sp(8, 0)), at(0x1063, invalid),
	}
	// Go 1.16 has no flags: assembly functions are taken for compiled
	// ones, the outermost are known by name.
	want116 := []Row{
		at(0x1000, sp(8, 0)),
		at(0x1015, sp(16, -16)), at(0x1018, sp(48, -16)), at(0x102c, sp(16, -16)), at(0x102d, sp(8, 0)),
		at(0x1032, sp(16, -16)), at(0x1036, sp(8, 0)),
		at(0x1039, sp(16, -16)), at(0x103c, sp(32, -16)), at(0x1040, sp(8, 0)),
		at(0x1042, sp(16, -16)), at(0x1045, sp(32, -16)), at(0x104d, sp(16, -16)), at(0x104e, sp(8, 0)),
		at(0x104f, eos), at(0x105f, sp(8, 0)), at(0x1063, invalid),
	}
	funcs116 := slices.Clone(goTestFuncs)
	for i := range funcs116 {
		funcs116[i].Flag = 0
	}
	for _, c := range []struct {
		magic uint32
		funcs []gopclntabtest.Func
		want  []Row
	}{
		{gopclntab.Magic116, funcs116, want116},
		{gopclntab.Magic118, goTestFuncs, want},
		{gopclntab.Magic120, goTestFuncs, want},
	} {
		got, err := goRowsOf(t, gopclntabtest.Build(c.magic, 0x1000, c.funcs), goTestCode())
		if err != nil {
			t.Fatalf("%#x: %v", c.magic, err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%#x:\ngot  %+v\nwant %+v", c.magic, got, c.want)
		}
	}
}

// TestNamedApartAreAsm checks what namedApart relies on in real Go
// binaries (the go command, this test, a cgo program): from Go 1.20 every
// function whose rows its name decides is flagged as assembly, so that
// the names of the functions that are not need not be read.
func TestNamedApartAreAsm(t *testing.T) {
	bins := map[string]string{
		"go":   goBinary(t),
		"test": os.Args[0],
		"cgo":  testenv.BuildGo(t, cgoSource, true, "-trimpath"),
	}
	for name, path := range bins {
		t.Run(name, func(t *testing.T) {
			f, ef := openELF(t, path)
			sec := withData(ef, ".gopclntab")
			if sec == nil {
				t.Fatal("no .gopclntab")
			}
			data, mapping, err := gopclntab.MapSection(f.OSFile(), sec)
			if err != nil {
				t.Fatal(err)
			}
			defer unmap(mapping)
			tab, err := gopclntab.Parse(data, ef.ByteOrder)
			if err != nil {
				t.Fatal(err)
			}
			if tab.Magic() != gopclntab.Magic120 {
				t.Skipf("magic %#x: names are all read", tab.Magic())
			}
			found := 0
			for i := range tab.NumFuncs() {
				fn, ok := tab.Func(i)
				if !ok {
					continue
				}
				switch n := tab.Name(fn.NameOff); n {
				case "runtime.mcall", "runtime.morestack", "runtime.goexit", "runtime.mstart", "runtime.rt0_go":
					found++
					if !namedApart(tab, &fn) {
						t.Errorf("%s (flags %#x) is not flagged as assembly: its name would not be read", n, fn.Flag)
					}
				}
			}
			if found < 2 {
				t.Errorf("%d of runtime.mcall, runtime.morestack… found", found)
			}
		})
	}
}
