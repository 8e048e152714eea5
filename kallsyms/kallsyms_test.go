package kallsyms

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/testenv"
)

const fixture = `ffffffff81000000 T srso_alias_untrain_ret
ffffffff81000000 T _stext
ffffffff81000000 t _text_local
ffffffff81000100 t local_a
ffffffff81000100 T global_a
ffffffff81000200 D some_data
ffffffff81000300 T func_b
this line is malformed
zzzzzzzzzzzzzzzz T bad_address
ffffffff81000400 TT bad_type
ffffffff81000500

ffffffff81000600 W weak_func
ffffffff81000700 T _etext
ffffffffc0a01000 t foo	[mod_one]
ffffffffc0a01080 T bar	[mod_one]
ffffffffc0a00000 t first_in_mod	[mod_one]
ffffffffc0b00000 t baz	[mod_two]
ffffffffc0b00040 t qux	[mod_two	
ffffffffc0c00000 d data_only	[mod_three]
ffffffffc0d00000 t bpf_prog_1234_handler	[bpf]
`

func TestParseFixture(t *testing.T) {
	tab, err := Parse(strings.NewReader(fixture))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tab.Skipped(), 5; got != want {
		t.Errorf("Skipped() = %d, want %d", got, want)
	}
	// vmlinux: srso_alias_untrain_ret, global_a, func_b, _etext;
	// modules: first_in_mod, foo, bar, baz, bpf_prog_1234_handler.
	if got, want := tab.Len(), 9; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	tests := []struct {
		addr uint64
		want Symbol
		ok   bool
	}{
		{0xffffffff80ffffff, Symbol{}, false},
		{0xffffffff81000000, Symbol{Name: "srso_alias_untrain_ret"}, true},
		{0xffffffff810000ff, Symbol{Name: "srso_alias_untrain_ret", Offset: 0xff}, true},
		{0xffffffff81000100, Symbol{Name: "global_a"}, true},
		{0xffffffff81000250, Symbol{Name: "global_a", Offset: 0x150}, true},
		{0xffffffff81000301, Symbol{Name: "func_b", Offset: 1}, true},
		{0xffffffff81000650, Symbol{Name: "func_b", Offset: 0x350}, true},
		{0xffffffff81000710, Symbol{Name: "_etext", Offset: 0x10}, true},
		{0xffffffff81000700 + MaxSymbolSize, Symbol{}, false},
		{0xffffffffc0a00004, modSym("first_in_mod", 4, "mod_one", 0xffffffffc0a00000), true},
		{0xffffffffc0a01000, modSym("foo", 0, "mod_one", 0xffffffffc0a00000), true},
		{0xffffffffc0a01090, modSym("bar", 0x10, "mod_one", 0xffffffffc0a00000), true},
		{0xffffffffc0b00044, modSym("baz", 0x44, "mod_two", 0xffffffffc0b00000), true},
		{0xffffffffc0c00000, Symbol{}, false},
		{0xffffffffc0d00010, Symbol{Name: "bpf_prog_1234_handler", Offset: 0x10, Module: "bpf",
			ModuleKey: "bpf:bpf_prog_1234_handler", ModuleBase: 0xffffffffc0d00000}, true},
		{0xffffffffffffffff, Symbol{}, false},
		{0, Symbol{}, false},
	}
	for _, tt := range tests {
		got, ok := tab.Lookup(tt.addr)
		if ok != tt.ok || got != tt.want {
			t.Errorf("Lookup(%#x) = %+v, %v; want %+v, %v", tt.addr, got, ok, tt.want, tt.ok)
		}
	}
	var names []string
	for _, m := range tab.Modules() {
		names = append(names, m.Name)
	}
	if got, want := strings.Join(names, ","), "mod_one,mod_two"; got != want {
		t.Errorf("Modules() = %s, want %s", got, want)
	}
	if tab.BuildID() != "" {
		t.Errorf("BuildID() = %q for a parsed table, want empty", tab.BuildID())
	}
	if tab.Bytes() <= 0 {
		t.Errorf("Bytes() = %d", tab.Bytes())
	}
}

// modSym is a symbol in a module without a build ID.
func modSym(name string, off uint64, mod string, base uint64) Symbol {
	return Symbol{Name: name, Offset: off, Module: mod, ModuleKey: mod + "@" + strconv.FormatUint(base, 16), ModuleBase: base}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, text string
		hidden     bool
	}{
		{"empty", "", false},
		{"garbage", "hello world\nnot kallsyms at all, really\n", false},
		{"kptr_restrict", "0000000000000000 T _stext\n0000000000000000 t foo\t[mod]\n0000000000000000 D data\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := Parse(strings.NewReader(tt.text))
			if err == nil {
				t.Fatalf("Parse succeeded with %d symbols, want an error", tab.Len())
			}
			if got := errors.Is(err, ErrAddressesHidden); got != tt.hidden {
				t.Errorf("errors.Is(%v, ErrAddressesHidden) = %v, want %v", err, got, tt.hidden)
			}
			if tt.hidden && !strings.Contains(err.Error(), "kptr_restrict") {
				t.Errorf("error %q does not mention kptr_restrict", err)
			}
		})
	}
}

