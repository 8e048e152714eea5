package nativeunwind

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden-tables.txt from the tables built now")

// goldenPath holds, for files of the host, the digest of the table built
// for them by a reviewed implementation: one line per (file, debug file)
// pair, "name file-sha256 debug-sha256 rows table-sha256", debug-sha256
// "-" without a debug file.
const goldenPath = "testdata/golden-tables.txt"

// goldenFiles are the files TestGoldenTables builds tables of: C, C++,
// Python, Go and the dynamic loader, two large C++ programs, GCC's C
// compiler, libc with its separate debug file, and programs built here,
// reproducibly: a cgo program (rows from .gopclntab and .eh_frame) and a
// C program with .debug_frame (with and without a separate debug file).
func goldenFiles(t *testing.T) []struct {
	name string
	path func(testing.TB) string
	dbg  func(*testing.T, string) string
} {
	noDebug := func(*testing.T, string) string { return "" }
	return []struct {
		name string
		path func(testing.TB) string
		dbg  func(*testing.T, string) string
	}{
		{"libc", hostFiles[0].path, noDebug},
		{"libc+debug", hostFiles[0].path, libcDebugPath},
		{"libpython", hostFiles[1].path, noDebug},
		{"go", hostFiles[2].path, noDebug},
		{"ld.so", testenv.DynamicLoader, noDebug},
		{"libstdc++", installed("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"), noDebug},
		{"libjvm", benchFiles[3].path, noDebug},
		{"node", benchFiles[4].path, noDebug},
		{"cc1", benchFiles[5].path, noDebug},
		{"go-cgo", func(tb testing.TB) string { return testenv.BuildGo(tb, cgoSource, true, "-trimpath") }, noDebug},
		{"c-debug-frame", func(tb testing.TB) string { return debugFrameProg(tb, "prog") }, noDebug},
		{"c-debug-file", func(tb testing.TB) string { return debugFrameProg(tb, "prog.stripped") },
			func(t *testing.T, _ string) string { return debugFrameProg(t, "prog.debug") }},
	}
}

// debugFrameProg compiles cSource with its call frame information in
// .debug_frame only, reproducibly (the same bytes for the same compiler),
// and returns the path of one of: the program itself ("prog"), the
// program stripped of its debug sections ("prog.stripped"), and those
// sections as a separate debug file ("prog.debug").
func debugFrameProg(tb testing.TB, name string) string {
	tb.Helper()
	dir := filepath.Dir(buildC(tb, cSource))
	run(tb, dir, "gcc", "-O2", "-g", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables", "-fomit-frame-pointer",
		"-ffile-prefix-map="+dir+"=.", "-Wl,--build-id=sha1", "-o", "prog", "prog.c")
	switch name {
	case "prog.stripped":
		run(tb, dir, "objcopy", "--strip-debug", "prog", name)
	case "prog.debug":
		run(tb, dir, "objcopy", "--only-keep-debug", "prog", name)
	}
	return filepath.Join(dir, name)
}

