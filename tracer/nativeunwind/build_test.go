package nativeunwind

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
)

// libcDebugPath returns the path of libc's separate debug file (from
// libc6-dbg); testenv.Missing without it.
func libcDebugPath(t *testing.T, libc string) string {
	t.Helper()
	f, _ := openELF(t, libc)
	p, ok := elffile.BuildIDPath(f.BuildIDs().GNU)
	if !ok {
		t.Fatalf("%s has no build ID", libc)
	}
	p = "/" + p
	if _, err := os.Stat(p); err != nil {
		testenv.Missing(t, "no libc debug file (libc6-dbg): %v", err)
	}
	return p
}

func TestLibc(t *testing.T) {
	libcPath := testenv.Libc(t)
	_, ef := openELF(t, libcPath)
	tab := build(t, libcPath, "")
	if tab.Sources != SourceEHFrame {
		t.Errorf("Sources = %b, want .eh_frame only", tab.Sources)
	}

	// qsort: rsp+8 at entry, usable rules all along, and none past it.
	addr, size := symbol(t, ef, "qsort")
	entry := fileOffset(t, ef, addr)
	if got := rule(lookup(tab, entry)); got != (Row{CFA: CFASP, CFAOffset: 8, RAOffset: -8}) {
		t.Errorf("qsort entry: %+v", got)
	}
	for off := entry; off < entry+size; off++ {
		if got := lookup(tab, off); got.CFA != CFASP && got.CFA != CFAFP {
			t.Fatalf("qsort+%#x: %+v", off-entry, got)
		}
	}
	if got := lookup(tab, entry+size); got.Addr < entry+size-1 && got.CFA != CFAInvalid {
		t.Errorf("qsort's last rule goes on past its end: %+v", got)
	}

	// __restore_rt, named in the debug file only, is a signal trampoline.
	dbgPath := libcDebugPath(t, libcPath)
	_, dbg := openELF(t, dbgPath)
	addr, _ = symbol(t, dbg, "__restore_rt")
	if got := rule(lookup(tab, fileOffset(t, ef, addr))); got != (Row{CFA: CFASignal}) {
		t.Errorf("__restore_rt: %+v, want CFASignal", got)
	}

	// The debug file (without .debug_frame) changes nothing.
	withDebug := build(t, libcPath, dbgPath)
	if withDebug.Len() != tab.Len() || withDebug.Sources != tab.Sources {
		t.Errorf("with the debug file: %d rows from %b, want %d from %b", withDebug.Len(), withDebug.Sources, tab.Len(), tab.Sources)
	}
}

const cSource = `#include <stdio.h>
__attribute__((noipa)) void sink(char *p) { p[0] = 1; }
__attribute__((noipa)) int work(int n) { char buf[256]; sink(buf); return buf[0] + n; }
int main(int argc, char **argv) { printf("%d\n", work(argc)); return 0; }
`

