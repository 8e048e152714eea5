package symbolizer

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
)

// lineTableByDWARF reads the line table of ef the way loadLineTable does
// when it leaves the line programs to debug/dwarf.
func lineTableByDWARF(t *testing.T, ef *elf.File, fh *os.File) *lineTable {
	t.Helper()
	var mems [][]byte
	defer func() { unmap(mems...) }()
	dat := map[string][]byte{}
	if err := addLineSections(ef, fh, lineSections, dat, &mems); err != nil {
		t.Fatal(err)
	}
	d, err := lineDWARF(dat)
	if err != nil {
		t.Fatal(err)
	}
	lt, err := collectLines(d)
	if err != nil {
		t.Fatal(err)
	}
	return lt
}

// lineFiles returns files with DWARF line tables to compare: libc's
// debug file, and the other debug files installed, and node.
func lineFiles(t *testing.T) []string {
	t.Helper()
	var paths []string
	id := parseFile(t, testenv.Libc(t), DemangleNone).Info().GNUBuildID
	p, _ := elffile.BuildIDPath(id)
	if _, err := os.Stat("/" + p); err != nil {
		testenv.Missing(t, "libc6-dbg not installed: %v", err)
	}
	paths = append(paths, "/"+p)
	more, _ := filepath.Glob("/usr/lib/debug/.build-id/*/*.debug")
	slices.Sort(more)
	for _, m := range more {
		if m != paths[0] {
			paths = append(paths, m)
		}
	}
	if p, err := filepath.EvalSymlinks("/usr/bin/node"); err == nil {
		paths = append(paths, p)
	}
	return paths
}

// TestLineProgramsV5MatchDWARF checks that the line table read from the
// DWARF 5 line programs alone is the one read through debug/dwarf, on
// every installed file with line tables; files of older DWARF are read
// through debug/dwarf by both.
func TestLineProgramsV5MatchDWARF(t *testing.T) {
	v5 := 0
	for _, path := range lineFiles(t) {
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		ef, err := elf.NewFile(fh)
		if err != nil {
			fh.Close()
			t.Fatalf("%s: %v", path, err)
		}
		if _, ok := dwarfSize(ef); !ok {
			fh.Close()
			continue
		}
		got, err := loadLineTable(ef, fh, 1<<30)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		want := lineTableByDWARF(t, ef, fh)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: line tables differ: %d rows, debug/dwarf %d", path, rows(got), rows(want))
		}
		// Whether the file was read without debug/dwarf.
		var mems [][]byte
		dat := map[string][]byte{}
		if err := addLineSections(ef, fh, []string{"line", "str", "line_str"}, dat, &mems); err != nil {
			t.Fatal(err)
		}
		var c lineCollector
		if c.lineProgramsV5(lineSectionsV5{line: dat["line"], str: dat["str"], lineStr: dat["line_str"], bo: ef.ByteOrder}) == nil {
			v5++
		} else if v5 == 0 {
			t.Errorf("%s: libc's debug file not read without debug/dwarf", path)
		}
		unmap(mems...)
		fh.Close()
	}
	t.Logf("%d files read from their DWARF 5 line programs alone", v5)
}

func rows(lt *lineTable) int {
	if lt == nil {
		return 0
	}
	return len(lt.addrs)
}

// FuzzLineProgramsV5 reads arbitrary .debug_line sections: no panic, and
// an error or a table whose rows are sorted.
func FuzzLineProgramsV5(f *testing.F) {
	// Seeds: the first line programs of the smallest installed debug
	// files, with their string sections, and a minimal program.
	str := []byte("src\x00a.c\x00")
	f.Add(minimalLineProgram(), str)
	paths, _ := filepath.Glob("/usr/lib/debug/.build-id/*/*.debug")
	for _, path := range paths[:min(len(paths), 4)] {
		ef, err := elf.Open(path)
		if err != nil {
			continue
		}
		line, lerr := sectionBytes(ef, ".debug_line")
		ls, serr := sectionBytes(ef, ".debug_line_str")
		ef.Close()
		if lerr == nil && serr == nil {
			f.Add(line[:min(len(line), 4096)], ls)
		}
	}
	f.Fuzz(func(t *testing.T, line, str []byte) {
		var c lineCollector
		if err := c.lineProgramsV5(lineSectionsV5{line: line, str: str, lineStr: str, bo: binaryLE}); err != nil {
			return
		}
		lt, err := c.table()
		if err != nil || lt == nil {
			return
		}
		if !slices.IsSorted(lt.addrs) {
			t.Fatal("rows not sorted")
		}
	})
}

// sectionBytes returns the (decompressed) bytes of ef's section name.
func sectionBytes(ef *elf.File, name string) ([]byte, error) {
	s := ef.Section(name)
	if s == nil {
		return nil, os.ErrNotExist
	}
	return s.Data()
}

// minimalLineProgram returns a DWARF 5 line program of one sequence in
// file 1 ("a.c" in directory 0, "src", both in .debug_line_str at 4 and
// 0): line 1 at 0x1000, line 2 at 0x1003, ending at 0x100b.
func minimalLineProgram() []byte {
	hdr := []byte{
		8,          // address size
		0,          // segment selector size
		0, 0, 0, 0, // header length, set below
		1, 1, 1, 0xfb, 14, 13, // min inst, max ops, is_stmt, line base, line range, opcode base
		0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, // standard opcode lengths
		1, lnctPath, formLineStrp, // directory format
		1, 0, 0, 0, 0, // one directory: "src"
		2, lnctPath, formLineStrp, lnctDirectoryIndex, formUdata, // file format
		2, 4, 0, 0, 0, 0, 4, 0, 0, 0, 0, // two files: a.c in src
	}
	binaryLE.PutUint32(hdr[2:], uint32(len(hdr)-6))
	prog := []byte{
		0, 9, lneSetAddress, 0x00, 0x10, 0, 0, 0, 0, 0, 0, // address 0x1000
		lnsCopy,                    // 0x1000: line 1
		(2 - 1) - (-5) + 14*3 + 13, // special: address +3, line +1
		lnsAdvancePC, 8,            // to 0x100b
		0, 1, lneEndSequence,
	}
	unit := append([]byte{5, 0}, hdr...)
	unit = append(unit, prog...)
	out := binaryLE.AppendUint32(nil, uint32(len(unit)))
	return append(out, unit...)
}

var binaryLE = binary.LittleEndian

func TestMinimalLineProgram(t *testing.T) {
	var c lineCollector
	if err := c.lineProgramsV5(lineSectionsV5{line: minimalLineProgram(), lineStr: []byte("src\x00a.c\x00"), bo: binaryLE}); err != nil {
		t.Fatal(err)
	}
	lt, err := c.table()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr uint64
		file string
		line int64
	}{{0xfff, "", 0}, {0x1000, "src/a.c", 1}, {0x1002, "src/a.c", 1}, {0x1003, "src/a.c", 2}, {0x100a, "src/a.c", 2}, {0x100b, "", 0}} {
		file, line, _ := lt.lookup(tc.addr)
		if file != tc.file || line != tc.line {
			t.Errorf("lookup(%#x) = %s:%d, want %s:%d", tc.addr, file, line, tc.file, tc.line)
		}
	}
}