func TestParseNoTextSymbols(t *testing.T) {
	tab, err := Parse(strings.NewReader("ffffffff82000000 D data\nffffffff82000010 B bss\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 0 {
		t.Errorf("Len() = %d, want 0", tab.Len())
	}
	if _, ok := tab.Lookup(0xffffffff82000000); ok {
		t.Error("Lookup in an empty table succeeded")
	}
}

func TestParseLongLine(t *testing.T) {
	text := "ffffffff81000000 T a\n" + strings.Repeat("x", 200<<10) + "\nffffffff81000010 T b\n"
	tab, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 2 || tab.Skipped() != 1 {
		t.Errorf("Len() = %d, Skipped() = %d; want 2, 1", tab.Len(), tab.Skipped())
	}
	// The last line has no trailing newline.
	tab, err = Parse(strings.NewReader("ffffffff81000000 T a\nffffffff81000010 T b"))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := tab.Lookup(0xffffffff81000011); !ok || s.Name != "b" {
		t.Errorf("Lookup = %+v, %v; want b", s, ok)
	}
}

// ntGNUBuildID is the ELF note type of a GNU build ID (NT_GNU_BUILD_ID).
const ntGNUBuildID = 3

// notes builds an ELF note section holding the given notes.
func notes(entries ...note) []byte {
	var buf bytes.Buffer
	pad := func(n int) {
		for n%4 != 0 {
			buf.WriteByte(0)
			n++
		}
	}
	for _, e := range entries {
		var hdr [12]byte
		binary.NativeEndian.PutUint32(hdr[0:], uint32(len(e.name)))
		binary.NativeEndian.PutUint32(hdr[4:], uint32(len(e.desc)))
		binary.NativeEndian.PutUint32(hdr[8:], e.typ)
		buf.Write(hdr[:])
		buf.WriteString(e.name)
		pad(len(e.name))
		buf.Write(e.desc)
		pad(len(e.desc))
	}
	return buf.Bytes()
}

// note is one ELF note.
type note struct {
	name string
	typ  uint32
	desc []byte
}

func TestBuildIDFromNotes(t *testing.T) {
	id := []byte{0x48, 0xdc, 0x54, 0x0c, 0x8b, 0x76, 0x39, 0x38, 0x04, 0xca, 0x80, 0x88, 0xdb, 0xfa, 0x7d, 0x42, 0x91, 0x1a, 0x94, 0x44}
	const want = "48dc540c8b76393804ca8088dbfa7d42911a9444"
	data := notes(
		note{"Xen\x00", 18, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		note{"GNU\x00", 1, []byte{0, 0, 0, 0}}, // an ABI tag, not a build ID
		note{"Linux\x00", 3, []byte{9, 9}},     // type 3 under another name
		note{"GNU\x00", ntGNUBuildID, id},
	)
	if got := BuildIDFromNotes(data); got != want {
		t.Errorf("BuildIDFromNotes = %q, want %q", got, want)
	}
	for n := range data {
		if got := BuildIDFromNotes(data[:n]); got != "" {
			t.Errorf("BuildIDFromNotes(truncated to %d) = %q, want empty", n, got)
		}
	}
	if got := BuildIDFromNotes(notes(note{"GNU\x00", 1, []byte{1}})); got != "" {
		t.Errorf("BuildIDFromNotes without a build ID = %q", got)
	}

	// Load reads the same from a fixture tree.
	root := t.TempDir()
	procRoot := filepath.Join(root, "proc")
	sysRoot := filepath.Join(root, "sys")
	mustWrite(t, filepath.Join(procRoot, "kallsyms"), []byte(fixture))
	mustWrite(t, filepath.Join(sysRoot, "kernel", "notes"), data)
	mustWrite(t, filepath.Join(sysRoot, "module", "mod_one", "notes", ".note.gnu.build-id"),
		notes(note{"GNU\x00", ntGNUBuildID, []byte{0xab, 0xcd}}))
	tab, err := Load(Options{ProcRoot: procRoot, SysRoot: sysRoot, Programs: noPrograms{}, Source: SourceFile})
	if err != nil {
		t.Fatal(err)
	}
	if got := tab.BuildID(); got != want {
		t.Errorf("Load: BuildID() = %q, want %q", got, want)
	}
	if sym, ok := tab.Lookup(0xffffffffc0a01000); !ok || sym.ModuleBuildID != "abcd" || sym.ModuleKey != "mod_one/abcd" {
		t.Errorf("Lookup(foo) = %+v, %v; want mod_one's build ID abcd", sym, ok)
	}
	if sym, ok := tab.Lookup(0xffffffffc0d00000); !ok || sym.ModuleBuildID != "" {
		t.Errorf("Lookup(bpf_prog_1234_handler) = %+v, %v; want no build ID", sym, ok)
	}

	// A missing notes file leaves the build ID empty.
	tab, err = Load(Options{ProcRoot: procRoot, SysRoot: filepath.Join(root, "nosys"), Programs: noPrograms{}, Source: SourceFile})
	if err != nil {
		t.Fatal(err)
	}
	if tab.BuildID() != "" {
		t.Errorf("BuildID() = %q without notes", tab.BuildID())
	}
	if _, err := Load(Options{ProcRoot: filepath.Join(root, "noproc"), Source: SourceFile}); err == nil {
		t.Error("Load without kallsyms succeeded")
	}
}

func mustWrite(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// loadReal loads the running kernel's table from /proc/kallsyms
// (SourceFile), skipping the test when the kernel hides its addresses from
// this process.
func loadReal(tb testing.TB) *Table {
	tb.Helper()
	tab, err := Load(Options{Source: SourceFile})
	if errors.Is(err, ErrAddressesHidden) || errors.Is(err, os.ErrNotExist) {
		tb.Skipf("real kallsyms unusable: %v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return tab
}

// findSymbol scans /proc/kallsyms for a text symbol's address.
func findSymbol(tb testing.TB, name string) uint64 {
	tb.Helper()
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && fields[2] == name && (fields[1] == "T" || fields[1] == "t") {
			addr, err := strconv.ParseUint(fields[0], 16, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return addr
		}
	}
	tb.Fatalf("%s not in /proc/kallsyms", name)
	return 0
}

func TestLoadReal(t *testing.T) {
	tab := loadReal(t)
	t.Logf("%d symbols, %d skipped lines, %d bytes (%.1f per symbol), build ID %s, modules %v",
		tab.Len(), tab.Skipped(), tab.Bytes(), float64(tab.Bytes())/float64(tab.Len()), tab.BuildID(), tab.Modules())
	if tab.Skipped() != 0 {
		t.Errorf("Skipped() = %d on the real kallsyms", tab.Skipped())
	}
	for _, name := range []string{"schedule", "do_sys_open", "_stext"} {
		addr := findSymbol(t, name)
		sym, ok := tab.Lookup(addr + 1)
		if !ok {
			t.Errorf("Lookup(%s+1 = %#x) failed", name, addr+1)
			continue
		}
		if name == "_stext" {
			// Aliases share _stext's address; any of them may be kept.
			if sym.Offset != 1 {
				t.Errorf("Lookup(_stext+1) = %+v", sym)
			}
			continue
		}
		if sym != (Symbol{Name: name, Offset: 1}) {
			t.Errorf("Lookup(%s+1) = %+v", name, sym)
		}
	}
	id := tab.BuildID()
	if _, err := os.Stat("/sys/kernel/notes"); err == nil {
		if id == "" || strings.Trim(id, "0123456789abcdef") != "" {
			t.Errorf("BuildID() = %q, want lower-case hex", id)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(fixture))
	f.Add([]byte("0000000000000000 T _stext\n"))
	f.Add([]byte("ffffffff81000000 T a\nffffffff81000000 t b\t[m]\n"))
	f.Add([]byte("ffffffffc0a01000 t foo\t[]\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		// Every symbol must be found at its own address.
		for _, p := range []*symtab{tab.vmlinux, tab.dyn.Load().mods.syms} {
			for i, a := range p.allAddrs() {
				if i > 0 && p.addr(i-1) >= a {
					t.Fatalf("addresses not strictly increasing at %d", i)
				}
				sym, ok := tab.Lookup(a)
				if !ok || sym.Offset != 0 {
					t.Fatalf("Lookup(%#x) = %+v, %v", a, sym, ok)
				}
				if sym.Name == "" {
					t.Fatalf("empty name at %#x", a)
				}
			}
		}
		tab.Lookup(0)
		tab.Lookup(^uint64(0))
		_ = tab.Bytes()
	})
}

func BenchmarkLookup(b *testing.B) {
	tab := loadReal(b)
	// Random addresses a little past random symbols of the kernel image.
	syms := tab.vmlinux.allAddrs()
	rng := rand.New(rand.NewPCG(1, 2))
	addrs := make([]uint64, 1<<16)
	for i := range addrs {
		addrs[i] = syms[rng.IntN(len(syms))] + rng.Uint64N(64)
	}
	b.ReportAllocs()
	found := 0
	i := 0
	for b.Loop() {
		if _, ok := tab.Lookup(addrs[i&(len(addrs)-1)]); ok {
			found++
		}
		i++
	}
	b.ReportMetric(float64(found)/float64(i), "found/op")
	b.ReportMetric(float64(tab.Bytes())/float64(tab.Len()), "bytes/symbol")
}

// BenchmarkLookupHot looks up addresses in 500 random functions of the
// kernel image, as the tracer does for the kernel frames of every trace:
// after the first round their names come from the cache of recent names.
func BenchmarkLookupHot(b *testing.B) {
	tab := loadReal(b)
	syms := tab.vmlinux.allAddrs()
	rng := rand.New(rand.NewPCG(3, 4))
	addrs := make([]uint64, 500)
	for i := range addrs {
		addrs[i] = syms[rng.IntN(len(syms))] + rng.Uint64N(64)
	}
	benchLookups(b, tab, addrs)
}

// benchLookups looks up addrs in tab in turn, b.N lookups in all, each
// of which must name its address.
func benchLookups(b *testing.B, tab *Table, addrs []uint64) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := tab.Lookup(addrs[i%len(addrs)]); !ok {
			b.Fatalf("Lookup(%#x) failed", addrs[i%len(addrs)])
		}
		i++
	}
}

// BenchmarkLoad loads the host's kernel symbols from each source: file
// reads /proc/kallsyms, kernel loads the kernel namer (and names nothing
// yet). Besides time and allocations per load, it reports the CPU time per
// load (the kernel's formatting of the file, or its loading of the
// program, included), the heap the loaded table keeps alive (heldB,
// measured by the runtime) and its symbols.
func BenchmarkLoad(b *testing.B) {
	loadReal(b)
	for _, src := range []Source{SourceFile, SourceKernel} {
		b.Run(src.String(), func(b *testing.B) {
			if src == SourceKernel {
				testenv.RequireBPF(b)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			tab, err := Load(Options{Source: src})
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportAllocs()
			cpu0 := testenv.ProcessCPU(b).Nanoseconds()
			for b.Loop() {
				t, err := Load(Options{Source: src})
				if err != nil {
					b.Fatal(err)
				}
				t.Close()
			}
			b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(after.HeapAlloc)-float64(before.HeapAlloc), "heldB")
			b.ReportMetric(float64(tab.Len()), "symbols")
			runtime.KeepAlive(tab)
			tab.Close()
		})
	}
}

// syntheticModules returns a kallsyms text and /proc/modules list of n
// modules with perMod symbols each, 0x100 bytes apart.
func syntheticModules(n, perMod int) (kallsyms, modules string) {
	var ks, ms strings.Builder
	ks.WriteString(vmlinuxText)
	for m := range n {
		base := uint64(0xffffffffc0000000) + uint64(m)<<20
		name := "mod_" + strconv.Itoa(m)
		fmt.Fprintf(&ms, "%s %d 0 - Live 0x%x\n", name, perMod*0x100, base)
		for s := range perMod {
			fmt.Fprintf(&ks, "%x t %s_function_%d\t[%s]\n", base+uint64(s)*0x100, name, s, name)
		}
	}
	return ks.String(), ms.String()
}

func BenchmarkLookupModule(b *testing.B) {
	ks, ms := syntheticModules(100, 500)
	root := b.TempDir()
	mustWrite(b, filepath.Join(root, "proc", "kallsyms"), []byte(ks))
	mustWrite(b, filepath.Join(root, "proc", "modules"), []byte(ms))
	tab, err := Load(Options{ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys"), Programs: noPrograms{}, Source: SourceFile})
	if err != nil {
		b.Fatal(err)
	}
	syms := tab.dyn.Load().mods.syms.allAddrs()
	rng := rand.New(rand.NewPCG(1, 2))
	addrs := make([]uint64, 1<<16)
	for i := range addrs {
		addrs[i] = syms[rng.IntN(len(syms))] + rng.Uint64N(0x100)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := tab.Lookup(addrs[i&(len(addrs)-1)]); !ok {
			b.Fatalf("Lookup(%#x) failed", addrs[i&(len(addrs)-1)])
		}
		i++
	}
	d := tab.dyn.Load()
	b.ReportMetric(float64(d.mods.bytes())/float64(d.mods.syms.len()), "bytes/symbol")
}

func BenchmarkLookupUnknown(b *testing.B) {
	tab := loadReal(b)
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		// Above every module and BPF program: never named.
		if sym, ok := tab.Lookup(0xfffffffff0000000 + rng.Uint64N(1<<24)); ok {
			b.Fatalf("unknown address named %+v", sym)
		}
	}
	s := tab.Stats()
	b.ReportMetric(float64(s.ModuleRereads), "rereads")
	b.ReportMetric(float64(s.KallsymsRereads), "kallsyms-rereads")
}