// simulate follows the stack pointer through the instructions of a
// function and checks the row after each against it, until the function
// returns or changes the stack pointer in a way it does not follow. It
// returns how many rows it checked.
// In Go code (goCode), the CFA stays computed from the stack pointer.
func simulate(t *testing.T, tab *Table, ef *elf.File, fn string, insns []insn, goCode bool) int {
	t.Helper()
	want := Row{CFA: CFASP, CFAOffset: 8, RAOffset: -8}
	checkFP := true
	if got := rule(lookup(tab, fileOffset(t, ef, insns[0].addr))); got != want {
		t.Fatalf("%s entry: %+v, want %+v", fn, got, want)
	}
	imm := func(s string) int32 {
		v, err := strconv.ParseInt(strings.TrimPrefix(s[1:strings.Index(s, ",")], "0x"), 16, 32)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		return int32(v)
	}
	checked := 0
	for _, in := range insns {
		op, args, _ := strings.Cut(in.text, " ")
		switch {
		case op == "ret":
			return checked
		case op == "push" && want.CFA == CFASP:
			want.CFAOffset += 8
			if args == "%rbp" {
				want.FPOffset = -want.CFAOffset
			}
		case op == "pop" && want.CFA == CFASP:
			want.CFAOffset -= 8
			if args == "%rbp" {
				checkFP = false
			}
		case op == "sub" && strings.HasSuffix(args, ",%rsp") && args[0] == '$':
			if want.CFA == CFASP {
				want.CFAOffset += imm(args)
			}
		case op == "add" && strings.HasSuffix(args, ",%rsp") && args[0] == '$':
			if want.CFA == CFASP {
				want.CFAOffset -= imm(args)
			}
		case op == "mov" && args == "%rsp,%rbp":
			if !goCode {
				want.CFA = CFAFP
			}
		case op == "leave":
			want = Row{CFA: CFASP, CFAOffset: 8, RAOffset: -8}
			checkFP = false
		case strings.HasSuffix(args, "%rsp") || strings.HasSuffix(args, "%rbp") && want.CFA == CFAFP:
			t.Logf("%s: stops following at %q", fn, in.text)
			return checked
		}
		got := rule(lookup(tab, fileOffset(t, ef, in.next)))
		if !checkFP {
			got.FPOffset = want.FPOffset
		}
		if got != want {
			t.Fatalf("%s at %#x, after %q: %+v, want %+v", fn, in.next, in.text, got, want)
		}
		checked++
	}
	return checked
}

func TestCFrames(t *testing.T) {
	for _, flags := range [][]string{
		{"-O2", "-fomit-frame-pointer"},
		{"-O2", "-fno-omit-frame-pointer"},
		{"-O0"},
	} {
		t.Run(strings.Join(flags, " "), func(t *testing.T) {
			bin := buildC(t, cSource, flags...)
			_, ef := openELF(t, bin)
			tab := build(t, bin, "")
			insns := disassemble(t, bin, "work")
			n := simulate(t, tab, ef, "work", insns, false)
			if n < 2 {
				t.Errorf("checked %d rows of work", n)
			}
			fp := flags[len(flags)-1] != "-fomit-frame-pointer"
			sawFP := false
			for _, in := range insns {
				if got := lookup(tab, fileOffset(t, ef, in.addr)); got.CFA == CFAFP {
					sawFP = true
					if rule(got) != (Row{CFA: CFAFP, CFAOffset: 16, FPOffset: -16, RAOffset: -8}) {
						t.Errorf("work at %#x: %+v", in.addr, got)
					}
				}
			}
			if sawFP != fp {
				t.Errorf("CFAFP rows in work: %v, want %v", sawFP, fp)
			}

			// _start (Scrt1.o) marks the end of the stack.
			addr, _ := symbol(t, ef, "_start")
			if got := lookup(tab, fileOffset(t, ef, addr)); got.CFA != CFAEndOfStack {
				t.Errorf("_start: %+v, want CFAEndOfStack", got)
			}
		})
	}
}

