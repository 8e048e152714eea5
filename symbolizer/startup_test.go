package symbolizer

import (
	"os"
	"path/filepath"
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
