package symbolizer

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
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

// lineMode returns how loadLineTable reads the line programs of ef:
// "v5" from .debug_line alone, "heads" through the units readUnitHeads
// reads, "units" through debug/dwarf's units, or "dwarf" through
// debug/dwarf's LineReader. For "heads", it checks that debug/dwarf's
// units give the same table.
func lineMode(t *testing.T, ef *elf.File, fh *os.File) string {
	t.Helper()
	var mems [][]byte
	defer func() { unmap(mems...) }()
	dat := map[string][]byte{}
	if err := addLineSections(ef, fh, lineSections, dat, &mems); err != nil {
		t.Fatal(err)
	}
	secs := lineData{line: dat["line"], str: dat["str"], lineStr: dat["line_str"], bo: ef.ByteOrder}
	var c lineCollector
	if c.lineProgramsV5(secs) == nil {
		return "v5"
	}
	d, err := lineDWARF(dat)
	if err != nil {
		t.Fatal(err)
	}
	byUnits := func() *lineTable {
		c := lineCollector{}
		if c.linePrograms(d, secs) != nil {
			return nil
		}
		lt, err := c.table()
		if err != nil {
			t.Fatal(err)
		}
		return lt
	}
	if heads, err := readUnitHeads(dat["info"], dat["abbrev"], dat["str"], ef.ByteOrder); err == nil {
		c = lineCollector{}
		if c.lineProgramsOfUnits(heads, secs) == nil {
			got, err := c.table()
			if err != nil {
				t.Fatal(err)
			}
			if want := byUnits(); !reflect.DeepEqual(got, want) {
				t.Errorf("line tables differ: %d rows through readUnitHeads, %d through debug/dwarf's units", rows(got), rows(want))
			}
			return "heads"
		}
	}
	if byUnits() != nil {
		return "units"
	}
	return "dwarf"
}

// checkLinesMatchDWARF checks that the line table loadLineTable reads
// from the file at path is the one debug/dwarf's LineReader gives, and
// returns how it was read (lineMode), "" for a file without lines.
func checkLinesMatchDWARF(t *testing.T, path string) string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	ef, err := elf.NewFile(fh)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if _, ok := dwarfSize(ef); !ok {
		return ""
	}
	got, err := loadLineTable(ef, fh, 1<<30, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	want := lineTableByDWARF(t, ef, fh)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: line tables differ: %d rows, debug/dwarf %d", path, rows(got), rows(want))
	}
	return lineMode(t, ef, fh)
}

// TestLineProgramsMatchDWARF checks that the line table read by
// lineProgReader is the one read through debug/dwarf's LineReader, on
// every installed file with line tables: libc's debug file and the other
// debug files (DWARF 5, read from .debug_line alone) and node (DWARF 3,
// its programs found through the units readUnitHeads reads).
func TestLineProgramsMatchDWARF(t *testing.T) {
	modes := map[string]int{}
	for i, path := range lineFiles(t) {
		mode := checkLinesMatchDWARF(t, path)
		modes[mode]++
		switch {
		case i == 0 && mode != "v5":
			t.Errorf("%s (libc's debug file) read as %q, want v5", path, mode)
		case filepath.Base(path) == "node" && mode != "heads":
			t.Errorf("%s read as %q, want heads", path, mode)
		}
	}
	t.Logf("files by how their lines were read: %v", modes)
}

