package kallsyms

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/support/ebpf/ksymname"
)

// loadKernel loads a Table of SourceKernel (root only), closed when the
// test ends.
func loadKernel(tb testing.TB, opts Options) *Table {
	tb.Helper()
	testenv.RequireBPF(tb)
	opts.Source = SourceKernel
	tab, err := Load(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tab.Close() })
	return tab
}

// kallsymsLine is one line of /proc/kallsyms.
type kallsymsLine struct {
	addr   uint64
	typ    string
	name   string
	module string
}

// readKallsymsLines reads the host's /proc/kallsyms, sorted by address.
func readKallsymsLines(tb testing.TB) []kallsymsLine {
	tb.Helper()
	text, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		tb.Fatal(err)
	}
	var lines []kallsymsLine
	for line := range strings.Lines(string(text)) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil || addr == 0 {
			continue
		}
		l := kallsymsLine{addr: addr, typ: f[1], name: f[2]}
		if len(f) > 3 {
			l.module = strings.Trim(f[3], "[]")
		}
		lines = append(lines, l)
	}
	slices.SortStableFunc(lines, func(a, b kallsymsLine) int { return cmp.Compare(a.addr, b.addr) })
	if len(lines) == 0 {
		tb.Skip("/proc/kallsyms lists no addresses")
	}
	return lines
}