// fileDigest returns the SHA-256 of the file at path.
func fileDigest(tb testing.TB, path string) string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// tableDigest returns the SHA-256 of a table: its sources and every field
// of every row.
func tableDigest(t *Table) string {
	h := sha256.New()
	var b [32]byte
	h.Write([]byte{byte(t.Sources)})
	for _, r := range t.Rows() {
		binary.LittleEndian.PutUint64(b[0:], r.Addr)
		b[8] = byte(r.CFA)
		binary.LittleEndian.PutUint32(b[12:], uint32(r.CFAOffset))
		binary.LittleEndian.PutUint32(b[16:], uint32(r.FPOffset))
		binary.LittleEndian.PutUint32(b[20:], uint32(r.RAOffset))
		h.Write(b[:24])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// readGolden returns the lines of the golden file by their first three
// fields.
func readGolden(t *testing.T) map[string]string {
	f, err := os.Open(goldenPath)
	if os.IsNotExist(err) && *updateGolden {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := make(map[string]string)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 5 || strings.HasPrefix(fs[0], "#") {
			continue
		}
		m[strings.Join(fs[:3], " ")] = strings.Join(fs[3:], " ")
	}
	return m
}

// TestGoldenTables checks that the tables of the host's files are those
// the reviewed implementation built, bit for bit, where the golden file
// knows the files (it is keyed by their contents, so a host with other
// versions skips them). Run with -update-golden only to record files new
// to it, from an implementation known to be right.
func TestGoldenTables(t *testing.T) {
	golden := readGolden(t)
	var lines []string
	// shared builds every file's table after the table of the file
	// before, keeping all its buffers: what a build leaves in them must
	// not change the next table.
	shared := &Builder{KeepBytes: 1 << 30}
	for _, g := range goldenFiles(t) {
		t.Run(g.name, func(t *testing.T) {
			path := g.path(t)
			dbgPath := g.dbg(t, path)
			key := g.name + " " + fileDigest(t, path) + " -"
			if dbgPath != "" {
				key = g.name + " " + fileDigest(t, path) + " " + fileDigest(t, dbgPath)
			}
			f, _ := openELF(t, path)
			var dbg *elffile.File
			if dbgPath != "" {
				dbg, _ = openELF(t, dbgPath)
			}
			var b Builder
			tab, err := b.Build(f, dbg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%d %s", tab.Len(), tableDigest(tab))
			lines = append(lines, key+" "+got)
			want, ok := golden[key]
			switch {
			case *updateGolden:
			case !ok:
				t.Skipf("%s (%s) is not in %s", g.name, path, goldenPath)
			case got != want:
				t.Errorf("%s: table %s, want %s", path, got, want)
			}
			// The same table again, from b and from shared.
			for _, rb := range []*Builder{&b, shared} {
				again, err := rb.Build(f, dbg, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if d := fmt.Sprintf("%d %s", again.Len(), tableDigest(again)); d != got {
					t.Errorf("with a reused Builder: %s, first %s", d, got)
				}
			}
		})
	}
	if !*updateGolden {
		return
	}
	for k, v := range golden {
		lines = append(lines, k+" "+v)
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	out := "# name file-sha256 debug-file-sha256 rows table-sha256; see TestGoldenTables\n" + strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(goldenPath, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBuilderKeeps checks that a Builder keeps no buffer larger than
// KeepBytes once a table is released, and keeps those it may: after a
// build of a large file (libpython: 1.8 MB of rows), nothing over the
// bound; after a small one (the dynamic loader), its rows' buffer.
func TestBuilderKeeps(t *testing.T) {
	b := &Builder{KeepBytes: 256 << 10}
	check := func(path string) {
		f, _ := openELF(t, path)
		tab, err := b.Build(f, nil, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if tab.Len() == 0 {
			t.Fatalf("%s: no rows", path)
		}
		b.Release()
		for name, bytes := range map[string]int{
			"rows": cap(b.rows) * rowSize, "layer": cap(b.layer) * rowSize, "rules": b.rules.bytes(), "holes": cap(b.holes) * holeSize,
			"fdes": cap(b.fdes) * fdeSize, "cies": cap(b.cies) * cieSize, "section": cap(b.section),
		} {
			if bytes > b.KeepBytes {
				t.Errorf("after %s: %s keeps %d bytes, more than %d", path, name, bytes, b.KeepBytes)
			}
		}
		if b.table.Len() != 0 {
			t.Errorf("after %s: the released table still has rows", path)
		}
	}
	check(hostFiles[1].path(t)) // libpython
	if b.rows != nil {
		t.Errorf("libpython's rows kept")
	}
	check(testenv.DynamicLoader(t))
	if b.rows == nil {
		t.Errorf("the dynamic loader's rows not kept")
	}
}

// TestCompressedDebugFrame checks that a compressed .debug_frame, which
// cannot be mapped and is read into the Builder's buffer, gives the table
// the uncompressed one does, in the file and in a separate debug file.
func TestCompressedDebugFrame(t *testing.T) {
	prog := debugFrameProg(t, "prog")
	dir := filepath.Dir(prog)
	run(t, dir, "objcopy", "--strip-debug", "prog", "prog.stripped")
	run(t, dir, "objcopy", "--only-keep-debug", "prog", "prog.debug")
	run(t, dir, "objcopy", "--compress-debug-sections=zlib", "prog", "prog.z")
	run(t, dir, "objcopy", "--compress-debug-sections=zlib", "prog.debug", "prog.debug.z")
	_, ef := openELF(t, filepath.Join(dir, "prog.z"))
	if sec := ef.Section(".debug_frame"); sec == nil || sec.Flags&elf.SHF_COMPRESSED == 0 {
		t.Fatal("objcopy left .debug_frame uncompressed")
	}
	want := build(t, prog, "")
	if want.Sources&SourceDebugFrame == 0 {
		t.Fatalf("no rows from .debug_frame: %b", want.Sources)
	}
	b := &Builder{}
	for _, c := range [][2]string{{"prog.z", ""}, {"prog.stripped", "prog.debug.z"}} {
		f, _ := openELF(t, filepath.Join(dir, c[0]))
		var dbg *elffile.File
		if c[1] != "" {
			dbg, _ = openELF(t, filepath.Join(dir, c[1]))
		}
		got, err := b.Build(f, dbg, Options{})
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if got.Sources != want.Sources || !slices.Equal(got.Rows(), want.Rows()) {
			t.Errorf("%v: %d rows from %b, want %d from %b", c, got.Len(), got.Sources, want.Len(), want.Sources)
		}
	}
}
