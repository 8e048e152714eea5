package symbolizer

import (
	"bytes"
	"debug/elf"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/trace"
)

const cSource = `
#include <stdio.h>

__attribute__((noinline)) int alpha(int x) { return x * 3 + 1; }

__attribute__((noinline)) int beta(int x) {
	int s = 0;
	for (int i = 0; i < x; i++)
		s += alpha(i);
	return s;
}

__attribute__((noinline)) static int gamma(int x) { return beta(x) - 7; }

int main(int argc, char **argv) {
	printf("%d\n", gamma(argc));
	return 0;
}
`

const cxxSource = `
namespace ns {
struct Klass {
	int v;
	__attribute__((noinline)) int method(int x);
};
int Klass::method(int x) { return v + x; }

template <typename T> __attribute__((noinline)) T twice(T x) { return x + x; }
} // namespace ns

int main(int argc, char **) {
	ns::Klass k{argc};
	return k.method(argc) + static_cast<int>(ns::twice<long>(argc));
}
`

// run runs a command in dir, failing the test with its output on error.
func run(tb testing.TB, dir, name string, args ...string) {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// build compiles source with compiler (gcc or g++) into dir/out
// (testenv.Missing without the compiler).
func build(tb testing.TB, compiler, source, ext, out string, flags ...string) string {
	tb.Helper()
	if _, err := exec.LookPath(compiler); err != nil {
		testenv.Missing(tb, "%s not found", compiler)
	}
	dir := tb.TempDir()
	src := filepath.Join(dir, "prog"+ext)
	if err := os.WriteFile(src, []byte(source), 0o644); err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, out)
	run(tb, dir, compiler, append(append([]string{}, flags...), "-o", bin, src)...)
	return bin
}

// elfSymbols returns the .symtab symbols of the ELF file at path (its
// .dynsym ones when dynamic) and its program headers.
func elfSymbols(tb testing.TB, path string, dynamic bool) ([]elf.Symbol, []elf.ProgHeader) {
	tb.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer ef.Close()
	syms, err := ef.Symbols()
	if dynamic {
		syms, err = ef.DynamicSymbols()
	}
	if err != nil {
		tb.Fatal(err)
	}
	progs := make([]elf.ProgHeader, len(ef.Progs))
	for i, p := range ef.Progs {
		progs[i] = p.ProgHeader
	}
	return syms, progs
}

// symbolOffset returns the file offset and size of the symbol name in the
// ELF file at path, computed independently of the package with debug/elf.
func symbolOffset(tb testing.TB, path, name string, dynamic bool) (off, size uint64) {
	tb.Helper()
	syms, progs := elfSymbols(tb, path, dynamic)
	for _, s := range syms {
		if s.Name != name || s.Section == elf.SHN_UNDEF {
			continue
		}
		for _, p := range progs {
			if p.Type == elf.PT_LOAD && s.Value >= p.Vaddr && s.Value < p.Vaddr+p.Filesz {
				return s.Value - p.Vaddr + p.Off, s.Size
			}
		}
		tb.Fatalf("%s: %s at %#x is in no PT_LOAD segment", path, name, s.Value)
	}
	tb.Fatalf("%s: no symbol %s", path, name)
	return 0, 0
}

func parseFile(tb testing.TB, path string, mode DemangleMode) *File {
	tb.Helper()
	return parseOpts(tb, path, Options{Demangle: mode})
}