// pltRows checks the rows of the lazy-binding .plt of bin: the first stub
// pushes twice, the others by the PLT expression, whose threshold readelf
// shows.
func pltRows(t *testing.T, bin string) {
	t.Helper()
	m := regexp.MustCompile(`DW_OP_lit(\d+); DW_OP_ge`).FindStringSubmatch(run(t, "", "readelf", "-wf", bin))
	if m == nil {
		t.Fatalf("%s has no PLT expression", bin)
	}
	thr, _ := strconv.ParseUint(m[1], 10, 8)
	t.Logf("threshold %d", thr)
	_, ef := openELF(t, bin)
	tab := build(t, bin, "")
	plt := ef.Section(".plt")
	if plt == nil || plt.Size < 32 {
		t.Fatalf("%s has no PLT stubs", bin)
	}
	start := fileOffset(t, ef, plt.Addr)
	if got := rule(lookup(tab, start)); got != (Row{CFA: CFASP, CFAOffset: 16, RAOffset: -8}) {
		t.Errorf(".plt+0: %+v", got)
	}
	if got := rule(lookup(tab, start+6)); got != (Row{CFA: CFASP, CFAOffset: 24, RAOffset: -8}) {
		t.Errorf(".plt+6: %+v", got)
	}
	for pc := plt.Addr + 16; pc < plt.Addr+plt.Size; pc++ {
		got := rule(lookup(tab, fileOffset(t, ef, pc)))
		want := Row{CFA: CFAPLT, CFAOffset: 8, RAOffset: -8}
		if thr != 11 {
			want = Row{CFA: CFASP, CFAOffset: 8, RAOffset: -8}
			if pc&15 >= thr {
				want.CFAOffset = 16
			}
		}
		if got != want {
			t.Fatalf(".plt+%#x: %+v, want %+v", pc-plt.Addr, got, want)
		}
	}
}

func TestPLT(t *testing.T) {
	t.Run("lazy", func(t *testing.T) {
		pltRows(t, buildC(t, cSource, "-O2", "-Wl,-z,lazy"))
	})
	t.Run("ibt", func(t *testing.T) {
		// GNU ld's IBT PLT has another threshold.
		pltRows(t, buildC(t, cSource, "-O2", "-fcf-protection=full", "-Wl,-z,lazy,-z,ibtplt"))
	})
}

