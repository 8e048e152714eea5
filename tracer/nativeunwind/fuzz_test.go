package nativeunwind

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/gopclntab"
	"github.com/stackline-dev/stackline/internal/gopclntab/gopclntabtest"
)

// seedSections returns small .eh_frame and .debug_frame sections covering
// most of what the parser knows.
func seedSections() []frames {
	var out []frames
	f := frames{addr: 0x200000}
	cie := f.cie(stdCIE())
	f.stdFDE(cie, 0x1000, 0x40, cfaAdvanceLoc|1, cfaDefCFAOffset, 16, cfaOffset|6, 2, cfaAdvanceLoc|3, cfaDefCFARegister, 6,
		cfaRememberState, cfaAdvanceLoc1, 0x20, cfaDefCFA, 7, 8, cfaRestoreState, cfaAdvanceLoc|1, cfaUndefined, 16)
	e := []byte{opBreg0 + 7, 8, opBreg0 + 16, 0, opLit0 + 15, opAnd, opLit0 + 9, opGe, opLit0 + 3, opShl, opPlus}
	f.stdFDE(cie, 0x1040, 0x40, cat([]byte{cfaAdvanceLoc | 16, cfaDefCFAExpression, byte(len(e))}, e)...)
	sig := f.cie(cat([]byte{1, 'z', 'P', 'L', 'R', 'S', 0}, uleb(1), sleb(-8), []byte{16}, uleb(7), []byte{0x9b}, u32(0), []byte{0x1b, 0x1b}))
	f.fde(sig, cat(f.pcrel(0x1080), u32(0x10), uleb(4), u32(0)))
	out = append(out, f)

	d := frames{debug: true}
	v4 := d.cie(cat([]byte{4, 0, 8, 0}, uleb(1), sleb(-8), uleb(16), []byte{cfaDefCFA, 7, 8, cfaOffset | 16, 1}))
	d.fde(v4, cat(u64(0x1000), u64(0x10), []byte{cfaAdvanceLoc | 1, cfaDefCFAOffsetSF, 0x7e, cfaSetLoc}, u64(0x1008), []byte{cfaValExpression, 6, 1, 0x30}))
	out = append(out, d)
	return out
}

// FuzzEHFrame parses arbitrary .eh_frame and .debug_frame sections.
func FuzzEHFrame(f *testing.F) {
	for _, s := range seedSections() {
		if rows, err := s.parse(f, Options{}); err != nil || len(rows) < 3 {
			f.Fatalf("seed: %v, %+v", err, rows)
		}
		f.Add(s.b, s.debug)
	}
	// reused keeps its buffers from one input to the next, as a
	// tracer's Builder does from one file to the next: what it leaves
	// behind must not change the next section's rows.
	var reused Builder
	f.Fuzz(func(t *testing.T, data []byte, debug bool) {
		fr := frames{b: data, debug: debug, addr: 0x200000}
		opts := Options{MaxRows: 1 << 16, MaxCIEs: 64}
		rows, err := fr.parse(t, opts)
		again, againErr := fr.parseWith(t, &reused, opts)
		if (err == nil) != (againErr == nil) || err == nil && !slices.Equal(rows, again) {
			t.Fatalf("with a reused Builder: %v, %+v\nwith a new one: %v, %+v", againErr, again, err, rows)
		}
		if err != nil {
			return
		}
		if len(rows) > 1<<16 {
			t.Fatalf("%d rows", len(rows))
		}
		checkTable(t, rows)
	})
}

