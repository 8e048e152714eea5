package symbolizer

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/trace"
)

// openPath returns a Source.Open for path.
func openPath(path string) func() (*os.File, error) {
	return func() (*os.File, error) { return os.Open(path) }
}

// lineOf returns the 1-based number of the first line of src containing s.
func lineOf(tb testing.TB, src, s string) int64 {
	tb.Helper()
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, s) {
			return int64(i + 1)
		}
	}
	tb.Fatalf("%q not in the source", s)
	return 0
}

// copyFile copies src to dst, creating dst's directories.
func copyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// splitDebug builds cSource with -g and returns the unstripped binary, a
// stripped copy and the debug file made by objcopy --only-keep-debug, all
// in one directory.
func splitDebug(t *testing.T) (bin, stripped, debug string) {
	t.Helper()
	bin = build(t, "gcc", cSource, ".c", "prog.full", "-O0", "-g", "-fno-builtin", "-Wl,--build-id")
	dir := filepath.Dir(bin)
	debug = filepath.Join(dir, "prog.debug")
	stripped = filepath.Join(dir, "prog")
	run(t, dir, "objcopy", "--only-keep-debug", bin, debug)
	run(t, dir, "strip", "-o", stripped, bin)
	return bin, stripped, debug
}

// checkC checks that alpha, beta and gamma are named in f, with the line
// of their definition in prog.c when lines is set.
func checkC(t *testing.T, f *File, bin string, lines bool) {
	t.Helper()
	for _, name := range []string{"alpha", "beta", "gamma"} {
		off, _ := symbolOffset(t, bin, name, false)
		got := f.Lookup(off, nil)
		want := trace.Line{Function: name}
		if lines {
			want.Line = lineOf(t, cSource, " "+name+"(int x)")
		}
		if len(got) != 1 || got[0].Function != want.Function || got[0].Line != want.Line ||
			lines && filepath.Base(got[0].File) != "prog.c" {
			t.Errorf("Lookup(%s) = %+v, want %+v in prog.c", name, got, want)
		}
	}
}