func parseOpts(tb testing.TB, path string, opts Options) *File {
	tb.Helper()
	fh, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer fh.Close()
	f, err := Parse(fh, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// lookup1 returns the innermost line at off, and whether there is one.
func lookup1(f *File, off uint64) (trace.Line, bool) {
	lines := f.Lookup(off, nil)
	if len(lines) == 0 {
		return trace.Line{}, false
	}
	return lines[0], true
}

// checkNamed checks that the first and last byte of a function are named
// with one line.
func checkNamed(t *testing.T, f *File, off, size uint64, want trace.Line) {
	t.Helper()
	for _, o := range []uint64{off, off + size/2, off + max(size, 1) - 1} {
		got := f.Lookup(o, nil)
		if len(got) != 1 || got[0] != want {
			t.Errorf("Lookup(%#x) = %+v; want %+v", o, got, want)
		}
	}
}

func TestParseC(t *testing.T) {
	bin := build(t, "gcc", cSource, ".c", "prog", "-O0", "-fno-builtin", "-Wl,--build-id")
	f := parseFile(t, bin, DemangleSimple)
	for _, name := range []string{"alpha", "beta", "gamma", "main"} {
		off, size := symbolOffset(t, bin, name, false)
		checkNamed(t, f, off, size, trace.Line{Function: name})
	}
	if _, ok := lookup1(f, 0); ok {
		t.Error("Lookup(0) (the ELF header) found a symbol")
	}
	if _, ok := lookup1(f, 1<<40); ok {
		t.Error("Lookup beyond the file found a symbol")
	}
	info := f.Info()
	if len(info.GNUBuildID) != 40 || info.GoBuildID != "" || info.IsGo {
		t.Errorf("Info() = %+v, want a 20-byte GNU build ID only", info)
	}
	t.Logf("%d symbols, %d bytes", f.Len(), f.Bytes())

	// A stripped copy keeps only .dynsym, which names none of them, and
	// is not an error.
	stripped := filepath.Join(t.TempDir(), "stripped")
	run(t, "", "strip", "-o", stripped, bin)
	sf := parseFile(t, stripped, DemangleSimple)
	off, _ := symbolOffset(t, bin, "alpha", false)
	if l, ok := lookup1(sf, off); ok {
		t.Errorf("stripped: Lookup(alpha) = %+v", l)
	}
	if sf.Info().GNUBuildID != info.GNUBuildID {
		t.Errorf("stripped: build ID %q, want %q", sf.Info().GNUBuildID, info.GNUBuildID)
	}

	// Exported with -rdynamic and stripped, the global functions are
	// still named through .dynsym; the static one is not.
	dyn := build(t, "gcc", cSource, ".c", "dyn", "-O0", "-fno-builtin", "-rdynamic")
	dynStripped := filepath.Join(t.TempDir(), "dyn-stripped")
	run(t, "", "objcopy", "--strip-all", dyn, dynStripped)
	df := parseFile(t, dynStripped, DemangleSimple)
	for _, name := range []string{"alpha", "beta", "main"} {
		off, size := symbolOffset(t, dyn, name, true)
		checkNamed(t, df, off, size, trace.Line{Function: name})
	}
	off, _ = symbolOffset(t, dyn, "gamma", false)
	if l, ok := lookup1(df, off); ok && l.Function == "gamma" {
		t.Errorf("dynsym only: Lookup(gamma) = %+v", l)
	}
}

func TestParseCXX(t *testing.T) {
	bin := build(t, "g++", cxxSource, ".cc", "prog", "-O0")
	tests := []struct {
		mangled string
		mode    DemangleMode
		want    string
	}{
		{"_ZN2ns5Klass6methodEi", DemangleSimple, "ns::Klass::method"},
		{"_ZN2ns5Klass6methodEi", DemangleFull, "ns::Klass::method(int)"},
		{"_ZN2ns5Klass6methodEi", DemangleNone, "_ZN2ns5Klass6methodEi"},
		{"_ZN2ns5twiceIlEET_S1_", DemangleSimple, "ns::twice"},
		{"_ZN2ns5twiceIlEET_S1_", DemangleFull, "long ns::twice<long>(long)"},
	}
	files := map[DemangleMode]*File{}
	for _, tt := range tests {
		f := files[tt.mode]
		if f == nil {
			f = parseFile(t, bin, tt.mode)
			files[tt.mode] = f
		}
		off, size := symbolOffset(t, bin, tt.mangled, false)
		want := trace.Line{Function: tt.want}
		if tt.want != tt.mangled {
			want.SystemName = tt.mangled
		}
		checkNamed(t, f, off, size, want)
	}
}

func TestDemangle(t *testing.T) {
	tests := []struct {
		name  string
		mode  DemangleMode
		want  string
		isRaw bool
	}{
		{"_ZN4core3fmt5write17h0123456789abcdefE", DemangleSimple, "core::fmt::write", false},
		{"_ZN4core3fmt5write17h0123456789abcdefE", DemangleFull, "core::fmt::write::h0123456789abcdef", false},
		{"_ZN4core3fmt5write17h0123456789abcdefE.llvm.123", DemangleSimple, "core::fmt::write", false},
		{"_ZN4core3fmt5write17h0123456789abcdefE", DemangleNone, "", true},
		{"_RNvCs15kBYyAo9fc_7mycrate4main", DemangleSimple, "mycrate::main", false},
		{"_RNvCs15kBYyAo9fc_7mycrate4main", DemangleFull, "mycrate::main", false},
		{"_ZN2ns5Klass6methodEi.cold", DemangleSimple, "ns::Klass::method", false},
		{"_ZN2ns5Klass6methodEi.cold", DemangleFull, "ns::Klass::method(int) [clone .cold]", false},
		{"_Zgarbage", DemangleSimple, "", true},
		{"_R", DemangleFull, "", true},
		{"main.main", DemangleFull, "", true},
		{"malloc", DemangleSimple, "", true},
	}
	for _, tt := range tests {
		want := tt.want
		if tt.isRaw {
			want = tt.name
		}
		if got := demangleName(tt.name, tt.mode); got != want {
			t.Errorf("demangleName(%q, %v) = %q, want %q", tt.name, tt.mode, got, want)
		}
	}
	// A hostile name yields a bounded result, or the name itself.
	long := "_Z" + strings.Repeat("N1a", 5000) + "1bE" + "v"
	if got := demangleName(long, DemangleFull); len(got) > 1<<15 && got != long {
		t.Errorf("demangled name of %d bytes", len(got))
	}
}

func TestParseDemangleMode(t *testing.T) {
	for _, m := range []DemangleMode{DemangleNone, DemangleSimple, DemangleFull} {
		got, err := ParseDemangleMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseDemangleMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseDemangleMode("fancy"); err == nil {
		t.Error(`ParseDemangleMode("fancy") succeeded`)
	}
	var opts Options
	if opts.Demangle != DemangleSimple {
		t.Error("the zero DemangleMode is not DemangleSimple")
	}
	if _, err := Parse(bytes.NewReader(nil), Options{Demangle: 42}); err == nil {
		t.Error("Parse with an invalid mode succeeded")
	}
}

func TestParseLibc(t *testing.T) {
	libcPath := testenv.Libc(t)
	f := parseFile(t, libcPath, DemangleSimple)
	for _, name := range []string{"qsort", "malloc", "free", "memcpy"} {
		off, size := symbolOffset(t, libcPath, name, true)
		if name == "memcpy" {
			// An IFUNC resolver; it must at least be named.
			if _, ok := lookup1(f, off); !ok {
				t.Errorf("Lookup(memcpy) failed")
			}
			continue
		}
		checkNamed(t, f, off, size, trace.Line{Function: name})
	}
	if f.Info().GNUBuildID == "" {
		t.Error("libc has no GNU build ID")
	}
	t.Logf("libc: %d symbols, %d bytes, build ID %s", f.Len(), f.Bytes(), f.Info().GNUBuildID)
}

func TestParseGo(t *testing.T) {
	goTool := testenv.GoTool()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f := parseFile(t, bin, DemangleSimple)
	info := f.Info()
	if !info.IsGo || info.GoBuildID == "" {
		t.Errorf("Info() = %+v, want a Go binary with a Go build ID", info)
	}
	out, err := exec.Command(goTool, "tool", "buildid", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(out)); info.GoBuildID != want {
		t.Errorf("GoBuildID = %q, want %q", info.GoBuildID, want)
	}
	off, size := symbolOffset(t, bin, "main.main", false)
	for _, o := range []uint64{off, off + size/2, off + size - 1} {
		// An inlined call may come first; main.main is outermost.
		got := f.Lookup(o, nil)
		if len(got) == 0 {
			t.Errorf("Lookup(%#x) found nothing", o)
			continue
		}
		if l := got[len(got)-1]; l.Function != "main.main" || filepath.Base(l.File) != "main.go" || l.Line != 5 {
			t.Errorf("Lookup(%#x) = %+v, want main.main at main.go:5 outermost", o, got)
		}
	}
}

func TestParseBad(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("not an ELF file at all"), []byte("\x7fELF\x02\x01\x01")} {
		_, err := Parse(bytes.NewReader(data), Options{})
		if err == nil || !strings.Contains(err.Error(), "not a readable ELF file") {
			t.Errorf("Parse(%q) error = %v, want a clear error", data, err)
		}
	}
	libcPath := testenv.Libc(t)
	data, err := os.ReadFile(libcPath)
	if err != nil {
		t.Fatal(err)
	}
	// Truncated: the section headers are at the end, so every cut fails.
	for _, n := range []int{64, 4096, len(data) / 2, len(data) - 1} {
		if _, err := Parse(bytes.NewReader(data[:n]), Options{}); err == nil {
			t.Errorf("Parse(libc truncated to %d bytes) succeeded", n)
		}
	}
	// Garbage in the middle must not panic.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		d := bytes.Clone(data)
		for range 200 {
			d[rng.IntN(len(d))] = byte(rng.Uint32())
		}
		if f, err := Parse(bytes.NewReader(d), Options{Demangle: DemangleFull, LineInfo: true}); err == nil {
			f.Lookup(rng.Uint64N(uint64(len(d))), nil)
		}
	}
}

// countingOpen returns a Source for path whose Open counts its calls.
func countingOpen(path string, calls *int, mu *sync.Mutex) elffile.Source {
	return elffile.Source{Open: func() (*os.File, error) {
		mu.Lock()
		*calls++
		mu.Unlock()
		return os.Open(path)
	}}
}

func TestSymbolizer(t *testing.T) {
	if _, err := New(Options{CacheSize: -1}); err == nil {
		t.Error("New with CacheSize -1 succeeded")
	}
	if _, err := New(Options{CacheSize: 1, Demangle: -1}); err == nil {
		t.Error("New with an invalid demangle mode succeeded")
	}
	bin := build(t, "gcc", cSource, ".c", "prog", "-O0", "-fno-builtin")
	garbage := filepath.Join(t.TempDir(), "garbage")
	if err := os.WriteFile(garbage, []byte("this is no ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{CacheSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls int
	idA, idB, idBad := trace.FileID{1}, trace.FileID{2}, trace.FileID{3}
	fa, err := s.File(idA, countingOpen(bin, &calls, &mu))
	if err != nil {
		t.Fatal(err)
	}
	off, _ := symbolOffset(t, bin, "beta", false)
	if l, ok := lookup1(fa, off); !ok || l.Function != "beta" {
		t.Errorf("Lookup(beta) = %+v, %v", l, ok)
	}
	if again, err := s.File(idA, countingOpen(bin, &calls, &mu)); err != nil || again != fa {
		t.Errorf("second File = %p, %v; want the cached %p", again, err, fa)
	}
	if st := s.Stats(); st.Loads != 1 || st.Hits != 1 || st.Misses != 1 || st.BytesHeld != uint64(fa.Bytes()) {
		t.Errorf("Stats() = %+v after one load and one hit (table of %d bytes)", st, fa.Bytes())
	}

	// A file that fails to parse is cached empty; the error comes once.
	fb, err := s.File(idBad, countingOpen(garbage, &calls, &mu))
	if err == nil || fb == nil || fb.Len() != 0 {
		t.Errorf("File(garbage) = %v, %v; want an empty table and an error", fb, err)
	}
	fb, err = s.File(idBad, countingOpen(garbage, &calls, &mu))
	if err != nil || fb == nil || fb.Len() != 0 {
		t.Errorf("File(garbage) again = %v, %v; want the empty table, no error", fb, err)
	}

	// A file that cannot be opened is not cached.
	failOpen := elffile.Source{Open: func() (*os.File, error) { return nil, os.ErrPermission }}
	for range 2 {
		if f, err := s.File(idB, failOpen); f != nil || !errors.Is(err, os.ErrPermission) {
			t.Errorf("File(unopenable) = %v, %v", f, err)
		}
	}
	st := s.Stats()
	if st.Loads != 4 || st.LoadErrors != 3 {
		t.Errorf("Stats() = %+v, want 4 loads, 3 errors", st)
	}
	// The cache holds one file: the empty table evicted the first.
	if st.BytesHeld != uint64(fb.Bytes()) {
		t.Errorf("BytesHeld = %d, want %d", st.BytesHeld, fb.Bytes())
	}
	if calls != 2 {
		t.Errorf("counting open called %d times, want 2", calls)
	}
}

func TestSymbolizerConcurrent(t *testing.T) {
	bin := build(t, "gcc", cSource, ".c", "prog", "-O0", "-fno-builtin")
	s, err := New(Options{CacheSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := 0
	var wg sync.WaitGroup
	files := make([]*File, 16)
	for i := range files {
		wg.Go(func() {
			f, err := s.File(trace.FileID{9}, countingOpen(bin, &calls, &mu))
			if err != nil {
				t.Error(err)
			}
			files[i] = f
		})
	}
	wg.Wait()
	for _, f := range files {
		if f != files[0] {
			t.Fatal("concurrent File calls returned different tables")
		}
	}
	if calls != 1 {
		t.Errorf("open called %d times for one file, want 1", calls)
	}
	if st := s.Stats(); st.Hits+st.Misses != 16 || st.Loads != 1 {
		t.Errorf("Stats() = %+v", st)
	}
}

// tinyELF builds a small static ELF file for the fuzz corpus, or returns
// nil when gcc is missing.
func tinyELF(tb testing.TB) []byte {
	tb.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		return nil
	}
	const src = `
__attribute__((noinline)) int alpha(int x) { return x + 1; }
static int beta(int x) { return alpha(x) * 2; }
void _start(void) { for (;;) beta(1); }
`
	bin := build(tb, "gcc", src, ".c", "tiny", "-Os", "-g", "-nostdlib", "-static", "-fno-asynchronous-unwind-tables",
		"-Wl,--build-id", "-Wl,-z,noseparate-code", "-Wl,-z,max-page-size=64")
	data, err := os.ReadFile(bin)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func FuzzParse(f *testing.F) {
	if data := tinyELF(f); data != nil {
		f.Add(data)
		f.Add(data[:len(data)/2])
		f.Add(data[:64])
	}
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		opts := Options{Demangle: DemangleFull, LineInfo: true}
		file, err := Parse(bytes.NewReader(data), opts)
		// The same bytes in a file are read in place, through mappings,
		// and must give the same table.
		path := filepath.Join(t.TempDir(), "elf")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err2 := os.Open(path)
		if err2 != nil {
			t.Fatal(err2)
		}
		mapped, mapErr := Parse(fh, opts)
		fh.Close()
		if (err == nil) != (mapErr == nil) {
			t.Fatalf("Parse: %v from memory, %v mapped", err, mapErr)
		}
		if err != nil {
			return
		}
		var buf, mbuf []trace.Line
		for off := uint64(0); off < uint64(len(data)); off += 7 {
			buf = file.Lookup(off, buf[:0])
			for _, l := range buf {
				if l.Function == "" {
					t.Fatalf("Lookup(%#x) named an empty function", off)
				}
			}
			if mbuf = mapped.Lookup(off, mbuf[:0]); !slices.Equal(buf, mbuf) {
				t.Fatalf("Lookup(%#x) = %+v from memory, %+v mapped", off, buf, mbuf)
			}
		}
		_ = file.Bytes()
		_ = file.Info()
		_ = mapped.MappedBytes()
	})
}

// offsetOf translates a virtual address of the ELF file at path to a file
// offset through its PT_LOAD segments, independently of the package.
func offsetOf(tb testing.TB, path string, vaddr uint64) uint64 {
	tb.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && vaddr >= p.Vaddr && vaddr < p.Vaddr+p.Filesz {
			return vaddr - p.Vaddr + p.Off
		}
	}
	tb.Fatalf("%s: %#x is in no PT_LOAD segment", path, vaddr)
	return 0
}

func BenchmarkParseLibc(b *testing.B) {
	libcPath := testenv.Libc(b)
	b.ReportAllocs()
	for b.Loop() {
		parseFile(b, libcPath, DemangleSimple)
	}
}
