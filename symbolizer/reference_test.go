package symbolizer

import (
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
)

// refSym is a symbol of the reference index: it names [addr, addr+extent).
type refSym struct {
	addr, extent uint64
	name         string
}

// referenceIndex builds the symbol index of the ELF file at path the
// straightforward way, from debug/elf's decoded symbols, by the rules the
// symbolizer documents: functions, and untyped or indirect-function
// symbols with a nonzero value, defined in an allocated executable
// section, whose name is not empty, at most maxNameLen bytes, not a
// mapping symbol or local label; at one address the preferred one
// (global, then .symtab, then a function, then fewer leading
// underscores, then the first listed) with the largest size of all; a
// symbol of size zero extends to the next symbol or its section's end.
//
// The symbols of the files at paths are read in order, as the loader
// reads a file's then its debug file's.
func referenceIndex(t *testing.T, paths ...string) []refSym {
	t.Helper()
	type cand struct {
		sym         elf.Symbol
		secEnd      uint64
		rank        int
		underscores int
		seq         int
	}
	var cands []cand
	for _, path := range paths {
		ef, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ef.Close()
		for _, table := range []struct {
			rank int
			read func() ([]elf.Symbol, error)
		}{{rankSymtab, ef.Symbols}, {0, ef.DynamicSymbols}} {
			syms, err := table.read()
			if errors.Is(err, elf.ErrNoSymbols) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range syms {
				typ := elf.ST_TYPE(s.Info)
				switch {
				case typ == elf.STT_FUNC:
				case (typ == elf.STT_NOTYPE || typ == elf.STT_GNU_IFUNC) && s.Value != 0:
				default:
					continue
				}
				if s.Section == elf.SHN_UNDEF || s.Section >= elf.SHN_LORESERVE || int(s.Section) >= len(ef.Sections) {
					continue
				}
				sec := ef.Sections[s.Section]
				if sec.Flags&elf.SHF_EXECINSTR == 0 || sec.Flags&elf.SHF_ALLOC == 0 {
					continue
				}
				if s.Name == "" || len(s.Name) > maxNameLen || strings.HasPrefix(s.Name, "$") || strings.HasPrefix(s.Name, ".L") {
					continue
				}
				rank := table.rank
				if typ == elf.STT_FUNC {
					rank |= rankFunc
				}
				if elf.ST_BIND(s.Info) != elf.STB_LOCAL {
					rank |= rankGlobal
				}
				u := len(s.Name) - len(strings.TrimLeft(s.Name, "_"))
				cands = append(cands, cand{sym: s, secEnd: sec.Addr + sec.Size, rank: rank, underscores: min(u, math.MaxUint8), seq: len(cands)})
			}
		}
	}
	slices.SortFunc(cands, func(x, y cand) int {
		return cmp.Or(cmp.Compare(x.sym.Value, y.sym.Value), cmp.Compare(y.rank, x.rank),
			cmp.Compare(x.underscores, y.underscores), cmp.Compare(x.seq, y.seq))
	})
	var kept []cand
	for _, c := range cands {
		if n := len(kept); n > 0 && kept[n-1].sym.Value == c.sym.Value {
			kept[n-1].sym.Size = max(kept[n-1].sym.Size, c.sym.Size)
			continue
		}
		kept = append(kept, c)
	}
	idx := make([]refSym, len(kept))
	for i, c := range kept {
		extent := min(c.sym.Size, math.MaxUint32)
		if extent == 0 {
			end := c.secEnd
			if i+1 < len(kept) {
				end = min(end, kept[i+1].sym.Value)
			}
			if end > c.sym.Value {
				extent = min(end-c.sym.Value, math.MaxUint32)
			}
		}
		idx[i] = refSym{addr: c.sym.Value, extent: extent, name: c.sym.Name}
	}
	return idx
}

// lookup returns the name the reference index gives addr, "" for none.
func refLookup(idx []refSym, addr uint64) string {
	i, found := slices.BinarySearchFunc(idx, addr, func(s refSym, a uint64) int { return cmp.Compare(s.addr, a) })
	if !found {
		i--
	}
	if i < 0 || addr-idx[i].addr >= idx[i].extent {
		return ""
	}
	return idx[i].name
}

