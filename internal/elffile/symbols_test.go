package elffile

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// symbolFiles are files whose symbol tables the tests read: the host's
// libc and libpython, and large programs when they are installed.
func symbolFiles(t testing.TB) []string {
	paths := []string{testenv.Libc(t), testenv.SystemLibpython(t)}
	for _, p := range []string{"/usr/bin/node", "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so", "/usr/lib/gcc/x86_64-linux-gnu/12/cc1"} {
		if q, err := filepath.EvalSymlinks(p); err == nil {
			paths = append(paths, q)
		}
	}
	return paths
}

// testPrefixes are prefixes of many names in C and C++ programs, and of
// V8's.
var testPrefixes = []string{"_Z", "mem", "str", "__", "v8dbg_", "Builtins_", "_ZN2v88internal7Version6major_E"}

// withPrefix returns the symbols of syms whose names start with one of
// prefixes.
func withPrefix(syms []elf.Symbol, prefixes []string) []elf.Symbol {
	return slices.DeleteFunc(slices.Clone(syms), func(s elf.Symbol) bool {
		return !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(s.Name, p) })
	})
}

// stripVersions returns syms without the Version and Library that
// debug/elf gives dynamic symbols and Symbols leaves out.
func stripVersions(syms []elf.Symbol) []elf.Symbol {
	out := slices.Clone(syms)
	for i := range out {
		out[i].Version, out[i].Library = "", ""
		out[i].VersionIndex, out[i].HasVersion = 0, false
	}
	return out
}

// TestSymbolsMatchDebugELF checks that Symbols returns what debug/elf
// returns, filtered by the prefixes, on real files.
func TestSymbolsMatchDebugELF(t *testing.T) {
	for _, path := range symbolFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			ef, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer ef.Close()
			for _, typ := range []elf.SectionType{elf.SHT_DYNSYM, elf.SHT_SYMTAB} {
				want, werr := debugELFSymbols(ef, typ)
				got, err := Symbols(ef, typ, testPrefixes...)
				if (err != nil) != (werr != nil) {
					t.Fatalf("%v: error %v, debug/elf's %v", typ, err, werr)
				}
				if werr != nil {
					continue
				}
				want = withPrefix(stripVersions(want), testPrefixes)
				if len(want) == 0 {
					t.Fatalf("%v: no symbols with the prefixes", typ)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%v: %d symbols, debug/elf %d", typ, len(got), len(want))
				}
			}
		})
	}
}

// debugELFSymbols returns debug/elf's reading of ef's table of type typ.
func debugELFSymbols(ef *elf.File, typ elf.SectionType) ([]elf.Symbol, error) {
	if typ == elf.SHT_DYNSYM {
		return ef.DynamicSymbols()
	}
	return ef.Symbols()
}

// FuzzSymbols checks Symbols against debug/elf on arbitrary files: the
// same symbols, filtered, when debug/elf reads them, no panic otherwise.
func FuzzSymbols(f *testing.F) {
	for _, p := range []string{"/bin/true", "/usr/bin/env"} {
		if data, err := os.ReadFile(p); err == nil && len(data) < 1<<20 {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ef, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, typ := range []elf.SectionType{elf.SHT_DYNSYM, elf.SHT_SYMTAB} {
			prefixes := []string{"a", "_", "m", "xy"}
			got, err := Symbols(ef, typ, prefixes...)
			want, werr := debugELFSymbols(ef, typ)
			if werr == nil && err == nil && !slices.Equal(got, withPrefix(stripVersions(want), prefixes)) {
				t.Fatalf("%v: symbols differ from debug/elf's", typ)
			}
		}
	})
}

// v8Prefixes are the prefixes interpreter/v8 looks for.
var v8Prefixes = []string{
	"v8dbg_", "Builtins_",
	"_ZN2v88internal7Version6major_E", "_ZN2v88internal7Version6minor_E",
	"_ZN2v88internal7Version6build_E", "_ZN2v88internal7Version6patch_E",
	"_ZN2v88internal12IsolateGroup22default_isolate_group_E",
	"_ZN2v88internal11interpreter9Bytecodes14kBytecodeSizesE",
}

// BenchmarkSymbols compares Symbols, File.Symbols (in place) and
// File.SymbolsByKind, looking for V8's names, with debug/elf's File.Symbols on node's symbol table (hundreds of thousands
// of symbols).
func BenchmarkSymbols(b *testing.B) {
	path, err := filepath.EvalSymlinks("/usr/bin/node")
	if err != nil {
		b.Skipf("node not installed: %v", err)
	}
	ef, err := elf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer ef.Close()
	b.Run("elffile.Symbols", func(b *testing.B) {
		b.ReportAllocs()
		cpu0 := testenv.ProcessCPU(b).Nanoseconds()
		defer func() { b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op") }()
		for b.Loop() {
			if _, err := Symbols(ef, elf.SHT_SYMTAB, v8Prefixes...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("File.Symbols", func(b *testing.B) {
		f := openFile(b, path)
		b.ReportAllocs()
		cpu0 := testenv.ProcessCPU(b).Nanoseconds()
		defer func() { b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op") }()
		for b.Loop() {
			if _, err := f.Symbols(elf.SHT_SYMTAB, v8Prefixes...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("File.SymbolsByKind", func(b *testing.B) {
		f := openFile(b, path)
		b.ReportAllocs()
		cpu0 := testenv.ProcessCPU(b).Nanoseconds()
		defer func() { b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op") }()
		// As interpreter/v8 looks: the builtins among functions, the
		// rest among data symbols.
		funcs, others := v8Prefixes[1:2], slices.Concat(v8Prefixes[:1], v8Prefixes[2:])
		for b.Loop() {
			if _, err := f.SymbolsByKind(elf.SHT_SYMTAB, funcs, others); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("debug/elf", func(b *testing.B) {
		b.ReportAllocs()
		cpu0 := testenv.ProcessCPU(b).Nanoseconds()
		defer func() { b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op") }()
		for b.Loop() {
			syms, err := ef.Symbols()
			if err != nil {
				b.Fatal(err)
			}
			runtime.KeepAlive(syms)
		}
	})
}