// TestDebugFrame checks that rows come from .debug_frame, of the file and
// of its separate debug file, where .eh_frame has none.
func TestDebugFrame(t *testing.T) {
	full := buildC(t, cSource, "-O2", "-g", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fomit-frame-pointer")
	dir := filepath.Dir(full)
	dbg := filepath.Join(dir, "prog.debug")
	stripped := filepath.Join(dir, "prog.stripped")
	run(t, dir, "objcopy", "--only-keep-debug", full, dbg)
	run(t, dir, "objcopy", "--strip-debug", full, stripped)

	_, ef := openELF(t, full)
	if ef.Section(".debug_frame") == nil {
		t.Skip("gcc made no .debug_frame")
	}
	addr, _ := symbol(t, ef, "work")
	off := fileOffset(t, ef, addr)
	want := Row{CFA: CFASP, CFAOffset: 8, RAOffset: -8}
	for _, c := range []struct {
		name, bin, dbg string
		ok             bool
	}{
		{"own .debug_frame", full, "", true},
		{"stripped", stripped, "", false},
		{"debug file", stripped, dbg, true},
	} {
		tab := build(t, c.bin, c.dbg)
		got := rule(lookup(tab, off))
		if c.ok != (got == want) || c.ok != (tab.Sources&SourceDebugFrame != 0) {
			t.Errorf("%s: work: %+v from %b", c.name, got, tab.Sources)
		}
		if tab.Sources&SourceEHFrame == 0 {
			t.Errorf("%s: no rows from .eh_frame (crt files)", c.name)
		}
	}
	insns := disassemble(t, full, "work")
	if n := simulate(t, build(t, stripped, dbg), ef, "work", insns, false); n < 2 {
		t.Errorf("checked %d rows", n)
	}
}

// goFuncs are the functions of the Go test programs.
const goFuncs = `
//go:noinline
func leaf(x int) int { return x*3 + 1 }

//go:noinline
func framed(n int) int {
	var buf [64]int
	for i := range buf {
		buf[i] = leaf(i + n)
	}
	s := 0
	for _, v := range buf {
		s += v
	}
	return s
}
`

const goSource = `package main

import (
	"fmt"
	"os"
	"time"
)

func main() { fmt.Println(framed(len(os.Args)), time.Now()) }
` + goFuncs

// checkGo checks the rows of the Go functions of bin.
func checkGo(t *testing.T, bin string) *Table {
	t.Helper()
	_, ef := openELF(t, bin)
	tab := build(t, bin, "")
	if tab.Sources&SourceGoPCLNTab == 0 {
		t.Errorf("Sources = %b, want .gopclntab", tab.Sources)
	}
	at := func(name string, delta uint64) Row {
		addr, _ := symbol(t, ef, name)
		return rule(lookup(tab, fileOffset(t, ef, addr+delta)))
	}
	entry := Row{CFA: CFASP, CFAOffset: 8, RAOffset: -8}
	addr, size := symbol(t, ef, "main.leaf")
	for off := uint64(0); off < size; off++ {
		if got := at("main.leaf", off); got != entry {
			t.Fatalf("main.leaf+%#x: %+v, want %+v", off, got, entry)
		}
	}
	if got := lookup(tab, fileOffset(t, ef, addr+size)); got.Addr < fileOffset(t, ef, addr) {
		t.Errorf("main.leaf's rule goes on past its end: %+v", got)
	}
	if got := at("main.framed", 0); got != entry {
		t.Errorf("main.framed entry: %+v", got)
	}
	insns := disassemble(t, bin, "main.framed")
	if n := simulate(t, tab, ef, "main.framed", insns, true); n < 3 {
		t.Errorf("checked %d rows of main.framed", n)
	}
	if got := at("runtime.goexit.abi0", 1); got.CFA != CFAEndOfStack {
		t.Errorf("runtime.goexit: %+v, want CFAEndOfStack", got)
	}
	// runtime.morestack and runtime.mcall switch to the system stack
	// without a frame pointer: they end the stack there (mcall with a
	// rule of its own, which off-CPU traces follow to the goroutine).
	if got := at("runtime.morestack.abi0", 0); got.CFA != CFAEndOfStack {
		t.Errorf("runtime.morestack: %+v, want CFAEndOfStack", got)
	}
	if got := at("runtime.mcall", 0); got.CFA != CFAGoMcall {
		t.Errorf("runtime.mcall: %+v, want CFAGoMcall", got)
	}
	// runtime.nanotime1 switches to the system stack with a frame pointer,
	// which then finds its frame.
	_, size = symbol(t, ef, "runtime.nanotime1.abi0")
	byFP := 0
	for off := range size {
		if got := at("runtime.nanotime1.abi0", off); got.CFA == CFAFP {
			if got != (Row{CFA: CFAFP, CFAOffset: 16, FPOffset: -16, RAOffset: -8}) {
				t.Fatalf("runtime.nanotime1+%#x: %+v", off, got)
			}
			byFP++
		}
	}
	if byFP == 0 || at("runtime.nanotime1.abi0", 0) != entry {
		t.Errorf("runtime.nanotime1: %d bytes by frame pointer; entry %+v", byFP, at("runtime.nanotime1.abi0", 0))
	}
	return tab
}

func TestGo(t *testing.T) {
	bin := testenv.BuildGo(t, goSource, false)
	pcsp := checkGo(t, bin)

	// A Go 1.15 .gopclntab, which Build does not read, leaves the
	// (compressed) .debug_frame of the Go linker, which agrees on the CFA
	// but does not say where the frame pointer is saved.
	_, ef := openELF(t, bin)
	old := patch(t, bin, int(ef.Section(".gopclntab").Offset), u32(0xfffffffb))
	tab, err := Build(fromBytes(t, old), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkTable(t, tab.Rows())
	if tab.Sources != SourceDebugFrame {
		t.Errorf("Sources = %b, want .debug_frame", tab.Sources)
	}
	for _, name := range []string{"main.leaf", "main.framed", "main.main", "fmt.Fprintln", "runtime.mallocgc"} {
		addr, size := symbol(t, ef, name)
		for off := fileOffset(t, ef, addr); off < fileOffset(t, ef, addr+size); off++ {
			got, want := rule(lookup(tab, off)), rule(lookup(pcsp, off))
			want.FPOffset = 0
			if got != want {
				t.Fatalf("%s+%#x: .debug_frame says %+v, .gopclntab %+v", name, off-fileOffset(t, ef, addr), got, want)
			}
		}
	}
}

const cgoSource = `package main

/*
__attribute__((noinline)) static int cwork(int n) { volatile char b[100]; for (int i = 0; i < n; i++) b[i % 100] = i; return b[n % 100]; }
int cfunc(int n) { return cwork(n) + 1; }
*/
import "C"

import (
	"fmt"
	"os"
	"time"
)

func main() { fmt.Println(framed(len(os.Args)), C.cfunc(3), time.Now()) }
` + goFuncs

func TestCgo(t *testing.T) {
	if _, err := os.Stat("/usr/bin/gcc"); err != nil {
		testenv.Missing(t, "no gcc for cgo")
	}
	bin := testenv.BuildGo(t, cgoSource, true)
	tab := checkGo(t, bin)
	if tab.Sources&SourceEHFrame == 0 {
		t.Errorf("Sources = %b, want .eh_frame too", tab.Sources)
	}
	_, ef := openELF(t, bin)
	addr, _ := symbol(t, ef, "cfunc")
	if got := rule(lookup(tab, fileOffset(t, ef, addr))); got != (Row{CFA: CFASP, CFAOffset: 8, RAOffset: -8}) {
		t.Errorf("cfunc: %+v", got)
	}
	insns := disassemble(t, bin, "cwork")
	if n := simulate(t, tab, ef, "cwork", insns, false); n < 1 {
		t.Errorf("checked %d rows of cwork", n)
	}
}

// patch returns a copy of the file at path with data written at off.
func patch(t *testing.T, path string, off int, data []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[off:], data)
	return b
}

func TestErrors(t *testing.T) {
	bin := buildC(t, cSource, "-O2")
	noCFI := filepath.Join(filepath.Dir(bin), "nocfi")
	run(t, "", "objcopy", "-R", ".eh_frame", "-R", ".eh_frame_hdr", bin, noCFI)
	arm := patch(t, bin, 18, binary.LittleEndian.AppendUint16(nil, uint16(elf.EM_AARCH64)))
	// A file whose .eh_frame runs past its end.
	_, ef := openELF(t, bin)
	size, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	shoff := binary.LittleEndian.Uint64(patch(t, bin, 0, nil)[0x28:])
	idx := slices.Index(ef.Sections, ef.Section(".eh_frame"))
	short := filepath.Join(filepath.Dir(bin), "short")
	data := patch(t, bin, int(shoff)+64*idx+24, u64(uint64(size.Size())-16)) // sh_offset
	if err := os.WriteFile(short, data, 0o644); err != nil {
		t.Fatal(err)
	}
	open := func(path string) *elffile.File {
		f, _ := openELF(t, path)
		return f
	}
	if _, err := elffile.NewReader(bytes.NewReader([]byte("#!/bin/sh\n"))); err == nil || !strings.Contains(err.Error(), "not a readable ELF") {
		t.Errorf("a shell script parsed as ELF: %v", err)
	}
	libcPath := testenv.Libc(t)
	for _, c := range []struct {
		name  string
		f     func() (*Table, error)
		want  error
		wants string
	}{
		{"arm64", func() (*Table, error) { return Build(fromBytes(t, arm), nil, Options{}) }, ErrUnsupportedArch, "EM_AARCH64"},
		{"no CFI", func() (*Table, error) { return Build(open(noCFI), nil, Options{}) }, ErrNoCFI, ""},
		{"rows", func() (*Table, error) { return Build(open(bin), nil, Options{MaxRows: 10}) }, ErrTooLarge, "more than 10 rows"},
		{"section", func() (*Table, error) { return Build(open(bin), nil, Options{MaxSectionBytes: 100}) }, ErrTooLarge, ".eh_frame"},
		{"CIEs", func() (*Table, error) { return Build(open(libcPath), nil, Options{MaxCIEs: 1}) }, ErrTooLarge, "CIEs"},
		{"negative", func() (*Table, error) { return Build(open(bin), nil, Options{MaxRows: -1}) }, nil, "negative"},
		{"debug file for arm64", func() (*Table, error) { return Build(open(bin), fromBytes(t, arm), Options{}) }, nil, "debug file"},
		{"section past the end", func() (*Table, error) { return Build(open(short), nil, Options{}) }, nil, ".eh_frame"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tab, err := c.f()
			if err == nil || tab != nil {
				t.Fatalf("got %v rows, err %v", tab, err)
			}
			if c.want != nil && !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.wants) || !strings.HasPrefix(err.Error(), "nativeunwind: ") {
				t.Errorf("err = %v, want %v and %q", err, c.want, c.wants)
			}
		})
	}
}

