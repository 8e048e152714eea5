package nativeunwind

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
)

// hostFiles are large files of the host the tests build tables for, found
// where they are installed (testenv.Missing when they are not).
var hostFiles = []struct {
	name string
	path func(testing.TB) string
}{
	{"libc", testenv.Libc},
	{"libpython", testenv.SystemLibpython},
	{"go", goBinary},
}

// goBinary returns the go command of the toolchain that built the test, a
// large Go binary.
func goBinary(tb testing.TB) string {
	tb.Helper()
	p, err := filepath.EvalSymlinks(testenv.GoTool())
	if err != nil {
		testenv.Missing(tb, "no go command: %v", err)
	}
	return p
}

// openELF opens path as an ELF file, closed when the test ends.
func openELF(tb testing.TB, path string) (*elffile.File, *elf.File) {
	tb.Helper()
	f, err := elffile.Open(elffile.Source{Open: func() (*os.File, error) { return os.Open(path) }, Path: path})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f, f.ELF
}

// fromBytes parses data as an ELF file.
func fromBytes(tb testing.TB, data []byte) *elffile.File {
	tb.Helper()
	f, err := elffile.NewReader(bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// build returns the table of the file at path, with its debug file when
// debugPath is not "".
func build(tb testing.TB, path, debugPath string) *Table {
	tb.Helper()
	f, _ := openELF(tb, path)
	var dbg *elffile.File
	if debugPath != "" {
		dbg, _ = openELF(tb, debugPath)
	}
	t, err := Build(f, dbg, Options{})
	if err != nil {
		tb.Fatalf("Build(%s): %v", path, err)
	}
	checkTable(tb, t.Rows())
	return t
}

// checkTable checks the invariants of a table's rows.
func checkTable(tb testing.TB, rows []Row) {
	tb.Helper()
	for i, r := range rows {
		if r.CFA > CFAGoMcall {
			tb.Fatalf("row %d: kind %d", i, r.CFA)
		}
		if i > 0 && rows[i-1].Addr >= r.Addr {
			tb.Fatalf("rows %d and %d out of order: %+v, %+v", i-1, i, rows[i-1], r)
		}
		if i > 0 && sameRule(rows[i-1], r) {
			tb.Fatalf("rows %d and %d not merged: %+v, %+v", i-1, i, rows[i-1], r)
		}
	}
	if n := len(rows); n > 0 && rows[n-1].CFA != CFAInvalid {
		tb.Fatalf("last row %+v is not CFAInvalid", rows[n-1])
	}
}

// lookup returns the rule for the file offset off, CFAInvalid before the
// first row.
func lookup(t *Table, off uint64) Row {
	i := sort.Search(t.Len(), func(i int) bool { addr, _ := t.At(i); return addr > off })
	if i == 0 {
		return Row{Addr: off, CFA: CFAInvalid}
	}
	return t.Row(i - 1)
}

// rule is a row without its address, for comparisons.
func rule(r Row) Row {
	r.Addr = 0
	return r
}

// fileOffset converts an address of ef to a file offset through its
// executable PT_LOAD segments.
func fileOffset(tb testing.TB, ef *elf.File, vaddr uint64) uint64 {
	tb.Helper()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && vaddr >= p.Vaddr && vaddr < p.Vaddr+p.Filesz {
			return vaddr - p.Vaddr + p.Off
		}
	}
	tb.Fatalf("address %#x is in no executable segment", vaddr)
	return 0
}

// symbol returns the address and size of the function name in ef's
// .symtab or .dynsym.
func symbol(tb testing.TB, ef *elf.File, name string) (addr, size uint64) {
	tb.Helper()
	for _, get := range []func() ([]elf.Symbol, error){ef.Symbols, ef.DynamicSymbols} {
		syms, _ := get()
		for _, s := range syms {
			if s.Name == name && s.Value != 0 {
				return s.Value, s.Size
			}
		}
	}
	tb.Fatalf("no symbol %s", name)
	return 0, 0
}

// buildC compiles the C source src with gcc and flags into a temporary
// directory and returns the binary's path.
func buildC(tb testing.TB, src string, flags ...string) string {
	tb.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		testenv.Missing(tb, "gcc not found")
	}
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prog.c"), []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	run(tb, dir, "gcc", append(flags, "-o", bin, "prog.c")...)
	return bin
}

// run runs a command in dir and fails the test when it fails.
func run(tb testing.TB, dir, name string, args ...string) string {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// insn is one disassembled instruction.
type insn struct {
	addr, next uint64
	text       string // mnemonic and operands, AT&T syntax
}

// disassemble returns the instructions of the function fn in bin, by GNU
// objdump.
func disassemble(tb testing.TB, bin, fn string) []insn {
	tb.Helper()
	if _, err := exec.LookPath("objdump"); err != nil {
		testenv.Missing(tb, "objdump not found")
	}
	out := run(tb, "", "objdump", "-d", "--no-show-raw-insn", "--disassemble="+fn, bin)
	var insns []insn
	for _, line := range strings.Split(out, "\n") {
		addr, text, ok := strings.Cut(strings.TrimSpace(line), ":\t")
		if !ok {
			continue
		}
		var a uint64
		if _, err := fmt.Sscanf(addr, "%x", &a); err != nil {
			continue
		}
		if n := len(insns); n > 0 {
			insns[n-1].next = a
		}
		insns = append(insns, insn{addr: a, text: strings.Join(strings.Fields(text), " ")})
	}
	if len(insns) == 0 {
		tb.Fatalf("objdump found no function %s in %s", fn, bin)
	}
	insns = insns[:len(insns)-1] // its next is unknown
	return insns
}

// sameRule reports whether two rows say the same (everything but Addr).
func sameRule(a, b Row) bool {
	a.Addr = b.Addr
	return a == b
}

// packRows returns rows packed as a build keeps them, their rules in rs.
func packRows(tb testing.TB, rs *ruleSet, rows []Row) []uint64 {
	tb.Helper()
	out := make([]uint64, len(rows))
	for i, r := range rows {
		rule, ok := rs.intern(r)
		if !ok || r.Addr >= MaxAddr {
			tb.Fatalf("row %+v cannot be packed", r)
		}
		out[i] = packRow(r.Addr, rule)
	}
	return out
}

// unpackRows returns packed rows, their rules in rs, as Rows.
func unpackRows(rs *ruleSet, rows []uint64) []Row {
	out := make([]Row, len(rows))
	for i, p := range rows {
		out[i] = rs.rules[rowRule(p)]
		out[i].Addr = rowAddr(p)
	}
	return out
}

// newRuleSet returns an empty ruleSet.
func newRuleSet() *ruleSet {
	var rs ruleSet
	rs.reset()
	return &rs
}