// TestKernelNamerAgrees checks the kernel namer against /proc/kallsyms as
// the file source reads it: for a few thousand text symbols of the kernel
// image, every module symbol and every BPF symbol, addresses at and
// inside each function (up to the next symbol of any kind) name the same
// function start, the same name (or an alias at the same address), module,
// module key, base and build ID. Names the kernel gives again come from
// the cache, without running the program.
func TestKernelNamerAgrees(t *testing.T) {
	kern := loadKernel(t, Options{MaxModuleAge: -1})
	prog := loadTestProgram(t) // a BPF program surely loaded throughout
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	ours := "bpf_prog_" + info.Tag + "_stackline_ksym"
	file := loadReal(t)
	lines := readKallsymsLines(t)
	aliases := map[uint64][]string{}
	for _, l := range lines {
		if l.typ == "t" || l.typ == "T" {
			aliases[l.addr] = append(aliases[l.addr], l.name)
		}
	}

	type probe struct {
		addr, start uint64
		module      string
		name        string
	}
	var probes []probe
	vmlinux := 0
	for i, l := range lines {
		if l.typ != "t" && l.typ != "T" {
			continue
		}
		if l.module == "" {
			vmlinux++
			if vmlinux%40 != 0 {
				continue
			}
		}
		// The function ends at the next symbol of any kind.
		next := l.addr + MaxSymbolSize
		for _, m := range lines[i+1:] {
			if m.addr > l.addr {
				next = min(next, m.addr)
				break
			}
		}
		ks := []uint64{0, 1, (next - l.addr) / 2, next - l.addr - 1}
		if l.module == "bpf" {
			// BPF programs are packed with gaps between them: the
			// kernel knows where each ends, /proc/kallsyms does not.
			ks = ks[:2]
		}
		for _, k := range ks {
			probes = append(probes, probe{addr: l.addr + k, start: l.addr, module: l.module, name: l.name})
		}
	}
	if len(probes) < 4000 {
		t.Fatalf("only %d addresses to check", len(probes))
	}

	// BPF programs other tests load and unload may be gone since
	// /proc/kallsyms was read: those are counted, not failed, unless
	// they are most of them.
	checked, bpfChecked, oursSeen := 0, 0, false
	var bpfGone []probe
	for _, p := range probes {
		ks, kok := kern.Lookup(p.addr)
		fs, fok := file.Lookup(p.addr)
		if p.module == "bpf" {
			bpfChecked++
			if !kok || !fok || ks.Name != p.name || p.addr-ks.Offset != p.start || p.addr-fs.Offset != p.start {
				// Unloaded, or replaced by another load of the
				// same program, since /proc/kallsyms was read?
				bpfGone = append(bpfGone, p)
				continue
			}
			oursSeen = oursSeen || ks.Name == ours
		}
		if !kok || !fok {
			t.Fatalf("%#x (%s+%d [%s]): kernel %+v %v, file %+v %v", p.addr, p.name, p.addr-p.start, p.module, ks, kok, fs, fok)
		}
		if p.addr-ks.Offset != p.start || p.addr-fs.Offset != p.start {
			t.Fatalf("%#x (%s+%d): kernel %+v, file %+v: functions start elsewhere", p.addr, p.name, p.addr-p.start, ks, fs)
		}
		if ks.Name != fs.Name && (!slices.Contains(aliases[p.start], ks.Name) || !slices.Contains(aliases[p.start], fs.Name)) {
			t.Fatalf("%#x: kernel names %q, file %q, listed %q", p.addr, ks.Name, fs.Name, aliases[p.start])
		}
		if ks.Name == fs.Name && ks != fs {
			t.Fatalf("%#x: kernel %+v, file %+v", p.addr, ks, fs)
		}
		if ks.Module != fs.Module || ks.ModuleBase != fs.ModuleBase || ks.ModuleBuildID != fs.ModuleBuildID {
			t.Fatalf("%#x: kernel %+v, file %+v", p.addr, ks, fs)
		}
		checked++
	}
	if !oursSeen {
		t.Errorf("the test's BPF program %s was not named", ours)
	}
	// A BPF function still listed where it was must be named so by a
	// table that did not name it before.
	if len(bpfGone) > 0 {
		listed := map[string]uint64{}
		for _, l := range readKallsymsLines(t) {
			if l.module == "bpf" {
				listed[l.name] = l.addr
			}
		}
		fresh := loadKernel(t, Options{})
		for _, p := range bpfGone {
			if a, ok := listed[p.name]; !ok || a != p.start {
				continue
			}
			if ks, ok := fresh.Lookup(p.addr); !ok || ks.Name != p.name || p.addr-ks.Offset != p.start {
				t.Errorf("%#x: %s+%d still listed, named %+v, %v", p.addr, p.name, p.addr-p.start, ks, ok)
			}
		}
	}
	s := kern.Stats()
	t.Logf("%d addresses agree (%d BPF, %d BPF gone or moved); %d runs of the namer, %d functions named, %d heap bytes, %d evicted, %d bytes of eBPF map",
		checked, bpfChecked-len(bpfGone), len(bpfGone), s.NamerRuns, s.Named, kern.Bytes(), s.NamedEvictions, s.MapBytes)
	if kern.Source() != SourceKernel || s.NamerRuns == 0 {
		t.Fatalf("source %v, %d runs", kern.Source(), s.NamerRuns)
	}
	// The batch map (32 addresses and their names) is counted.
	if s.MapBytes < uint64(unsafe.Sizeof(ksymname.KsymnameKsymBatch{})) {
		t.Errorf("the namer's map counted as %d bytes", s.MapBytes)
	}

	// Functions named before are named from the cache.
	kern2 := loadKernel(t, Options{MaxModuleAge: -1})
	for _, p := range probes[:400] {
		kern2.Lookup(p.addr)
	}
	runs := kern2.Stats().NamerRuns
	for _, p := range probes[:400] {
		kern2.Lookup(p.addr)
	}
	if n := kern2.Stats().NamerRuns; n != runs {
		t.Errorf("%d runs for functions named before", n-runs)
	}
}