// TestEntryPointEndsStack: the dynamic loader's _start has no call frame
// information; as the ELF entry point it ends the stack instead of
// reporting missing information.
func TestEntryPointEndsStack(t *testing.T) {
	ldso := testenv.DynamicLoader(t)
	_, ef := openELF(t, ldso)
	tab := build(t, ldso, "")
	off := fileOffset(t, ef, ef.Entry)
	if r := lookup(tab, off); r.CFA != CFAEndOfStack {
		t.Errorf("entry point %#x (file offset %#x): %+v, want CFAEndOfStack", ef.Entry, off, r)
	}
	// A return address into _start (after its call of _dl_start) is
	// looked up one byte before it, still inside the entry code.
	if r := lookup(tab, off+4); r.CFA != CFAEndOfStack {
		t.Errorf("entry point + 4: %+v, want CFAEndOfStack", r)
	}
}

// TestGoDebugFrameSkipped: the .debug_frame of a Go binary linked by Go's
// linker adds no rows to those of its .gopclntab, so Build skips it.
func TestGoDebugFrameSkipped(t *testing.T) {
	bin := testenv.BuildGo(t, goSource, false)
	f, ef := openELF(t, bin)
	if ef.Section(".eh_frame") != nil {
		t.Fatal("a Go binary without cgo has an .eh_frame")
	}
	sec := withData(ef, ".debug_frame")
	if sec == nil {
		t.Fatal("the Go binary has no .debug_frame")
	}
	tab, err := Build(f, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tab.Sources != SourceGoPCLNTab {
		t.Errorf("Sources = %b, want .gopclntab alone", tab.Sources)
	}
	// The rows .debug_frame would add under those of .gopclntab.
	var b Builder
	opts := Options{}
	if err := opts.normalize(); err != nil {
		t.Fatal(err)
	}
	a, err := archFor(ef.Machine)
	if err != nil {
		t.Fatal(err)
	}
	b.arch, b.opts = a, opts
	b.segs = appendExecSegments(b.segs[:0], ef)
	b.rules.reset() // as build does before the first source
	bs := &buildState{arch: &b.arch, opts: &b.opts, segs: b.segs, scratch: &b}
	goRows, err := bs.goSection(ef, f.ReaderAt(), withData(ef, ".gopclntab"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(goRows) == 0 {
		t.Fatal("no .gopclntab rows")
	}
	goRows = slices.Clone(goRows)
	layer, err := bs.frameSection(ef, f.ReaderAt(), sec, newCoverage(nil, goRows), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(layer) != 0 {
		t.Errorf(".debug_frame adds %d rows under .gopclntab's, first %+v", len(layer), layer[0])
	}
	// Alone, it has rows for the same functions.
	alone, err := bs.frameSection(ef, f.ReaderAt(), sec, newCoverage(nil, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(alone) < len(goRows)/4 {
		t.Errorf(".debug_frame alone has %d rows, .gopclntab %d", len(alone), len(goRows))
	}
	t.Logf(".gopclntab %d rows, .debug_frame alone %d, under .gopclntab 0", len(goRows), len(alone))
}
