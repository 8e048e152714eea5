package symbolizer

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// unitHeadsByDWARF returns the heads of d's units as linePrograms finds
// them through debug/dwarf's Reader: those read before an error, and the
// error.
func unitHeadsByDWARF(d *dwarf.Data) ([]unitHead, error) {
	var heads []unitHead
	rd := d.Reader()
	for {
		e, err := rd.Next()
		if err != nil || e == nil {
			return heads, err
		}
		rd.SkipChildren()
		if e.Tag != dwarf.TagCompileUnit && e.Tag != dwarf.TagPartialUnit {
			continue
		}
		var h unitHead
		h.stmtList, h.hasStmtList = e.Val(dwarf.AttrStmtList).(int64)
		h.compDir, _ = e.Val(dwarf.AttrCompDir).(string)
		h.addrSize = rd.AddressSize()
		heads = append(heads, h)
	}
}

// checkUnitHeads checks readUnitHeads against debug/dwarf on the
// sections: when readUnitHeads reads them, debug/dwarf reads the same
// heads, and fails, if at all, only after the last unit's entry (on
// its children, which readUnitHeads does not read). It reports whether
// readUnitHeads read them.
func checkUnitHeads(t *testing.T, info, abbrev, str []byte) bool {
	t.Helper()
	got, err := readUnitHeads(info, abbrev, str, binary.LittleEndian)
	if err != nil {
		return false
	}
	d, err := dwarf.New(abbrev, nil, nil, info, nil, nil, nil, str)
	if err != nil {
		t.Fatalf("readUnitHeads read %d units that debug/dwarf refuses: %v", len(got), err)
	}
	want, err := unitHeadsByDWARF(d)
	if !slices.Equal(got, want) {
		t.Fatalf("readUnitHeads read %+v, debug/dwarf %+v (error %v)", got, want, err)
	}
	return true
}

// dwarfSections returns the sections of the file at path that
// readUnitHeads reads.
func dwarfSections(t testing.TB, path string) (info, abbrev, str []byte) {
	t.Helper()
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	info, _ = sectionBytes(ef, ".debug_info")
	abbrev, _ = sectionBytes(ef, ".debug_abbrev")
	str, _ = sectionBytes(ef, ".debug_str")
	return info, abbrev, str
}

// TestUnitHeads checks readUnitHeads against debug/dwarf on node's units
// (DWARF 3 and 4) and on a program gcc compiles for DWARF 2, 3 and 4, and
// that it leaves DWARF 5 to others.
func TestUnitHeads(t *testing.T) {
	var paths []string
	if p, err := filepath.EvalSymlinks("/usr/bin/node"); err == nil {
		paths = append(paths, p)
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		testenv.Missing(t, "gcc not installed: %v", err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "a.c")
	if err := os.WriteFile(src, []byte("int f(int x) { return x + 1; }\nint main(void) { return f(1); }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"2", "3", "4", "5"} {
		out := filepath.Join(dir, "prog"+v)
		if b, err := exec.Command("gcc", "-gdwarf-"+v, "-o", out, src).CombinedOutput(); err != nil {
			t.Fatalf("gcc -gdwarf-%s: %v\n%s", v, err, b)
		}
		paths = append(paths, out)
	}
	for _, p := range paths {
		info, abbrev, str := dwarfSections(t, p)
		read := checkUnitHeads(t, info, abbrev, str)
		if v5 := filepath.Base(p) == "prog5"; read == v5 {
			t.Errorf("%s: read by readUnitHeads %v", p, read)
		}
	}
}

// FuzzUnitHeads checks readUnitHeads against debug/dwarf on arbitrary
// .debug_info, .debug_abbrev and .debug_str sections (see
// checkUnitHeads).
func FuzzUnitHeads(f *testing.F) {
	// Seeds: a unit whose entry has no children, then padding; the
	// first unit of node, with its abbreviations.
	info := []byte{
		0x14, 0, 0, 0, // unit length
		4, 0, // version
		0, 0, 0, 0, // abbreviations' offset
		8,                     // address size
		1,                     // abbreviation 1
		'/', 's', 'r', 'c', 0, // DW_AT_comp_dir
		0x10, 0, 0, 0, // DW_AT_stmt_list
		0, 0, 0, // padding
	}
	// Abbreviation 1: DW_TAG_compile_unit, no children, DW_AT_comp_dir
	// as DW_FORM_string, DW_AT_stmt_list as DW_FORM_data4.
	abbrev := []byte{1, 0x11, 0, 0x1b, 0x08, 0x10, 0x06, 0, 0, 0}
	f.Add(info, abbrev, []byte("dir\x00"))
	if p, err := filepath.EvalSymlinks("/usr/bin/node"); err == nil {
		i, a, s := dwarfSections(f, p)
		// The first unit whole, with its abbreviations.
		if len(i) > 4 {
			n := min(len(i), 4+int(binary.LittleEndian.Uint32(i)))
			f.Add(i[:n], a[:min(len(a), 4096)], s[:min(len(s), 4096)])
		}
	}
	f.Fuzz(func(t *testing.T, info, abbrev, str []byte) {
		checkUnitHeads(t, info, abbrev, str)
	})
}