// TestKernelNamerGaps checks that addresses the file source leaves
// unnamed (user space, past the kernel image's code, the top of the
// address space, the module area's gaps) stay unnamed, and that an
// unnamed address is not asked again within MinRereadInterval.
func TestKernelNamerGaps(t *testing.T) {
	kern := loadKernel(t, Options{})
	file := loadReal(t)
	n := kern.namer
	cands := []uint64{0x1000, 0x7fff00000000, n.imageEnd + 16<<20, 0xffffffffff600000, ^uint64(0)}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 64 {
		cands = append(cands, 0xfffffffff0000000+rng.Uint64N(1<<24))
	}
	gaps := 0
	for _, a := range cands {
		if _, ok := file.Lookup(a); ok {
			continue
		}
		gaps++
		if sym, ok := kern.Lookup(a); ok {
			t.Errorf("%#x: named %+v, the file source names nothing", a, sym)
		}
	}
	if gaps < 10 {
		t.Fatalf("only %d of %d addresses unnamed by the file source", gaps, len(cands))
	}
	runs := kern.Stats().NamerRuns
	for _, a := range cands[:3] {
		kern.Lookup(a)
	}
	if s := kern.Stats(); s.NamerRuns != runs || s.Unknown < uint64(gaps) {
		t.Errorf("asked again within the interval: %+v (%d runs before)", s, runs)
	}
}

// TestKernelNamerEvicts names more functions than MaxNamedBytes holds:
// the cache stays within its bound, counts its evictions and still names
// every function.
func TestKernelNamerEvicts(t *testing.T) {
	const bound = 16 << 10
	kern := loadKernel(t, Options{MaxNamedBytes: bound})
	lines := readKallsymsLines(t)
	named := 0
	for _, l := range lines {
		if l.module != "" || (l.typ != "t" && l.typ != "T") {
			continue
		}
		sym, ok := kern.Lookup(l.addr)
		if !ok || sym.Offset != 0 {
			t.Fatalf("%s at %#x: %+v, %v", l.name, l.addr, sym, ok)
		}
		if named++; named == 2000 {
			break
		}
	}
	s := kern.Stats()
	if kern.named.bytes > bound || s.NamedEvictions == 0 || s.Named == 0 {
		t.Errorf("%d bytes named (bound %d), %+v", kern.named.bytes, bound, s)
	}
}

