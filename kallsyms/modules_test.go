package kallsyms

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const vmlinuxText = `ffffffff81000000 T _stext
ffffffff81000100 T schedule
ffffffff81001000 T _etext
`

// Module fixtures: mod_a at 0xffffffffc0a00000, mod_b at two places.
const (
	modAText = `ffffffffc0a00000 t a_first	[mod_a]
ffffffffc0a00100 T a_func	[mod_a]
`
	modALine  = "mod_a 12288 1 - Live 0xffffffffc0a00000\n"
	modBText  = "ffffffffc0b00000 T b_func\t[mod_b]\nffffffffc0b00800 t b_other\t[mod_b]\nffffffffc0b00900 d b_data\t[mod_b]\n"
	modBLine  = "mod_b 8192 0 mod_a, Live 0xffffffffc0b00000 (OE)\n"
	modB2Text = "ffffffffc0c00000 T b_func\t[mod_b]\nffffffffc0c00800 t b_other\t[mod_b]\n"
	modB2Line = "mod_b 8192 0 mod_a, Live 0xffffffffc0c00000 (OE)\n"
)

// fixtureTree is a proc and sys tree with a settable clock and BPF programs.
type fixtureTree struct {
	t         *testing.T
	proc, sys string
	now       time.Time
	progs     *fakePrograms
}

func newFixture(t *testing.T, kallsyms, modules string) *fixtureTree {
	root := t.TempDir()
	f := &fixtureTree{
		t:     t,
		proc:  filepath.Join(root, "proc"),
		sys:   filepath.Join(root, "sys"),
		now:   time.Unix(1_700_000_000, 0),
		progs: &fakePrograms{progs: make(map[uint32]BPFProgram)},
	}
	f.write(kallsyms, modules)
	return f
}

// write replaces the fixture's kallsyms and modules files.
func (f *fixtureTree) write(kallsyms, modules string) {
	f.t.Helper()
	mustWrite(f.t, filepath.Join(f.proc, "kallsyms"), []byte(kallsyms))
	mustWrite(f.t, filepath.Join(f.proc, "modules"), []byte(modules))
}

// setBuildID writes a module's build ID note.
func (f *fixtureTree) setBuildID(module string, id []byte) {
	f.t.Helper()
	mustWrite(f.t, filepath.Join(f.sys, "module", module, "notes", ".note.gnu.build-id"),
		notes(note{"GNU\x00", ntGNUBuildID, id}))
}