// TestLineProgramsCompiled checks lineProgReader against debug/dwarf on a
// program of several files in several directories, compiled by gcc for
// each DWARF version from 2 to 5.
func TestLineProgramsCompiled(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		testenv.Missing(t, "gcc not installed: %v", err)
	}
	dir := t.TempDir()
	for name, src := range map[string]string{
		"main.c":      "#include \"inc/util.h\"\nint main(void) { return twice(3) + other(); }\n",
		"inc/util.h":  "static inline int twice(int x) {\n  return 2 * x;\n}\nint other(void);\n",
		"lib/other.c": "#include \"../inc/util.h\"\nint other(void) {\n  int s = 0;\n  for (int i = 0; i < 10; i++)\n    s += twice(i);\n  return s;\n}\n",
	} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for v := 2; v <= 5; v++ {
		out := filepath.Join(dir, fmt.Sprintf("prog%d", v))
		cmd := exec.Command("gcc", fmt.Sprintf("-gdwarf-%d", v), "-O1", "-o", out, "main.c", "lib/other.c")
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gcc -gdwarf-%d: %v\n%s", v, err, b)
		}
		want := "heads"
		if v == 5 {
			want = "v5"
		}
		if mode := checkLinesMatchDWARF(t, out); mode != want {
			t.Errorf("DWARF %d read as %q, want %q", v, mode, want)
		}
		f := parseOpts(t, out, Options{LineInfo: true})
		if !f.Info().LineInfo {
			t.Errorf("DWARF %d: no line table", v)
		}
	}
}

func rows(lt *lineTable) int {
	if lt == nil {
		return 0
	}
	return len(lt.addrs)
}

// FuzzLinePrograms reads arbitrary .debug_line sections, as DWARF 5
// programs one after the other and as a program of a unit: no panic, and
// an error or a table whose rows are sorted.
func FuzzLinePrograms(f *testing.F) {
	// Seeds: the first line programs of the smallest installed debug
	// files (DWARF 5) and of node (DWARF 3), with their string sections,
	// and a minimal program.
	str := []byte("src\x00a.c\x00")
	f.Add(minimalLineProgram(), str)
	paths, _ := filepath.Glob("/usr/lib/debug/.build-id/*/*.debug")
	paths = append(paths[:min(len(paths), 4)], "/usr/bin/node")
	for _, path := range paths {
		ef, err := elf.Open(path)
		if err != nil {
			continue
		}
		line, err := sectionBytes(ef, ".debug_line")
		ls, _ := sectionBytes(ef, ".debug_line_str")
		ef.Close()
		if err == nil {
			f.Add(line[:min(len(line), 4096)], ls)
		}
	}
	f.Fuzz(func(t *testing.T, line, str []byte) {
		secs := lineData{line: line, str: str, lineStr: str, bo: binaryLE}
		var c lineCollector
		if err := c.lineProgramsV5(secs); err == nil {
			checkSortedTable(t, &c)
		}
		c = lineCollector{}
		if len(line) > 0 {
			r := newLineProgReader(secs, &c)
			if _, err := r.program(0, &lineUnit{compDir: "/c", addrSize: 8}); err == nil {
				checkSortedTable(t, &c)
			}
		}
	})
}

func checkSortedTable(t *testing.T, c *lineCollector) {
	lt, err := c.table()
	if err != nil || lt == nil {
		return
	}
	if !slices.IsSorted(lt.addrs) {
		t.Fatal("rows not sorted")
	}
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
	if err := c.lineProgramsV5(lineData{line: minimalLineProgram(), lineStr: []byte("src\x00a.c\x00"), bo: binaryLE}); err != nil {
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

// BenchmarkLineTable reads the line tables of the startup files that
// have them (or whose debug files do, as ld.so's) with at most the
// agent's 4 MiB of DWARF: the line tables of the agent's start.
func BenchmarkLineTable(b *testing.B) {
	for _, p := range startupFiles(b) {
		ef, err := elffile.Open(elffile.Source{Open: openPath(p), Path: p, Root: "/"})
		if err != nil {
			b.Fatal(err)
		}
		src := ef
		if _, ok := dwarfSize(ef.ELF); !ok {
			if dbg, err := ef.Debug(); err == nil {
				src = dbg
			}
		}
		if size, ok := dwarfSize(src.ELF); !ok || size > 4<<20 {
			ef.Close() // no lines, or more DWARF than the agent reads
			continue
		}
		b.Run(filepath.Base(p), func(b *testing.B) {
			// A scratch, as a Symbolizer lends one load after another.
			sc := new(scratch)
			b.ReportAllocs()
			cpu0 := testenv.ProcessCPU(b).Nanoseconds()
			for b.Loop() {
				if _, err := loadLineTable(src.ELF, src.OSFile(), 4<<20, sc); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
		})
		ef.Close()
	}
}