// TestSourceFile checks that Options.Source chooses the file source, and
// that SourceAuto chooses the kernel namer where it works (root).
func TestSourceFile(t *testing.T) {
	tab := loadReal(t)
	if tab.Source() != SourceFile || tab.Fallback() != nil || tab.Stats().NamerRuns != 0 || tab.Len() < 1000 {
		t.Errorf("file source: %v, fallback %v, %+v", tab.Source(), tab.Fallback(), tab.Stats())
	}
	testenv.RequireBPF(t)
	auto, err := Load(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer auto.Close()
	if auto.Source() != SourceKernel || auto.Fallback() != nil {
		t.Errorf("auto: %v, fallback %v", auto.Source(), auto.Fallback())
	}
}

// fallbackChildEnv marks the copy of the test binary that
// TestSourceAutoFallback runs without privileges; its value is the
// fixture's proc root.
const fallbackChildEnv = "STACKLINE_KALLSYMS_FALLBACK_CHILD"

// TestSourceAutoFallback runs Load with SourceAuto in a copy of the test
// binary running as nobody, where the kernel namer cannot load (no
// CAP_BPF): it must fall back to the file source (a fixture tree here),
// say why, and name from the file.
func TestSourceAutoFallback(t *testing.T) {
	if root := os.Getenv(fallbackChildEnv); root != "" {
		tab, err := Load(Options{ProcRoot: root, SysRoot: root})
		if err != nil {
			fmt.Println("load:", err)
			os.Exit(1)
		}
		sym, ok := tab.Lookup(0xffffffff81000010)
		fmt.Printf("source=%v fallback=%v lookup=%s+%d %v\n", tab.Source(), tab.Fallback() != nil, sym.Name, sym.Offset, ok)
		os.Exit(0)
	}
	testenv.RequireBPF(t)
	dir, err := os.MkdirTemp("", "kallsyms-fallback")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	mustWrite(t, filepath.Join(dir, "kallsyms"), []byte("ffffffff81000000 T _stext\nffffffff81000040 T next\n"))
	for _, p := range []string{dir, filepath.Join(dir, "kallsyms")} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary's directory is not open to nobody: run a copy.
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "kallsyms.test")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestSourceAutoFallback$")
	cmd.Env = append(os.Environ(), fallbackChildEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if want := "source=file fallback=true lookup=_stext+16 true"; !bytes.Contains(out, []byte(want)) {
		t.Fatalf("child said %q, want %q", out, want)
	}
}

func TestParseSymbol(t *testing.T) {
	for _, c := range []struct {
		in   string
		want formatted
		ok   bool
	}{
		{"vfs_read+0x0/0x2a0", formatted{name: []byte("vfs_read"), size: 0x2a0}, true},
		{"vfs_read+0/0x2a0", formatted{name: []byte("vfs_read"), size: 0x2a0}, true},
		{"vfs_read+0x28/0x2a0", formatted{name: []byte("vfs_read"), offset: 0x28, size: 0x2a0}, true},
		{"nft_do_chain+0x1c/0x5b0 [nf_tables]", formatted{name: []byte("nft_do_chain"), offset: 0x1c, size: 0x5b0, module: []byte("nf_tables")}, true},
		{"f+0x1/0x10 [m 0123456789abcdef0123456789abcdef01234567]", formatted{name: []byte("f"), offset: 1, size: 0x10, module: []byte("m")}, true},
		{"f.cold+0x1/0x10 [m] (file.c:12)", formatted{name: []byte("f.cold"), offset: 1, size: 0x10, module: []byte("m")}, true},
		{"bpf_prog_6deef7357e7b4530_handler+0x4/0x80", formatted{name: []byte("bpf_prog_6deef7357e7b4530_handler"), offset: 4, size: 0x80}, true},
		{"0xffffffffc0001234", formatted{}, false},
		{"", formatted{}, false},
		{"+0x1/0x10", formatted{}, false},
		{"f+0x10/0x10", formatted{}, false},
		{"f+0x1/0x0", formatted{name: []byte("f"), offset: 1}, true},
		{"f+0x0/0x0", formatted{name: []byte("f")}, true},
		{"f+0x1/", formatted{}, false},
		{"f+1/0x10", formatted{}, false},
		{"f+0x1/0x10 m", formatted{}, false},
		{"f+0x1/0x10 [m", formatted{}, false},
		{"f+0x1/0x10 [m/x]", formatted{}, false},
		{"f+0x1/0x10 []", formatted{}, false},
		{"f\x01+0x1/0x10", formatted{}, false},
		{"f+0x11111111111111111/0x10", formatted{}, false},
	} {
		got, ok := parseSymbol([]byte(c.in))
		if ok != c.ok || !bytes.Equal(got.name, c.want.name) || got.offset != c.want.offset || got.size != c.want.size ||
			!bytes.Equal(got.module, c.want.module) || (got.module == nil) != (c.want.module == nil) {
			t.Errorf("parseSymbol(%q) = %q %#x %#x %q %v, want %q %#x %#x %q %v", c.in,
				got.name, got.offset, got.size, got.module, ok, c.want.name, c.want.offset, c.want.size, c.want.module, c.ok)
		}
	}
}

// FuzzParseSymbol checks that whatever parseSymbol accepts is a
// well-formed symbol that prints back to what it was parsed from.
func FuzzParseSymbol(f *testing.F) {
	f.Add([]byte("vfs_read+0x28/0x2a0"))
	f.Add([]byte("nft_do_chain+0x1c/0x5b0 [nf_tables]"))
	f.Add([]byte("f+0x1/0x10 [m 0123456789abcdef] (a.c:1)"))
	f.Add([]byte("0xffffffffc0001234"))
	f.Add([]byte("a+b+0x1/0x2/0x3"))
	f.Add([]byte("f+0/0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, ok := parseSymbol(data)
		if !ok {
			return
		}
		if len(p.name) == 0 || bytes.ContainsAny(p.name, " \t\n") {
			t.Fatalf("%q: name %q", data, p.name)
		}
		if p.size != 0 && p.offset >= p.size {
			t.Fatalf("%q: offset %#x outside size %#x", data, p.offset, p.size)
		}
		if p.module != nil && !validModuleName(string(p.module)) {
			t.Fatalf("%q: module %q", data, p.module)
		}
		again, ok := parseSymbol(fmt.Appendf(nil, "%s+%#x/%#x", p.name, p.offset, p.size))
		if !ok || !bytes.Equal(again.name, p.name) || again.offset != p.offset || again.size != p.size {
			t.Fatalf("%q: printed back, parsed as %+v, %v", data, again, ok)
		}
	})
}

// BenchmarkNamerRun measures one run of the kernel namer for a batch of
// 1, 8 and 32 addresses (cpu-ns/op includes the kernel's time): the cost
// a missed lookup pays, and what batching would save.
func BenchmarkNamerRun(b *testing.B) {
	tab := loadKernel(b, Options{})
	a := findSymbol(b, "vfs_read")
	for _, n := range []int{1, 8, 32} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for i := range n {
				tab.namer.b.Addrs[i] = a + uint64(i)
			}
			cpu0 := testenv.ProcessCPU(b).Nanoseconds()
			for b.Loop() {
				if err := tab.namer.run(n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkKernelLookup measures Lookup of a Table of SourceKernel: hot,
// addresses in 500 functions named before (answered by the cache), and
// miss, each lookup in a function not named yet (one run of the namer).
func BenchmarkKernelLookup(b *testing.B) {
	tab := loadKernel(b, Options{MaxModuleAge: -1})
	var starts []uint64
	for _, l := range readKallsymsLines(b) {
		// Only functions the kernel names: markers such as _etext
		// are text symbols past the image's code.
		if l.module == "" && (l.typ == "t" || l.typ == "T") {
			if _, ok := tab.Lookup(l.addr + 1); ok {
				starts = append(starts, l.addr)
			}
		}
	}
	if len(starts) == 0 {
		b.Fatal("the kernel named no text symbol of /proc/kallsyms")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	b.Run("hot", func(b *testing.B) {
		addrs := make([]uint64, 500)
		for i := range addrs {
			addrs[i] = starts[rng.IntN(len(starts))] + 1
		}
		benchLookups(b, tab, addrs)
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		cpu0 := testenv.ProcessCPU(b).Nanoseconds()
		i := 0
		for b.Loop() {
			if i%len(starts) == 0 {
				tab.kmu.Lock()
				tab.named = namedCache{maxBytes: DefaultNamedBytes}
				tab.kmu.Unlock()
			}
			if _, ok := tab.Lookup(starts[i%len(starts)] + 1); !ok {
				b.Fatalf("Lookup(%#x) failed", starts[i%len(starts)]+1)
			}
			i++
		}
		b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
	})
}

// TestKernelNamerModules checks how a Table of SourceKernel places the
// functions the kernel names in modules (the kernel's output is given
// here, as this host may have no modules; the module list and build IDs
// come from a fixture tree): in the module load /proc/modules lists, with
// its build ID; a module the list does not hold makes it re-read (rate
// limited); an aged list is re-read, so a module loaded elsewhere is
// found at its new base.
func TestKernelNamerModules(t *testing.T) {
	f := newFixture(t, "", modALine+modBLine)
	f.setBuildID("mod_a", []byte{0xab, 0xcd})
	tab := loadKernel(t, Options{ProcRoot: f.proc, SysRoot: f.sys, MinRereadInterval: time.Second,
		MaxModuleAge: 10 * time.Second, Now: func() time.Time { return f.now }})
	if mods := tab.Modules(); len(mods) != 2 || mods[0].Name != "mod_a" || mods[0].BuildID != "abcd" || mods[0].Key != "mod_a/abcd" {
		t.Fatalf("Modules() = %+v", mods)
	}
	name := func(addr uint64, out string) Symbol {
		t.Helper()
		fn, ok := tab.namedFunc(addr, []byte(out), f.now.UnixNano())
		if !ok {
			t.Fatalf("%q at %#x not named", out, addr)
		}
		return fn.symbol(addr)
	}
	want := Symbol{Name: "a_func", Offset: 0x10, Module: "mod_a", ModuleBuildID: "abcd", ModuleKey: "mod_a/abcd", ModuleBase: 0xffffffffc0a00000}
	if got := name(0xffffffffc0a00110, "a_func+0x10/0x80 [mod_a]"); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := name(0xffffffffc0b00010, "b_func+0x10/0x80 [mod_b]"); got.ModuleKey != "mod_b@ffffffffc0b00000" || got.ModuleBase != 0xffffffffc0b00000 {
		t.Errorf("mod_b: %+v", got)
	}
	if s := tab.Stats(); s.ModuleRereads != 0 {
		t.Errorf("%d re-reads for listed modules", s.ModuleRereads)
	}

	// mod_c is not listed yet: its function is a unit of its own, and
	// the list is re-read once within the interval.
	c1 := name(0xffffffffc0d00020, "c_func+0x20/0x80 [mod_c]")
	name(0xffffffffc0d00030, "c_func+0x30/0x80 [mod_c]")
	if c1.Module != "mod_c" || c1.ModuleKey != "mod_c@ffffffffc0d00000" || c1.ModuleBase != 0xffffffffc0d00000 || tab.Stats().ModuleRereads != 1 {
		t.Errorf("unlisted mod_c: %+v, %+v", c1, tab.Stats())
	}
	f.write("", modALine+modBLine+"mod_c 8192 0 - Live 0xffffffffc0cff000\n")
	f.now = f.now.Add(time.Second)
	if c := name(0xffffffffc0d00020, "c_func+0x20/0x80 [mod_c]"); c.ModuleKey != "mod_c@ffffffffc0cff000" || c.ModuleBase != 0xffffffffc0cff000 {
		t.Errorf("listed mod_c: %+v", c)
	}

	// mod_b reloaded elsewhere: found at its new base once the list aged.
	f.write("", modALine+modB2Line)
	f.now = f.now.Add(11 * time.Second)
	if b := name(0xffffffffc0c00010, "b_func+0x10/0x80 [mod_b]"); b.ModuleBase != 0xffffffffc0c00000 {
		t.Errorf("reloaded mod_b: %+v", b)
	}
	if s := tab.Stats(); s.ModuleRereads != 3 || s.Modules != 2 {
		t.Errorf("%+v", s)
	}
}

// TestKernelNamerAges checks that a Table of SourceKernel asks again for
// a BPF function named longer than MaxModuleAge ago, and not before.
func TestKernelNamerAges(t *testing.T) {
	prog := loadTestProgram(t)
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	addrs, ok := info.JitedKsymAddrs()
	if !ok || len(addrs) == 0 {
		testenv.Missing(t, "the program is not JIT'ed, or its address is hidden")
	}
	start := uint64(addrs[0])
	now := time.Unix(1_700_000_000, 0)
	tab := loadKernel(t, Options{MaxModuleAge: 10 * time.Second, Now: func() time.Time { return now }})
	want := "bpf_prog_" + info.Tag + "_stackline_ksym"
	for i, step := range []time.Duration{0, 5 * time.Second, 6 * time.Second} {
		now = now.Add(step)
		sym, ok := tab.Lookup(start + 1)
		if !ok || sym.Name != want || sym.Module != "bpf" || sym.ModuleKey != "bpf:"+want || sym.ModuleBase != start || sym.Offset != 1 {
			t.Fatalf("Lookup %d: %+v, %v", i, sym, ok)
		}
		if runs, want := tab.Stats().NamerRuns, []uint64{1, 1, 2}[i]; runs != want {
			t.Errorf("after lookup %d: %d runs, want %d", i, runs, want)
		}
	}
	if s := tab.Stats(); s.BPFPrograms != 1 {
		t.Errorf("%+v", s)
	}
}