func (f *fixtureTree) load() *Table {
	f.t.Helper()
	tab, err := Load(Options{
		ProcRoot:          f.proc,
		SysRoot:           f.sys,
		MinRereadInterval: time.Second,
		Now:               func() time.Time { return f.now },
		Programs:          f.progs,
		Source:            SourceFile,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return tab
}

// expect checks a lookup's name, module and offset, or that it fails when
// name is "".
func expect(t *testing.T, tab *Table, addr uint64, name, module string, off uint64) Symbol {
	t.Helper()
	sym, ok := tab.Lookup(addr)
	if name == "" {
		if ok {
			t.Errorf("Lookup(%#x) = %+v, want unknown", addr, sym)
		}
		return sym
	}
	if !ok || sym.Name != name || sym.Module != module || sym.Offset != off {
		t.Errorf("Lookup(%#x) = %+v, %v; want %s+%#x in %q", addr, sym, ok, name, off, module)
	}
	return sym
}

func TestModuleLoadedAfterStart(t *testing.T) {
	f := newFixture(t, vmlinuxText+modAText, modALine)
	f.setBuildID("mod_a", []byte{0xaa, 0x01})
	tab := f.load()
	expect(t, tab, 0xffffffff81000110, "schedule", "", 0x10)
	a := expect(t, tab, 0xffffffffc0a00104, "a_func", "mod_a", 4)
	if a.ModuleBuildID != "aa01" || a.ModuleKey != "mod_a/aa01" || a.ModuleBase != 0xffffffffc0a00000 {
		t.Errorf("mod_a symbol %+v: want build ID aa01, key mod_a/aa01, base 0xffffffffc0a00000", a)
	}
	if s := tab.Stats(); s.ModuleRereads != 0 || s.Modules != 1 {
		t.Errorf("after start: %+v", s)
	}

	// mod_b is loaded. Its first lookup names it, without waiting.
	f.write(vmlinuxText+modAText+modBText, modALine+modBLine)
	f.setBuildID("mod_b", []byte{0xbb, 0x02, 0x03})
	b := expect(t, tab, 0xffffffffc0b00010, "b_func", "mod_b", 0x10)
	if b.ModuleBuildID != "bb0203" || b.ModuleKey != "mod_b/bb0203" || b.ModuleBase != 0xffffffffc0b00000 {
		t.Errorf("mod_b symbol %+v", b)
	}
	// Inside the module, past its last function but short of its end.
	expect(t, tab, 0xffffffffc0b01ff0, "b_other", "mod_b", 0x17f0)
	// Past the module's end (base + size), though within MaxSymbolSize.
	expect(t, tab, 0xffffffffc0b02000, "", "", 0)
	s := tab.Stats()
	if s.ModuleRereads != 1 || s.KallsymsRereads != 1 || s.Modules != 2 || s.Unknown != 1 {
		t.Errorf("after mod_b: %+v", s)
	}
	if s.Lookups != 5 {
		t.Errorf("Lookups = %d, want 5", s.Lookups)
	}
	mods := tab.Modules()
	want := []Module{
		{Name: "mod_a", Base: 0xffffffffc0a00000, Size: 12288, BuildID: "aa01", Key: "mod_a/aa01"},
		{Name: "mod_b", Base: 0xffffffffc0b00000, Size: 8192, BuildID: "bb0203", Key: "mod_b/bb0203"},
	}
	if !slices.Equal(mods, want) {
		t.Errorf("Modules() = %+v, want %+v", mods, want)
	}
}

func TestModuleReload(t *testing.T) {
	f := newFixture(t, vmlinuxText+modAText+modBText, modALine+modBLine)
	f.setBuildID("mod_a", []byte{0xaa})
	tab := f.load()
	expect(t, tab, 0xffffffffc0b00010, "b_func", "mod_b", 0x10)

	// mod_b is reloaded elsewhere; mod_a's notes vanish, but its build ID
	// was read for this load already.
	f.write(vmlinuxText+modAText+modB2Text, modALine+modB2Line)
	if err := os.RemoveAll(filepath.Join(f.sys, "module", "mod_a")); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(time.Second)
	b := expect(t, tab, 0xffffffffc0c00820, "b_other", "mod_b", 0x20)
	if b.ModuleKey != "mod_b@ffffffffc0c00000" || b.ModuleBase != 0xffffffffc0c00000 || b.ModuleBuildID != "" {
		t.Errorf("reloaded mod_b symbol %+v", b)
	}
	expect(t, tab, 0xffffffffc0b00010, "", "", 0)
	if a := expect(t, tab, 0xffffffffc0a00000, "a_first", "mod_a", 0); a.ModuleBuildID != "aa" {
		t.Errorf("mod_a's cached build ID = %q, want aa", a.ModuleBuildID)
	}
	// The old address stays unknown after a further re-read.
	f.now = f.now.Add(time.Second)
	expect(t, tab, 0xffffffffc0b00010, "", "", 0)
	if s := tab.Stats(); s.ModuleRereads != 2 || s.KallsymsRereads != 2 || s.Unknown != 2 {
		t.Errorf("%+v", s)
	}
}

func TestModuleUnload(t *testing.T) {
	f := newFixture(t, vmlinuxText+modAText+modBText, modALine+modBLine)
	tab := f.load()
	expect(t, tab, 0xffffffffc0b00010, "b_func", "mod_b", 0x10)
	f.write(vmlinuxText+modAText, modALine)
	// Until an unknown address prompts a re-read, the table still holds
	// mod_b; the next one drops it.
	f.now = f.now.Add(time.Hour)
	expect(t, tab, 0xffffffffc0f00000, "", "", 0)
	expect(t, tab, 0xffffffffc0b00010, "", "", 0)
	if got := tab.Modules(); len(got) != 1 || got[0].Name != "mod_a" {
		t.Errorf("Modules() = %+v, want mod_a only", got)
	}
	if s := tab.Stats(); s.Modules != 1 || s.ModuleRereads != 1 {
		t.Errorf("%+v", s)
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, vmlinuxText+modAText, modALine)
	tab := f.load()
	burst := func() {
		for i := range 1000 {
			if sym, ok := tab.Lookup(0xffffffffd0000000 + uint64(i)*0x100000); ok {
				t.Fatalf("unknown address named %+v", sym)
			}
		}
	}
	check := func(when string, modules, kallsyms, unknown uint64) {
		t.Helper()
		s := tab.Stats()
		if s.ModuleRereads != modules || s.BPFRereads != modules || s.KallsymsRereads != kallsyms || s.Unknown != unknown {
			t.Errorf("%s: %+v; want %d module and BPF re-reads, %d kallsyms re-reads, %d unknown",
				when, s, modules, kallsyms, unknown)
		}
		if n := tab.Rereads(); n != 2*modules+kallsyms {
			t.Errorf("%s: Rereads %d, want %d", when, n, 2*modules+kallsyms)
		}
	}
	burst()
	check("first burst", 1, 1, 1000)
	f.now = f.now.Add(time.Second - 1)
	burst()
	check("within the interval", 1, 1, 2000)
	f.now = f.now.Add(1)
	burst()
	// The module list is re-read; kallsyms, which did not help before,
	// waits for kallsymsBackoff intervals.
	check("after the interval", 2, 1, 3000)
	f.now = f.now.Add(kallsymsBackoff * time.Second)
	burst()
	check("after the backoff", 3, 2, 4000)

	// Concurrent bursts share one re-read too.
	f.now = f.now.Add(time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(burst)
	}
	wg.Wait()
	check("concurrent bursts", 4, 2, 12000)
	// Known addresses never re-read.
	f.now = f.now.Add(time.Hour)
	for range 1000 {
		expect(t, tab, 0xffffffff81000100, "schedule", "", 0)
	}
	check("known addresses", 4, 2, 12000)
}

func TestPseudoModuleAppears(t *testing.T) {
	f := newFixture(t, vmlinuxText+modAText, modALine)
	tab := f.load()
	// A BPF trampoline appears in kallsyms; the module list is unchanged.
	f.write(vmlinuxText+modAText+"ffffffffc0e00000 t bpf_trampoline_6442\t[bpf]\n", modALine)
	sym := expect(t, tab, 0xffffffffc0e00040, "bpf_trampoline_6442", "bpf", 0x40)
	if sym.ModuleKey != "bpf:bpf_trampoline_6442" || sym.ModuleBase != 0xffffffffc0e00000 {
		t.Errorf("%+v", sym)
	}
	if s := tab.Stats(); s.ModuleRereads != 1 || s.KallsymsRereads != 1 || s.Modules != 1 {
		t.Errorf("%+v", s)
	}
}

func TestModuleHiddenAddress(t *testing.T) {
	// /proc/modules hides the address; sysfs gives it.
	f := newFixture(t, vmlinuxText+modAText+modBText,
		"mod_a 12288 1 - Live 0x0000000000000000\nmod_b 8192 0 mod_a, Live 0x0000000000000000 (OE)\n")
	mustWrite(t, filepath.Join(f.sys, "module", "mod_a", "sections", ".text"), []byte("0xffffffffc0a00000\n"))
	tab := f.load()
	want := []Module{
		{Name: "mod_a", Base: 0xffffffffc0a00000, Size: 12288, Key: "mod_a@ffffffffc0a00000"},
		// No sections file: the lowest symbol stands in.
		{Name: "mod_b", Base: 0xffffffffc0b00000, Size: 8192, Key: "mod_b@ffffffffc0b00000"},
	}
	if got := tab.Modules(); !slices.Equal(got, want) {
		t.Errorf("Modules() = %+v, want %+v", got, want)
	}
	expect(t, tab, 0xffffffffc0a00104, "a_func", "mod_a", 4)
	expect(t, tab, 0xffffffffc0b00010, "b_func", "mod_b", 0x10)
}

func TestNoProcModules(t *testing.T) {
	// A kernel without module support: kallsyms still lists pseudo-modules.
	f := newFixture(t, vmlinuxText+"ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]\n", "")
	if err := os.Remove(filepath.Join(f.proc, "modules")); err != nil {
		t.Fatal(err)
	}
	tab := f.load()
	sym := expect(t, tab, 0xffffffffc0201008, "ftrace_trampoline", "__builtin__ftrace", 8)
	if sym.ModuleKey != "__builtin__ftrace:ftrace_trampoline" {
		t.Errorf("%+v", sym)
	}
	expect(t, tab, 0xffffffffc0300000, "", "", 0)
	if s := tab.Stats(); s.Modules != 0 || s.RereadErrors != 0 || s.ModuleRereads != 1 {
		t.Errorf("%+v", s)
	}
}

func TestMalformedModules(t *testing.T) {
	text := modALine +
		"\n" +
		"only three fields\n" +
		"bad/name 100 0 - Live 0xffffffffc0d00000\n" +
		"mod_c notanumber 0 - Live 0xffffffffc0d00000\n" +
		"mod_c 100 0 - Live ffffffffc0d00000\n" +
		"mod_c 100 0 - Live 0xfffffffffffffff0\n" + // base + size overflows
		"mod_c 100 0 - Live 0xffffffffc0d00000 E\n" +
		"mod_c 100 0 - Live 0xffffffffc0d00000 (E) extra\n" +
		"mod_a 4096 0 - Live 0xffffffffc0e00000\n" + // a repeated name
		modBLine
	mods, skipped, err := parseProcModules(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []procModule{
		{name: "mod_a", size: 12288, base: 0xffffffffc0a00000},
		{name: "mod_b", size: 8192, base: 0xffffffffc0b00000},
	}
	if !slices.Equal(mods, want) || skipped != 8 {
		t.Errorf("parseProcModules = %+v, %d skipped; want %+v, 8 skipped", mods, skipped, want)
	}

	// A table counts them, and malformed kallsyms lines, on every read.
	f := newFixture(t, vmlinuxText+modAText+"garbage line\n", text)
	tab := f.load()
	if got := tab.Skipped(); got != 9 {
		t.Errorf("Skipped() = %d after Load, want 9", got)
	}
	f.write(vmlinuxText+modAText+modBText+"garbage line\n", modALine+modBLine+"junk\n")
	expect(t, tab, 0xffffffffc0b00000, "b_func", "mod_b", 0)
	if s := tab.Stats(); s.Skipped != 11 || s.Modules != 2 {
		t.Errorf("after a re-read: %+v; want 11 skipped, 2 modules", s)
	}
}

func TestRereadErrors(t *testing.T) {
	f := newFixture(t, vmlinuxText+modAText, modALine)
	tab := f.load()
	// kallsyms vanishes: the re-read fails, the table keeps what it had.
	f.write(vmlinuxText+modAText+modBText, modALine+modBLine)
	if err := os.Remove(filepath.Join(f.proc, "kallsyms")); err != nil {
		t.Fatal(err)
	}
	expect(t, tab, 0xffffffffc0b00000, "", "", 0)
	expect(t, tab, 0xffffffffc0a00100, "a_func", "mod_a", 0)
	if s := tab.Stats(); s.RereadErrors != 1 || s.Modules != 1 {
		t.Errorf("%+v", s)
	}
	// Once it is back, the changed module list is noticed again.
	f.write(vmlinuxText+modAText+modBText, modALine+modBLine)
	f.now = f.now.Add(time.Second)
	expect(t, tab, 0xffffffffc0b00000, "b_func", "mod_b", 0)
}

// fakePrograms is a ProgramLister over a fixed set of programs.
type fakePrograms struct {
	mu     sync.Mutex
	progs  map[uint32]BPFProgram
	failID uint32 // Program fails for this ID
	calls  map[uint32]int
}

func (p *fakePrograms) set(progs ...BPFProgram) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.progs = make(map[uint32]BPFProgram)
	for _, prog := range progs {
		p.progs[prog.ID] = prog
	}
}

func (p *fakePrograms) ProgramIDs() ([]uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []uint32
	for id := range p.progs {
		ids = append(ids, id)
	}
	if p.failID != 0 {
		ids = append(ids, p.failID)
	}
	// A program that is gone between listing and describing.
	ids = append(ids, 999)
	slices.Sort(ids)
	return ids, nil
}

func (p *fakePrograms) Program(id uint32) (BPFProgram, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calls == nil {
		p.calls = make(map[uint32]int)
	}
	p.calls[id]++
	if id == p.failID {
		return BPFProgram{}, errors.New("permission denied")
	}
	prog, ok := p.progs[id]
	if !ok {
		return BPFProgram{}, fmt.Errorf("program %d: %w", id, os.ErrNotExist)
	}
	return prog, nil
}

// noPrograms lists no BPF programs.
type noPrograms struct{}

func (noPrograms) ProgramIDs() ([]uint32, error)      { return nil, nil }
func (noPrograms) Program(uint32) (BPFProgram, error) { return BPFProgram{}, os.ErrNotExist }

func TestBPFPrograms(t *testing.T) {
	f := newFixture(t, vmlinuxText+modAText, modALine)
	tab := f.load()
	prog := BPFProgram{
		ID:   7,
		Name: "handler",
		Tag:  "0123456789abcdef",
		Funcs: []BPFFunc{
			{Addr: 0xffffffffc0e00000, Size: 0x80},
			{Addr: 0xffffffffc0e01000, Size: 0x40, Name: "subfn"},
		},
	}
	f.progs.set(prog)
	f.progs.failID = 8
	sym := expect(t, tab, 0xffffffffc0e00010, "bpf_prog_0123456789abcdef_handler", "bpf", 0x10)
	want := Symbol{
		Name:       "bpf_prog_0123456789abcdef_handler",
		Offset:     0x10,
		Module:     "bpf",
		ModuleKey:  "bpf:bpf_prog_0123456789abcdef_handler",
		ModuleBase: 0xffffffffc0e00000,
	}
	if sym != want {
		t.Errorf("Lookup = %+v, want %+v", sym, want)
	}
	expect(t, tab, 0xffffffffc0e0103f, "bpf_prog_0123456789abcdef_subfn", "bpf", 0x3f)
	// Past the JIT'ed code: unknown, though close to a function's start.
	expect(t, tab, 0xffffffffc0e00080, "", "", 0)
	s := tab.Stats()
	if s.BPFRereads != 1 || s.BPFPrograms != 1 || s.RereadErrors != 1 {
		t.Errorf("%+v", s)
	}

	// A second program; the first is not described again.
	prog2 := BPFProgram{ID: 9, Tag: "fedcba9876543210", Funcs: []BPFFunc{{Addr: 0xffffffffc0e02000, Size: 0x10}}}
	f.progs.set(prog, prog2)
	f.progs.failID = 0
	f.now = f.now.Add(time.Second)
	expect(t, tab, 0xffffffffc0e02000, "bpf_prog_fedcba9876543210", "bpf", 0)
	if got := f.progs.calls[7]; got != 1 {
		t.Errorf("program 7 described %d times, want once", got)
	}
	if s := tab.Stats(); s.BPFPrograms != 2 || s.BPFRereads != 2 {
		t.Errorf("%+v", s)
	}

	// The first is unloaded and another takes its place. Its old name
	// holds until MaxModuleAge has passed since the last re-read.
	prog3 := BPFProgram{ID: 10, Name: "other", Tag: "00000000000000aa", Funcs: []BPFFunc{{Addr: 0xffffffffc0e00000, Size: 0x20}}}
	f.progs.set(prog2, prog3)
	f.now = f.now.Add(DefaultMaxModuleAge - 1)
	expect(t, tab, 0xffffffffc0e00010, "bpf_prog_0123456789abcdef_handler", "bpf", 0x10)
	f.now = f.now.Add(1)
	expect(t, tab, 0xffffffffc0e00010, "bpf_prog_00000000000000aa_other", "bpf", 0x10)
	expect(t, tab, 0xffffffffc0e00020, "", "", 0)
	expect(t, tab, 0xffffffffc0e02000, "bpf_prog_fedcba9876543210", "bpf", 0)
	if s := tab.Stats(); s.BPFPrograms != 2 || s.BPFRereads != 3 {
		t.Errorf("%+v", s)
	}
}

func FuzzParseModules(f *testing.F) {
	f.Add([]byte(modALine + modBLine))
	f.Add([]byte("mod_a 0 0 - Live 0x0\n"))
	f.Add([]byte("nf_tables 372736 4 nft_chain_nat,nft_compat, Live 0xffffffffc0a00000 (E)\n"))
	f.Add([]byte("mod_a 12288 1 - Live 0xffffffffc0a00000\nmod_a 1 1 - Live 0x1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mods, _, err := parseProcModules(strings.NewReader(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range mods {
			if !validModuleName(m.name) || m.base+m.size < m.base {
				t.Fatalf("bad module %+v", m)
			}
			if i > 0 && mods[i-1].name >= m.name {
				t.Fatalf("modules not sorted and unique at %d", i)
			}
		}
		// Build a module part against fixed symbols: every lookup must
		// be consistent, none may panic.
		b := &builder{}
		if err := b.read(strings.NewReader(vmlinuxText + modAText + modBText + modB2Text)); err != nil {
			t.Fatal(err)
		}
		var src modSource
		p := src.buildModPart(b, mods)
		for i, a := range p.syms.allAddrs() {
			sym, ok := p.lookup(a)
			if ok && (sym.Offset != 0 || sym.Name != p.syms.name(i) || sym.ModuleKey == "") {
				t.Fatalf("lookup(%#x) = %+v", a, sym)
			}
			p.lookup(a + MaxSymbolSize - 1)
		}
		tab := &Table{}
		tab.dyn.Store(&dynamic{mods: p})
		_ = tab.Modules()
		_ = tab.Bytes()
	})
}

func TestBPFKallsymsName(t *testing.T) {
	// /proc/kallsyms names a subprogram exactly; the syscall cannot.
	f := newFixture(t, vmlinuxText+"ffffffffc0e01000 t bpf_prog_5555555555555555_F\t[bpf]\n", "")
	prog := BPFProgram{ID: 3, Name: "main", Tag: "0123456789abcdef", Funcs: []BPFFunc{
		{Addr: 0xffffffffc0e00000, Size: 0x80},
		{Addr: 0xffffffffc0e01000, Size: 0x40},
	}}
	f.progs.set(prog)
	tab := f.load()
	expect(t, tab, 0xffffffffc0e00008, "bpf_prog_0123456789abcdef_main", "bpf", 8)
	expect(t, tab, 0xffffffffc0e01008, "bpf_prog_5555555555555555_F", "bpf", 8)
	if got := prog.SymbolName(1); got != "bpf_prog_0123456789abcdef_main_func1" {
		t.Errorf("SymbolName(1) = %s", got)
	}
}

func TestModuleAges(t *testing.T) {
	f := newFixture(t, vmlinuxText+modAText+modBText, modALine+modBLine)
	tab := f.load()
	// mod_b is replaced by mod_c at the same address, and no unknown
	// address comes along: mod_b's names hold until MaxModuleAge.
	f.write(vmlinuxText+modAText+"ffffffffc0b00000 T c_func\t[mod_c]\n", modALine+"mod_c 8192 0 - Live 0xffffffffc0b00000\n")
	f.now = f.now.Add(DefaultMaxModuleAge - 1)
	expect(t, tab, 0xffffffffc0b00010, "b_func", "mod_b", 0x10)
	f.now = f.now.Add(1)
	expect(t, tab, 0xffffffffc0b00010, "c_func", "mod_c", 0x10)
	// The kernel image never ages.
	f.now = f.now.Add(time.Hour)
	expect(t, tab, 0xffffffff81000100, "schedule", "", 0)
	if s := tab.Stats(); s.ModuleRereads != 1 {
		t.Errorf("%+v", s)
	}
}
