package elffile

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// openFile opens path as a File.
func openFile(t testing.TB, path string) *File {
	t.Helper()
	f, err := Open(Source{Open: func() (*os.File, error) { return os.Open(path) }, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestFileSymbolsMapped checks that File.Symbols reads real files' tables
// in place and returns what Symbols returns.
func TestFileSymbolsMapped(t *testing.T) {
	for _, path := range symbolFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f := openFile(t, path)
			for _, typ := range []elf.SectionType{elf.SHT_DYNSYM, elf.SHT_SYMTAB} {
				if f.ELF.SectionByType(typ) == nil {
					continue
				}
				got, err, mapped := mappedSymbols(f, typ, testPrefixes, testPrefixes)
				if !mapped {
					t.Fatalf("%v: not read in place", typ)
				}
				want, werr := Symbols(f.ELF, typ, testPrefixes...)
				if err != nil || werr != nil {
					t.Fatalf("%v: errors %v and %v", typ, err, werr)
				}
				if len(want) == 0 {
					t.Fatalf("%v: no symbols with the prefixes", typ)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%v: %d symbols in place, %d read", typ, len(got), len(want))
				}
				checkByKind(t, f, typ, []string{"_Z", "mem", "Builtins_"}, []string{"__", "_ZN2v8", "v8dbg_", "str"})
			}
		})
	}
}

// checkByKind checks that File.SymbolsByKind and SymbolsByKind give the
// functions of Symbols' symbols with one of funcs' prefixes and the other
// symbols with one of others'.
func checkByKind(t *testing.T, f *File, typ elf.SectionType, funcs, others []string) {
	t.Helper()
	all, werr := Symbols(f.ELF, typ, slices.Concat(funcs, others)...)
	want := slices.DeleteFunc(all, func(s elf.Symbol) bool {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			return !naiveMatch([]byte(s.Name), funcs)
		}
		return !naiveMatch([]byte(s.Name), others)
	})
	got, err := f.SymbolsByKind(typ, funcs, others)
	read, rerr := SymbolsByKind(f.ELF, typ, funcs, others)
	if (err != nil) != (werr != nil) || (rerr != nil) != (werr != nil) {
		t.Fatalf("%v: by kind: errors %v and %v, Symbols' %v", typ, err, rerr, werr)
	}
	if !slices.Equal(got, want) || !slices.Equal(read, want) {
		t.Fatalf("%v: by kind: %d symbols in place, %d read, %d of Symbols' of their kind", typ, len(got), len(read), len(want))
	}
}

// FuzzFileSymbols checks File.Symbols against Symbols on arbitrary files:
// the same symbols, or both fail.
func FuzzFileSymbols(f *testing.F) {
	for _, p := range []string{"/bin/true", "/usr/bin/env"} {
		if data, err := os.ReadFile(p); err == nil && len(data) < 1<<20 {
			f.Add(data)
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		ff, err := Open(Source{Open: func() (*os.File, error) { return os.Open(path) }})
		if err != nil {
			return
		}
		defer ff.Close()
		for _, typ := range []elf.SectionType{elf.SHT_DYNSYM, elf.SHT_SYMTAB} {
			prefixes := []string{"a", "_", "m", "xy", ""}
			got, err := ff.Symbols(typ, prefixes...)
			want, werr := Symbols(ff.ELF, typ, prefixes...)
			if (err != nil) != (werr != nil) {
				t.Fatalf("%v: error %v, Symbols' %v", typ, err, werr)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%v: %d symbols, Symbols %d", typ, len(got), len(want))
			}
			checkByKind(t, ff, typ, []string{"a", "xy"}, []string{"_", "m", "xy"})
		}
	})
}

// naiveMatch is what prefixSet.match answers: whether b starts with one
// of the non-empty prefixes.
func naiveMatch(b []byte, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return p != "" && bytes.HasPrefix(b, []byte(p)) })
}

// TestPrefixSet checks prefixSet.match against bytes.HasPrefix on V8's
// prefixes and others (sharing first bytes, one a prefix of another,
// shorter and longer than the 8 and 16 bytes match compares as words),
// for names that match, that differ from a prefix at each of its bytes,
// and that are cut short (near a string table's end).
func TestPrefixSet(t *testing.T) {
	sets := [][]string{
		v8Prefixes,
		testPrefixes,
		{"a", "ab", "abcdefghijklmnopq", "abcdefghX", "b"},
		{"0123456789abcdef", "0123456789abcdeX", "0123456789abcdef0123", ""},
		{"x"},
	}
	for _, prefixes := range sets {
		ps := newPrefixSet(prefixes)
		var names [][]byte
		for _, p := range prefixes {
			for i := 0; i <= len(p); i++ {
				names = append(names, []byte(p[:i]), []byte(p[:i]+"Q"), []byte(p[:i]+"\x00rest of the table"))
				if i < len(p) {
					alt := []byte(p + "tail")
					alt[i] ^= 1
					names = append(names, alt)
				}
			}
			names = append(names, []byte(p+"_and_a_long_name_after_it"), []byte(p+"\x00"))
		}
		names = append(names, []byte("_ZN2v88internal7Isolate4InitEv"), []byte("_ZN2v88internal7Version6major"))
		for _, n := range names {
			if got, want := ps.match(n), naiveMatch(n, prefixes); got != want {
				t.Fatalf("prefixes %q: match(%q) = %v, want %v", prefixes, n, got, want)
			}
		}
	}
}

// FuzzPrefixSet checks prefixSet.match against bytes.HasPrefix on
// arbitrary prefixes (up to four, split from one input at '|') and names.
func FuzzPrefixSet(f *testing.F) {
	f.Add("v8dbg_|Builtins_|_ZN2v88internal7Version6major_E|_ZN2v88internal12IsolateGroup", []byte("_ZN2v88internal7Version6major_E\x00"))
	f.Add("a|ab|abcdefghijklmnopq", []byte("abcdefghijklmnop"))
	f.Add("0123456789abcdef|0123456789abcdeX", []byte("0123456789abcdef0"))
	f.Fuzz(func(t *testing.T, set string, name []byte) {
		prefixes := strings.SplitN(set, "|", 4)
		if got, want := newPrefixSet(prefixes).match(name), naiveMatch(name, prefixes); got != want {
			t.Fatalf("prefixes %q: match(%q) = %v, want %v", prefixes, name, got, want)
		}
	})
}