func TestDebugFileBuildID(t *testing.T) {
	bin, stripped, debug := splitDebug(t)
	id := parseFile(t, stripped, DemangleSimple).Info().GNUBuildID
	p, ok := elffile.BuildIDPath(id)
	if !ok {
		t.Fatalf("build ID %q", id)
	}
	root := t.TempDir()
	copyFile(t, debug, filepath.Join(root, p))

	// Alone, the stripped binary names nothing.
	off, _ := symbolOffset(t, bin, "alpha", false)
	if got := parseFile(t, stripped, DemangleSimple).Lookup(off, nil); len(got) != 0 {
		t.Fatalf("stripped binary named alpha: %+v", got)
	}
	f, err := Load(elffile.Source{Open: openPath(stripped), Root: root, Path: "/usr/bin/prog"}, Options{LineInfo: true})
	if err != nil {
		t.Fatal(err)
	}
	checkC(t, f, bin, true)
	if info := f.Info(); info.DebugFile != p || !info.LineInfo {
		t.Errorf("Info() = %+v, want debug file %s with lines", info, p)
	}
	// Without line info, names only.
	f, err = Load(elffile.Source{Open: openPath(stripped), Root: root}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkC(t, f, bin, false)
	// Another root has no debug file.
	f, err = Load(elffile.Source{Open: openPath(stripped), Root: t.TempDir()}, Options{LineInfo: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Lookup(off, nil); len(got) != 0 {
		t.Errorf("named without a debug file: %+v", got)
	}
}

func TestDebuglink(t *testing.T) {
	bin, stripped, debug := splitDebug(t)
	run(t, filepath.Dir(stripped), "objcopy", "--add-gnu-debuglink=prog.debug", stripped)
	for _, loc := range []string{"opt/app/prog.debug", "opt/app/.debug/prog.debug", "usr/lib/debug/opt/app/prog.debug"} {
		root := t.TempDir()
		copyFile(t, debug, filepath.Join(root, loc))
		f, err := Load(elffile.Source{Open: openPath(stripped), Root: root, Path: "/opt/app/prog"}, Options{LineInfo: true})
		if err != nil {
			t.Fatal(err)
		}
		checkC(t, f, bin, true)
		if f.Info().DebugFile != loc {
			t.Errorf("%s: DebugFile = %q", loc, f.Info().DebugFile)
		}
	}

	// A debug file with another CRC is ignored and counted.
	root := t.TempDir()
	data, err := os.ReadFile(debug)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(root, "opt/app/prog.debug")
	if err := os.MkdirAll(filepath.Dir(bad), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, append(data, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{LineInfo: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.File(trace.FileID{1}, elffile.Source{Open: openPath(stripped), Root: root, Path: "/opt/app/prog"})
	if err != nil {
		t.Fatal(err)
	}
	off, _ := symbolOffset(t, bin, "alpha", false)
	if got := f.Lookup(off, nil); len(got) != 0 || f.Info().DebugFile != "" {
		t.Errorf("wrong-CRC debug file used: %+v, %+v", got, f.Info())
	}
	if st := s.Stats(); st.DebuglinkMismatches != 1 || st.DebugFiles != 0 {
		t.Errorf("Stats() = %+v, want one CRC mismatch", st)
	}
}

func TestLibcDebugFile(t *testing.T) {
	libcPath := testenv.Libc(t)
	id := parseFile(t, libcPath, DemangleSimple).Info().GNUBuildID
	p, _ := elffile.BuildIDPath(id)
	dbgPath := "/" + p
	if _, err := os.Stat(dbgPath); err != nil {
		testenv.Missing(t, "libc6-dbg not installed: %v", err)
	}
	s, err := New(Options{LineInfo: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.File(trace.FileID{7}, elffile.Source{Open: openPath(libcPath), Path: libcPath})
	if err != nil {
		t.Fatal(err)
	}
	if f.Info().DebugFile != p || !f.Info().LineInfo {
		t.Errorf("Info() = %+v, want debug file %s with lines", f.Info(), p)
	}
	// __libc_start_call_main is local: only the debug file's .symtab
	// names it. Find its address there.
	syms, _ := elfSymbols(t, dbgPath, false)
	var addr uint64
	for _, sym := range syms {
		if sym.Name == "__libc_start_call_main" {
			addr = sym.Value
		}
	}
	if addr == 0 {
		t.Fatal("no __libc_start_call_main in the debug file")
	}
	off := offsetOf(t, libcPath, addr) + 8
	got := f.Lookup(off, nil)
	if len(got) != 1 || got[0].Function != "__libc_start_call_main" || got[0].File == "" || got[0].Line == 0 {
		t.Errorf("Lookup(__libc_start_call_main) = %+v", got)
	}
	t.Logf("__libc_start_call_main+8: %+v", got)
	if got := parseFile(t, libcPath, DemangleSimple).Lookup(off, nil); len(got) == 1 && got[0].Function == "__libc_start_call_main" {
		t.Error("libc alone named __libc_start_call_main")
	}
	for _, name := range []string{"qsort", "malloc"} {
		off, size := symbolOffset(t, libcPath, name, true)
		got := f.Lookup(off+size/2, nil)
		if len(got) != 1 || got[0].Function != name || got[0].File == "" {
			t.Errorf("Lookup(%s) = %+v", name, got)
		}
	}
	t.Logf("libc with debug file: %d symbols, %d bytes; %+v", f.Len(), f.Bytes(), s.Stats())
}

func TestMiniDebugInfo(t *testing.T) {
	for _, tool := range []string{"objcopy", "xz", "strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "%v", err)
		}
	}
	bin := build(t, "gcc", cSource, ".c", "prog", "-O0", "-fno-builtin")
	dir := filepath.Dir(bin)
	// As Fedora does: keep the function symbols that .dynsym lacks in an
	// ELF file of their own, xz it and add it as .gnu_debugdata.
	syms, _ := elfSymbols(t, bin, false)
	var keep strings.Builder
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section != elf.SHN_UNDEF {
			keep.WriteString(s.Name + "\n")
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte(keep.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "objcopy", "--only-keep-debug", "prog", "debug")
	run(t, dir, "objcopy", "-S", "--remove-section", ".gdb_index", "--remove-section", ".comment", "--keep-symbols=keep", "debug", "mini")
	run(t, dir, "xz", "-k", "mini")
	run(t, dir, "strip", "--strip-all", "-R", ".comment", "-o", "stripped", "prog")
	run(t, dir, "objcopy", "--add-section", ".gnu_debugdata=mini.xz", "stripped")

	f := parseFile(t, filepath.Join(dir, "stripped"), DemangleSimple)
	if !f.Info().MiniDebugInfo {
		t.Errorf("Info() = %+v, want MiniDebugInfo", f.Info())
	}
	for _, name := range []string{"alpha", "beta", "gamma", "main"} {
		off, size := symbolOffset(t, bin, name, false)
		checkNamed(t, f, off, size, trace.Line{Function: name})
	}
}

const goInlineSource = `package main

import "os"

func inner(x int) int {
	return x*x + len(os.Args)
}

//go:noinline
func outer(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += inner(i)
	}
	return s
}

func main() {
	os.Exit(outer(len(os.Args)+3) & 1)
}
`

// objdumpLine returns the address of an instruction of function fn that
// go tool objdump attributes to main.go:line.
func objdumpLine(t *testing.T, bin, fn string, line int64) uint64 {
	t.Helper()
	out, err := exec.Command("go", "tool", "objdump", "-s", "^"+fn+"$", bin).Output()
	if err != nil {
		t.Fatalf("objdump: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "main.go:"+strconv.FormatInt(line, 10) {
			continue
		}
		addr, err := strconv.ParseUint(strings.TrimPrefix(fields[1], "0x"), 16, 64)
		if err == nil {
			return addr
		}
	}
	t.Fatalf("no instruction of %s at main.go:%d in\n%s", fn, line, out)
	return 0
}

func TestGoInline(t *testing.T) {
	innerLine := lineOf(t, goInlineSource, "return x*x")
	callLine := lineOf(t, goInlineSource, "s += inner(i)")
	bin := testenv.BuildGo(t, goInlineSource, false)
	addr := objdumpLine(t, bin, "main.outer", innerLine)
	off := offsetOf(t, bin, addr)
	stripped := testenv.BuildGo(t, goInlineSource, false, "-ldflags=-s -w")
	for _, path := range []string{bin, stripped} {
		f := parseFile(t, path, DemangleSimple)
		got := f.Lookup(off, nil)
		if len(got) < 2 ||
			got[0].Function != "main.inner" || got[0].Line != innerLine || filepath.Base(got[0].File) != "main.go" ||
			got[1].Function != "main.outer" || got[1].Line != callLine || filepath.Base(got[1].File) != "main.go" {
			t.Errorf("%s: Lookup(%#x) = %+v, want main.inner:%d in main.outer:%d", filepath.Base(path), addr, got, innerLine, callLine)
		}
		if !f.Info().IsGo || f.goTab == nil {
			t.Errorf("%s: Info() = %+v, no Go table", path, f.Info())
		}
	}
	// The stripped binary has no .symtab, but .gopclntab names main.main.
	ef, err := elf.Open(stripped)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ef.Symbols(); err == nil {
		t.Error("-s -w binary has a .symtab")
	}
	ef.Close()
	mainOff, size := symbolOffset(t, bin, "main.main", false)
	got := parseFile(t, stripped, DemangleSimple).Lookup(mainOff+size/2, nil)
	if len(got) == 0 || got[len(got)-1].Function != "main.main" || got[len(got)-1].Line == 0 {
		t.Errorf("stripped: Lookup(main.main) = %+v", got)
	}
}

const goGenericSource = `package main

import "os"

type Cache[K comparable, V any] struct{ m map[K]V }

//go:noinline
func (c *Cache[K, V]) Put(k K, v V) { c.m[k] = v }

//go:noinline
func Sum[T int | float64](xs []T) (s T) {
	for _, x := range xs {
		s += x
	}
	return s
}

func main() {
	c := &Cache[string, []int]{m: map[string][]int{}}
	c.Put(os.Args[0], nil)
	os.Exit(Sum([]int{len(os.Args)}) + int(Sum([]float64{1})))
}
`

// TestGoGenericNames checks that, with simple demangling, Go's generic
// functions are named as the Go runtime prints them, their shapes as
// "[...]" and the binary's spelling kept as the system name, and that
// DemangleNone keeps the binary's spelling.
func TestGoGenericNames(t *testing.T) {
	bin := testenv.BuildGo(t, goGenericSource, false)
	syms, _ := elfSymbols(t, bin, false)
	want := map[string]string{
		"main.Sum[":     "main.Sum[...]",
		"main.(*Cache[": "main.(*Cache[...]).Put",
	}
	found := 0
	for _, sym := range syms {
		for prefix, printed := range want {
			if !strings.HasPrefix(sym.Name, prefix) || strings.HasSuffix(sym.Name, ".abi0") || sym.Size == 0 {
				continue
			}
			found++
			off, _ := symbolOffset(t, bin, sym.Name, false)
			got := parseFile(t, bin, DemangleSimple).Lookup(off, nil)
			if len(got) == 0 || got[len(got)-1].Function != printed || got[len(got)-1].SystemName != sym.Name {
				t.Errorf("simple: Lookup(%s) = %+v, want %q with system name %q", sym.Name, got, printed, sym.Name)
			}
			got = parseFile(t, bin, DemangleNone).Lookup(off, nil)
			if len(got) == 0 || got[len(got)-1].Function != sym.Name || got[len(got)-1].SystemName != "" {
				t.Errorf("none: Lookup(%s) = %+v, want %q", sym.Name, got, sym.Name)
			}
		}
	}
	if found < len(want) {
		t.Fatalf("%d of the generic functions %v found in the binary's symbols", found, want)
	}
}

func TestGoNameForPrint(t *testing.T) {
	for _, tt := range []struct{ name, want string }{
		{"main.main", "main.main"},
		{"slices.SortFunc[go.shape.[]int,go.shape.int]", "slices.SortFunc[...]"},
		{"p.(*Cache[go.shape.string,go.shape.struct { v go.shape.*uint8; err error }]).Do.func1", "p.(*Cache[...]).Do.func1"},
		{"p.F[go.shape.interface { Get(p.ID) (p.Entry, error) }].func1.1", "p.F[...].func1.1"},
		{"odd]name[", "odd]name["},
		{"p.F[", "p.F["},
	} {
		if got := goNameForPrint(tt.name); got != tt.want {
			t.Errorf("goNameForPrint(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

const rustSource = `use std::ops::Add;

struct Acc<T> {
    v: T,
}

impl<T: Copy + Add<Output = T>> Acc<T> {
    #[inline(never)]
    fn push(&mut self, x: T) -> T {
        self.v = self.v + x;
        self.v
    }
}

fn main() {
    let mut a = Acc { v: std::env::args().count() };
    let r = a.push(3);
    std::process::exit(r as i32 & 1);
}
`

func TestRust(t *testing.T) {
	if _, err := exec.LookPath("rustc"); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.rs"), []byte(rustSource), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "rustc", "-C", "opt-level=1", "-g", "-o", "prog", "main.rs")
	bin := filepath.Join(dir, "prog")
	syms, _ := elfSymbols(t, bin, false)
	var mangled string
	for _, s := range syms {
		if strings.Contains(s.Name, "Acc") && strings.Contains(s.Name, "push") && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			mangled = s.Name
		}
	}
	if mangled == "" {
		t.Fatal("no Acc::push symbol")
	}
	off, _ := symbolOffset(t, bin, mangled, false)
	f := parseOpts(t, bin, Options{LineInfo: true})
	got := f.Lookup(off, nil)
	if len(got) != 1 || got[0].SystemName != mangled || !strings.Contains(got[0].Function, "Acc<") ||
		!strings.HasSuffix(got[0].Function, "::push") || filepath.Base(got[0].File) != "main.rs" ||
		got[0].Line < lineOf(t, rustSource, "fn push") || got[0].Line > lineOf(t, rustSource, "fn push")+2 {
		t.Errorf("Lookup(%s) = %+v", mangled, got)
	}
	t.Logf("%s: %+v", mangled, got)
}

func TestCXXLines(t *testing.T) {
	bin := build(t, "g++", cxxSource, ".cc", "prog", "-O0", "-g")
	f := parseOpts(t, bin, Options{LineInfo: true})
	off, _ := symbolOffset(t, bin, "_ZN2ns5Klass6methodEi", false)
	got := f.Lookup(off, nil)
	want := trace.Line{Function: "ns::Klass::method", SystemName: "_ZN2ns5Klass6methodEi", Line: lineOf(t, cxxSource, "int Klass::method")}
	if len(got) != 1 || got[0].Function != want.Function || got[0].SystemName != want.SystemName ||
		got[0].Line != want.Line || filepath.Base(got[0].File) != "prog.cc" {
		t.Errorf("Lookup(method) = %+v, want %+v in prog.cc", got, want)
	}
}

func TestByteBudget(t *testing.T) {
	bin := build(t, "gcc", cSource, ".c", "prog", "-O0", "-fno-builtin")
	size := int64(parseFile(t, bin, DemangleSimple).Bytes())
	s, err := New(Options{MaxBytes: 2*size + size/2})
	if err != nil {
		t.Fatal(err)
	}
	src := elffile.Source{Open: openPath(bin)}
	for i := range 3 {
		if _, err := s.File(trace.FileID{byte(i + 1)}, src); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Files != 2 || st.Evictions != 1 || st.BytesHeld != uint64(2*size) {
		t.Errorf("Stats() = %+v, want 2 files of %d bytes after 1 eviction", st, size)
	}
	// The first was evicted: asking again loads it again and evicts the
	// second.
	if _, err := s.File(trace.FileID{1}, src); err != nil {
		t.Fatal(err)
	}
	if _, err := s.File(trace.FileID{3}, src); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Loads != 4 || st.Evictions != 2 || st.Hits != 1 || st.BytesHeld > uint64(2*size+size/2) {
		t.Errorf("Stats() = %+v, want 4 loads, 2 evictions, 1 hit", st)
	}

	// A file larger than the whole budget is skipped and counted.
	small, err := New(Options{MaxBytes: size - 1})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		f, err := small.File(trace.FileID{9}, src)
		if err != nil || f.Len() != 0 {
			t.Fatalf("File(too large) = %d symbols, %v; want an empty table", f.Len(), err)
		}
		off, _ := symbolOffset(t, bin, "alpha", false)
		if got := f.Lookup(off, nil); len(got) != 0 {
			t.Errorf("too-large file named: %+v", got)
		}
	}
	if st := small.Stats(); st.TooLarge != 1 || st.Loads != 1 || st.Files != 1 || st.BytesHeld >= uint64(size) {
		t.Errorf("Stats() = %+v, want one too-large file, loaded once", st)
	}
}

func TestDWARFTooLarge(t *testing.T) {
	bin := build(t, "gcc", cSource, ".c", "prog", "-O0", "-g")
	s, err := New(Options{LineInfo: true, MaxDWARFBytes: 16})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.File(trace.FileID{1}, elffile.Source{Open: openPath(bin)})
	if err != nil {
		t.Fatal(err)
	}
	checkC(t, f, bin, false)
	if st := s.Stats(); st.DWARFSkipped != 1 {
		t.Errorf("Stats() = %+v, want one DWARF skip", st)
	}

	// Symbol tables over the section limit are skipped, not read.
	s, err = New(Options{MaxSectionBytes: 64})
	if err != nil {
		t.Fatal(err)
	}
	f, err = s.File(trace.FileID{2}, elffile.Source{Open: openPath(bin)})
	if err != nil {
		t.Fatal(err)
	}
	off, _ := symbolOffset(t, bin, "alpha", false)
	if got := f.Lookup(off, nil); len(got) != 0 {
		t.Errorf("named from a skipped table: %+v", got)
	}
	if st := s.Stats(); st.SectionsSkipped < 2 {
		t.Errorf("Stats() = %+v, want .symtab and .dynsym skipped", st)
	}
}

func FuzzGoTable(f *testing.F) {
	if _, err := exec.LookPath("go"); err == nil {
		bin := testenv.BuildGo(f, goInlineSource, false, "-ldflags=-s -w")
		ef, err := elf.Open(bin)
		if err != nil {
			f.Fatal(err)
		}
		data, err := ef.Section(".gopclntab").Data()
		ef.Close()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:4096])
	}
	f.Add([]byte("\xf1\xff\xff\xff\x00\x00\x01\x08"))
	f.Fuzz(func(t *testing.T, data []byte) {
		gt, err := parseGoTable(bytes.Clone(data), binary.LittleEndian)
		if err != nil {
			return
		}
		// Some inline trees, made up.
		gt.inlFuncs = []uint32{0, 1, 2}
		gt.inlStart = []uint32{0, 2, 4}
		gt.inl = []int32{0, 4, 1 << 30, -8, 3, 0}
		lo, hi := gt.textRange()
		rng := rand.New(rand.NewPCG(uint64(len(data)), 1))
		var buf []trace.Line
		check := func() {
			for range 256 {
				pc := lo + rng.Uint64N(max(hi-lo, 1)+16)
				buf = gt.lookup(pc, buf[:0])
				if len(buf) > maxGoInlineDepth {
					t.Fatalf("%d lines", len(buf))
				}
			}
		}
		check()
		// The same, with inline trees read in place from made-up
		// go:func.* data: the input itself.
		gt.goFunc, gt.order, gt.entSize, gt.nameAt, gt.parentAt = data, binary.LittleEndian, 16, 4, 8
		check()
		_ = gt.bytes()
		_ = gt.mappedBytes()
	})
}

// lookupOffsets returns n random offsets in the executable segment of f.
func lookupOffsets(f *File, n int) []uint64 {
	var text segment
	for _, s := range f.loads {
		if s.exec {
			text = s
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	offs := make([]uint64, n)
	for i := range offs {
		offs[i] = text.off + rng.Uint64N(max(text.filesz, 1))
	}
	return offs
}

func benchmarkLookup(b *testing.B, f *File) {
	offs := lookupOffsets(f, 1<<20)
	b.ReportAllocs()
	b.ResetTimer()
	found, lines, i := 0, 0, 0
	buf := make([]trace.Line, 0, 16)
	for b.Loop() {
		buf = f.Lookup(offs[i&(len(offs)-1)], buf[:0])
		if len(buf) > 0 {
			found++
			lines += len(buf)
		}
		i++
	}
	b.ReportMetric(float64(found)/float64(i), "found/op")
	b.ReportMetric(float64(lines)/float64(max(found, 1)), "lines/found")
	b.ReportMetric(float64(f.Bytes()), "bytes")
}

func BenchmarkLookupLibc(b *testing.B) {
	libcPath := testenv.Libc(b)
	f, err := Load(elffile.Source{Open: openPath(libcPath), Path: libcPath}, Options{LineInfo: true})
	if err != nil {
		b.Fatal(err)
	}
	if f.Info().DebugFile == "" {
		b.Log("no libc debug file")
	}
	benchmarkLookup(b, f)
}

func BenchmarkLookupGo(b *testing.B) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Skip(err)
	}
	f := parseFile(b, filepath.Join(strings.TrimSpace(string(out)), "bin", "go"), DemangleSimple)
	benchmarkLookup(b, f)
}

func BenchmarkLoadLibcDebug(b *testing.B) {
	libcPath := testenv.Libc(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(elffile.Source{Open: openPath(libcPath), Path: libcPath}, Options{LineInfo: true}); err != nil {
			b.Fatal(err)
		}
	}
}