// symbolTestFiles returns the real files the symbol index is checked on:
// libc (first), the system's libpython, and the large programs of largeFiles that
// are installed.
func symbolTestFiles(t *testing.T) []string {
	t.Helper()
	paths := []string{testenv.Libc(t), testenv.SystemLibpython(t)}
	for _, lf := range largeFiles {
		if p, err := filepath.EvalSymlinks(lf.path); err == nil {
			paths = append(paths, p)
		}
	}
	return paths
}

// TestIndexMatchesReference checks that the symbol index of real files
// names every address as a straightforward reference does: every symbol
// start, the middle and last byte of every symbol, the bytes just before
// and past it (gaps between symbols or the next symbol).
func TestIndexMatchesReference(t *testing.T) {
	paths := symbolTestFiles(t)
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			checkReference(t, path, referenceIndex(t, path), parseFile(t, path, DemangleNone))
		})
	}
	// libc's debug file, when installed, adds its full .symtab to libc's
	// .dynsym.
	libc := paths[0]
	id := parseFile(t, libc, DemangleNone).Info().GNUBuildID
	p, _ := elffile.BuildIDPath(id)
	if _, err := os.Stat("/" + p); err != nil {
		testenv.Missing(t, "libc6-dbg not installed: %v", err)
	}
	t.Run("libc+debug", func(t *testing.T) {
		f, err := Load(elffile.Source{Open: openPath(libc), Path: libc}, Options{Demangle: DemangleNone})
		if err != nil {
			t.Fatal(err)
		}
		if f.Info().DebugFile != p {
			t.Fatalf("debug file %q, want %q", f.Info().DebugFile, p)
		}
		checkReference(t, libc, referenceIndex(t, libc, "/"+p), f)
	})
}

// checkReference checks f, the index of the file at path, against the
// reference index ref.
func checkReference(t *testing.T, path string, ref []refSym, f *File) {
	t.Helper()
	if len(ref) < 100 {
		t.Fatalf("only %d reference symbols", len(ref))
	}
	if f.Len() != len(ref) {
		t.Errorf("Len() = %d, reference has %d symbols", f.Len(), len(ref))
	}
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	var segs []segment
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			segs = append(segs, segment{off: p.Off, filesz: p.Filesz, vaddr: p.Vaddr})
		}
	}
	checked, mismatches := 0, 0
	for _, s := range ref {
		for _, addr := range []uint64{s.addr, s.addr + s.extent/2, s.addr + s.extent - 1, s.addr + s.extent, s.addr - 1} {
			i := slices.IndexFunc(segs, func(sg segment) bool { return addr >= sg.vaddr && addr-sg.vaddr < sg.filesz })
			if i < 0 {
				continue
			}
			want := refLookup(ref, addr)
			var got string
			if lines := f.Lookup(addr-segs[i].vaddr+segs[i].off, nil); len(lines) > 0 {
				got = lines[0].Function
			}
			checked++
			if got != want {
				if mismatches++; mismatches <= 10 {
					t.Errorf("%#x: got %q, reference %q", addr, got, want)
				}
			}
		}
	}
	if checked < len(ref) {
		t.Errorf("only %d addresses checked of %d symbols", checked, len(ref))
	}
	t.Logf("%d symbols, %d addresses checked, %d mismatches", len(ref), checked, mismatches)
}

// TestNameCheck checks nameCheck.valid against measuring each name, on
// string tables with names of every length around maxNameLen, empty
// names, and no final NUL.
func TestNameCheck(t *testing.T) {
	var tables [][]byte
	for _, lens := range [][]int{
		{0, 3, 10, 1},
		{5, maxNameLen - 1, 2},
		{5, maxNameLen, 2},
		{5, maxNameLen + 1, 2},
		{nameBlock - 1, nameBlock, nameBlock + 1, 2*nameBlock - 1, 3},
		{2 * nameBlock, 1},
		{3 * maxNameLen, 4},
	} {
		var tab []byte
		for _, n := range lens {
			tab = append(tab, strings.Repeat("x", n)...)
			tab = append(tab, 0)
		}
		tables = append(tables, tab, tab[:len(tab)-1], tab[:len(tab)-3])
	}
	tables = append(tables, nil, []byte{0}, []byte("abc"))
	for i, tab := range tables {
		c := newNameCheck(tab)
		// Offsets at and around the starts of names and of blocks.
		var offs []uint32
		for off := range len(tab) + 2 {
			if off == 0 || off%nameBlock <= 1 || off%nameBlock == nameBlock-1 || off >= len(tab)-1 ||
				tab[off-1] == 0 || off >= 2 && tab[off-2] == 0 || off+1 < len(tab) && tab[off+1] == 0 {
				offs = append(offs, uint32(off))
			}
		}
		for _, off := range offs {
			n, ok := cstringLen(tab, off)
			want := ok && n > 0 && n <= maxNameLen
			if got := c.valid(tab, off); got != want {
				t.Fatalf("table %d (%d bytes, short %v): valid(%d) = %v, want %v", i, len(tab), c.short, off, got, want)
			}
		}
	}
}

