package symbolizer

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/trace"
)

// startupFiles are the files of the whole-agent benchmark's workloads
// (bench/agentbench) whose symbols the agent loads in its first seconds,
// as far as the host has them: compilers, runtimes, their libraries,
// and Go binaries (the go command and vet; the test binary stands in for
// the agent).
func startupFiles(tb testing.TB) []string {
	tb.Helper()
	root := goroot(tb)
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	jdk := "/usr/lib/jvm/java-17-openjdk-amd64"
	lib := "/usr/lib/x86_64-linux-gnu/"
	var paths []string
	for _, p := range []string{
		"/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "/usr/bin/node", jdk + "/lib/server/libjvm.so",
		lib + "libpython3.11.so.1.0", lib + "libc.so.6", self,
		filepath.Join(root, "bin", "go"), filepath.Join(root, "pkg", "tool", "linux_amd64", "vet"),
		"/usr/bin/x86_64-linux-gnu-gcc-12", "/usr/bin/x86_64-linux-gnu-as", "/lib64/ld-linux-x86-64.so.2",
		lib + "libz.so.1", "/bin/cat", "/usr/bin/env", lib + "libcap.so.2", lib + "libnuma.so.1",
		"/bin/sleep", "/bin/true", jdk + "/bin/java", lib + "libdl.so.2", jdk + "/lib/libjimage.so",
		jdk + "/lib/libjli.so", lib + "libpthread.so.0", lib + "libsframe.so.0", "/usr/bin/python3.11",
		"/bin/bash", lib + "libgcc_s.so.1", jdk + "/lib/libjava.so", jdk + "/lib/libjsvml.so",
		lib + "libm.so.6", lib + "libstdc++.so.6", lib + "libtinfo.so.6",
	} {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			paths = append(paths, r)
		}
	}
	return paths
}

// BenchmarkLoadStartup loads, as a new Symbolizer with the agent's
// defaults does (line tables of files with up to 4 MiB of DWARF), the
// files the agent loads when the whole-agent benchmark starts: the symbol
// loads of its startup burst.
func BenchmarkLoadStartup(b *testing.B) {
	paths := startupFiles(b)
	b.ReportAllocs()
	cpu0 := testenv.ProcessCPU(b).Nanoseconds()
	for b.Loop() {
		s, err := New(Options{LineInfo: true, MaxDWARFBytes: 4 << 20, Demangle: DemangleSimple})
		if err != nil {
			b.Fatal(err)
		}
		for i, p := range paths {
			if _, err := s.File(trace.FileID{byte(i + 1)}, elffile.Source{Open: openPath(p), Path: p}); err != nil {
				b.Fatalf("%s: %v", p, err)
			}
		}
	}
	b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(len(paths)), "files")
}

// BenchmarkLoadStartupFile loads each of the startup files alone, as
// BenchmarkLoadStartup does, so that the cost of each shows.
func BenchmarkLoadStartupFile(b *testing.B) {
	for _, p := range startupFiles(b) {
		b.Run(filepath.Base(p), func(b *testing.B) {
			opts := Options{LineInfo: true, MaxDWARFBytes: 4 << 20, Demangle: DemangleSimple}
			src := elffile.Source{Open: openPath(p), Path: p}
			b.ReportAllocs()
			cpu0 := testenv.ProcessCPU(b).Nanoseconds()
			for b.Loop() {
				if _, err := Load(src, opts); err != nil {
					b.Fatalf("%s: %v", p, err)
				}
			}
			b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// TestScratchReuse checks that the buffers loads lend one another leave
// no trace in the tables (symbols and line tables): the startup files,
// loaded one after the other with one scratch (large files before and
// after small ones, so that a small load gets a large load's buffers),
// and through a Symbolizer, which lends its loads the scratches of loads
// before, give the tables each gives alone.
func TestScratchReuse(t *testing.T) {
	paths := startupFiles(t)
	if len(paths) < 4 {
		t.Skipf("only %d of the startup files installed", len(paths))
	}
	opts := Options{LineInfo: true, MaxDWARFBytes: 4 << 20, Demangle: DemangleSimple}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	sc := new(scratch)
	order := append(slices.Clone(paths), paths[0])
	for i, p := range order {
		src := elffile.Source{Open: openPath(p), Path: p}
		want, err := Load(src, opts)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		viaSymbolizer, err := s.File(trace.FileID{byte(i + 1)}, src)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		ld := &loader{opts: opts, ctr: new(counters), scratch: sc}
		if err := ld.opts.normalize(); err != nil {
			t.Fatal(err)
		}
		withScratch, _, err := ld.load(src)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for how, got := range map[string]*File{"through the Symbolizer": viaSymbolizer, "with the scratch": withScratch} {
			if !slices.Equal(got.syms, want.syms) {
				t.Fatalf("%s: %d symbols %s, %d alone, or they differ", p, len(got.syms), how, len(want.syms))
			}
			for _, e := range want.syms {
				if g, w := string(got.name(e.name)), string(want.name(e.name)); g != w {
					t.Fatalf("%s: %#x: %q %s, %q alone", p, e.addr, g, how, w)
				}
			}
			if !reflect.DeepEqual(got.lines, want.lines) {
				t.Fatalf("%s: line table of %d rows %s, %d alone, or they differ", p, rows(got.lines), how, rows(want.lines))
			}
		}
		if cap(sc.cands) == 0 && withScratch.Len() > 0 {
			t.Fatalf("%s: the scratch lent no candidates' buffer, or did not get it back", p)
		}
	}
}

// TestScratchDroppedByTrim: a Symbolizer keeps the buffers of its last
// load for the next, through a Trim that follows loads, and drops them at
// the Trim after one that saw no load, so they do not outlive a burst of
// loads by more than two trim intervals.
func TestScratchDroppedByTrim(t *testing.T) {
	paths := startupFiles(t)
	if len(paths) == 0 {
		t.Skip("none of the startup files installed")
	}
	s, err := New(Options{Demangle: DemangleSimple})
	if err != nil {
		t.Fatal(err)
	}
	spare := func() *scratch {
		s.spareMu.Lock()
		defer s.spareMu.Unlock()
		return s.spare
	}
	for i, p := range paths[:min(len(paths), 3)] {
		if _, err := s.File(trace.FileID{byte(i + 1)}, elffile.Source{Open: openPath(p), Path: p}); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	kept := spare()
	if kept == nil || kept.bytes() == 0 {
		t.Fatal("no buffers kept after the loads")
	}
	s.Trim()
	if spare() != kept {
		t.Fatal("the Trim right after the loads dropped their buffers")
	}
	s.Trim()
	if spare() != nil {
		t.Fatal("the buffers outlived a Trim interval without a load")
	}
	// A load after takes new buffers and keeps them.
	p := paths[0]
	if _, err := s.File(trace.FileID{0xff}, elffile.Source{Open: openPath(p), Path: p}); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if spare() == nil {
		t.Fatal("no buffers kept after a load that followed the Trims")
	}
}