// tinyELF returns a small static executable with an .eh_frame, or nil
// without gcc.
func tinyELF(tb testing.TB) []byte {
	if _, err := exec.LookPath("gcc"); err != nil {
		return nil
	}
	dir := tb.TempDir()
	src := filepath.Join(dir, "tiny.c")
	if err := os.WriteFile(src, []byte("int f(int x) { return x * 3; }\nvoid _start(void) { for (;;) f(1); }\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, "tiny")
	cmd := exec.Command("gcc", "-O1", "-nostdlib", "-static", "-s", "-fno-pic", "-no-pie", "-Wl,--build-id=none",
		"-Wl,-z,max-page-size=16", "-Wl,-z,noseparate-code", "-o", bin, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("gcc: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// FuzzBuild builds tables of arbitrary ELF files.
func FuzzBuild(f *testing.F) {
	if tiny := tinyELF(f); tiny != nil {
		f.Add(tiny)
	}
	// reused builds every input's table after the one before, keeping
	// all its buffers (KeepBytes) or none (1).
	reused := []*Builder{{KeepBytes: 1 << 30}, {KeepBytes: 1}}
	f.Fuzz(func(t *testing.T, data []byte) {
		ef, err := elffile.NewReader(bytes.NewReader(data))
		if err != nil {
			return
		}
		opts := Options{MaxRows: 1 << 16, MaxCIEs: 64, MaxSectionBytes: 1 << 20}
		tab, err := Build(ef, nil, opts)
		for _, b := range reused {
			again, againErr := b.Build(ef, nil, opts)
			if (err == nil) != (againErr == nil) || err == nil && (again.Sources != tab.Sources || !slices.Equal(again.Rows(), tab.Rows())) {
				t.Fatalf("with a reused Builder: %v, %+v\nwith a new one: %v, %+v", againErr, again, err, tab)
			}
		}
		if err != nil {
			return
		}
		checkTable(t, tab.Rows())
	})
}

// FuzzGoRows derives rows from arbitrary .gopclntab sections.
func FuzzGoRows(f *testing.F) {
	for _, magic := range []uint32{gopclntab.Magic116, gopclntab.Magic118, gopclntab.Magic120} {
		f.Add(gopclntabtest.Build(magic, 0x1000, goTestFuncs))
	}
	code := goTestCode()
	var reused Builder
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := goRowsOf(t, data, code)
		again, againErr := goRowsWith(t, &reused, data, code)
		if (err == nil) != (againErr == nil) || err == nil && !slices.Equal(rows, again) {
			t.Fatalf("with a reused Builder: %v, %+v\nwith a new one: %v, %+v", againErr, again, err, rows)
		}
		if err != nil {
			return
		}
		checkTable(t, rows)
	})
}

// hdrFor returns an .eh_frame_hdr section at hdrAddr for the .eh_frame
// section f: its binary search table of every FDE's start and address.
func hdrFor(tb testing.TB, f frames, hdrAddr uint64) []byte {
	tb.Helper()
	a, _ := archFor(elf.EM_X86_64)
	opts := Options{}
	if err := opts.normalize(); err != nil {
		tb.Fatal(err)
	}
	var b Builder
	p := &frameParser{sec: &frameSection{data: f.b, addr: f.addr, order: binary.LittleEndian, ptrSize: 8},
		arch: &a, opts: &opts, segs: testSegs, covered: newCoverage(nil, nil), cieIndex: map[uint64]int32{}, interp: &b.interp, rules: &b.rules}
	p.interp.arch = &a
	p.interp.sec = p.sec
	type entry struct{ loc, fde uint64 }
	var entries []entry
	for off := 0; off < len(f.b); {
		n := len(p.fdes)
		next, done, err := p.entry(off)
		if err != nil {
			tb.Fatal(err)
		}
		if len(p.fdes) > n {
			entries = append(entries, entry{p.fdes[n].vlo, f.addr + uint64(off)})
		}
		if done {
			break
		}
		off = next
	}
	slices.SortFunc(entries, func(x, y entry) int { return int(x.loc) - int(y.loc) })
	out := []byte{1, pePCRel | peSData4, peUData4, tableEncoding}
	out = append(out, u32(uint32(int32(f.addr-(hdrAddr+4))))...)
	out = append(out, u32(uint32(len(entries)))...)
	for _, e := range entries {
		out = append(out, u32(uint32(int32(e.loc-hdrAddr)))...)
		out = append(out, u32(uint32(int32(e.fde-hdrAddr)))...)
	}
	return out
}

// FuzzEHFrameIndex builds the rows of a range of an .eh_frame section
// through an arbitrary .eh_frame_hdr: whatever it says, the build ends,
// and its rows are sorted and in the range; with the section's own index
// they are those of the whole section in the range. So are they when the
// section is kept (Builder.Keep), built twice with what the first build
// kept of it (its CIEs, the index's header and samples).
func FuzzEHFrameIndex(f *testing.F) {
	sec := seedSections()[0]
	const hdrAddr = 0x100000
	good := hdrFor(f, sec, hdrAddr)
	f.Add(good, uint64(0x1000), uint64(0x1048))
	f.Add(good, uint64(0x1044), uint64(0x1090))
	f.Add(good[:12], uint64(0), uint64(0x2000))
	a, _ := archFor(elf.EM_X86_64)
	opts := Options{MaxRows: 1 << 16, MaxCIEs: 64}
	if err := opts.normalize(); err != nil {
		f.Fatal(err)
	}
	build := func(t *testing.T, hdr []byte, r Range, kept *keptFrames) ([]Row, error) {
		var b Builder
		s := &frameSection{name: "test", data: sec.b, addr: sec.addr, order: binary.LittleEndian, ptrSize: 8, hdr: hdr, hdrAddr: hdrAddr}
		bs := &buildState{arch: &a, opts: &opts, segs: testSegs, ranges: rangeSet{r}, scratch: &b}
		b.rules.reset()
		rows, err := bs.sectionRows(s, newCoverage(nil, nil), nil, kept)
		if err != nil {
			return nil, err
		}
		return unpackRows(&b.rules, bs.ranges.cut(nil, finalize(rows))), nil
	}
	f.Fuzz(func(t *testing.T, hdr []byte, lo, hi uint64) {
		if hi <= lo || hi > 1<<20 {
			return
		}
		r := Range{lo, hi}
		kept := &keptFrames{cieIndex: make(map[uint64]int32)}
		for i, k := range []*keptFrames{nil, kept, kept} {
			rows, err := build(t, hdr, r, k)
			if err != nil {
				continue
			}
			for i, row := range rows {
				if row.Addr < lo || row.Addr >= hi || i > 0 && row.Addr <= rows[i-1].Addr {
					t.Fatalf("rows of %#x-%#x: %+v", lo, hi, rows)
				}
			}
			if !bytes.Equal(hdr, good) {
				continue
			}
			want, err := build(t, nil, r, nil)
			if err != nil || !slices.Equal(rows, want) {
				t.Fatalf("through the index (build %d, kept %t): %+v; walking the section: %+v, %v", i, k != nil, rows, want, err)
			}
		}
	})
}