// TestToSym64LE checks that the entries of 32-bit and big-endian symbol
// tables read as they decode.
func TestToSym64LE(t *testing.T) {
	syms := []elfSym{{}, {name: 1, info: 0x12, shndx: 3, value: 0x1000, size: 16}, {name: 0x10203, info: 0x2, shndx: 0xfff1, value: 0xfffffff0, size: 0xffffffff}}
	for _, tc := range []struct {
		class elf.Class
		bo    binary.ByteOrder
	}{{elf.ELFCLASS32, binary.LittleEndian}, {elf.ELFCLASS32, binary.BigEndian}, {elf.ELFCLASS64, binary.BigEndian}} {
		size, _ := symSize(tc.class)
		var data []byte
		for _, s := range syms {
			e := make([]byte, size)
			if tc.class == elf.ELFCLASS64 {
				tc.bo.PutUint32(e[0:4], s.name)
				e[4] = s.info
				tc.bo.PutUint16(e[6:8], s.shndx)
				tc.bo.PutUint64(e[8:16], s.value)
				tc.bo.PutUint64(e[16:24], s.size)
			} else {
				tc.bo.PutUint32(e[0:4], s.name)
				tc.bo.PutUint32(e[4:8], uint32(s.value))
				tc.bo.PutUint32(e[8:12], uint32(s.size))
				e[12] = s.info
				tc.bo.PutUint16(e[14:16], s.shndx)
			}
			data = append(data, e...)
		}
		tab := symTable{data: data, entSize: size, class: tc.class, bo: tc.bo}
		tab.toSym64LE()
		for i, want := range syms {
			var got elfSym
			if got.decode64LE(tab.data[i*elf.Sym64Size:]); got != want {
				t.Errorf("%v %v: entry %d = %+v, want %+v", tc.class, tc.bo, i, got, want)
			}
		}
	}
}

// TestDynsymNotInSymtab checks files whose .dynsym names what their
// .symtab does not, or names it as a local symbol only: the loader, which
// leaves a .dynsym unread when the .symtab names its symbols as well,
// reads it then and gives the index the reference gives. A file whose
// .symtab holds its .dynsym, as the linker writes it, is checked too.
func TestDynsymNotInSymtab(t *testing.T) {
	dyn := build(t, "gcc", cSource, ".c", "dyn", "-O0", "-fno-builtin", "-rdynamic")
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		// want are the names the index must give the functions.
		want map[string]string
	}{
		{"linked", nil, map[string]string{"alpha": "alpha", "beta": "beta", "main": "main"}},
		{"stripped-symbol", []string{"--strip-symbol=beta"}, map[string]string{"alpha": "alpha", "beta": "beta"}},
		{"localized", []string{"--localize-symbol=alpha"}, map[string]string{"alpha": "alpha", "beta": "beta"}},
		{"renamed-global", []string{"--redefine-sym=alpha=alpha2"}, map[string]string{"alpha": "alpha2"}},
		{"renamed-local", []string{"--redefine-sym=alpha=alpha2", "--localize-symbol=alpha2"}, map[string]string{"alpha": "alpha"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := dyn
			if tc.args != nil {
				path = filepath.Join(dir, tc.name)
				run(t, "", "objcopy", append(tc.args, dyn, path)...)
			}
			f := parseFile(t, path, DemangleNone)
			ref := referenceIndex(t, path)
			if f.Len() != len(ref) {
				t.Errorf("Len() = %d, reference has %d symbols", f.Len(), len(ref))
			}
			for _, s := range ref {
				if l, ok := lookup1(f, offsetOf(t, path, s.addr)); !ok || l.Function != s.name {
					t.Errorf("%#x: got %+v, reference %q", s.addr, l, s.name)
				}
			}
			for fn, want := range tc.want {
				off, _ := symbolOffset(t, dyn, fn, true)
				if l, ok := lookup1(f, off); !ok || l.Function != want {
					t.Errorf("Lookup(%s) = %+v, want %q", fn, l, want)
				}
			}
		})
	}
}
