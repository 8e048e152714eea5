package elffile

import (
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
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
				got, err, mapped := mappedSymbols(f, typ, testPrefixes)
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
			}
		})
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
		}
	})
}
