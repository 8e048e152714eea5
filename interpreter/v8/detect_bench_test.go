package v8

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
)

// BenchmarkDetect measures Detect on each installed node (V8 found) and
// on other large files the tracer offers it (no V8: Detect looks at every
// file a process maps). The file is opened and parsed outside the timed
// part, as the tracer parses it once for every runtime.
func BenchmarkDetect(b *testing.B) {
	type target struct{ name, path string }
	var targets []target
	for _, n := range testenv.Nodes(b) {
		targets = append(targets, target{n.Name, n.V8File})
	}
	for _, j := range testenv.JDKs(b) {
		targets = append(targets, target{"libjvm" + filepath.Base(j.Home), j.LibJVM()})
	}
	targets = append(targets, target{"libpython", testenv.SystemLibpython(b)})
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"} {
		targets = append(targets, target{filepath.Base(p), p})
	}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			path, err := filepath.EvalSymlinks(tg.path)
			if err != nil {
				b.Skip(err)
			}
			f, err := elffile.Open(elffile.Source{Open: func() (*os.File, error) { return os.Open(path) }, Path: path})
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			file := interpreter.File{Path: path, ELF: func() (*elffile.File, error) { return f, nil }}
			b.ReportAllocs()
			cpu0 := cpuNanos(b)
			for b.Loop() {
				if _, err := Detect(file); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuNanos(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuNanos returns the CPU time the process has used: on a loaded
// machine a steadier measure of the work than the elapsed time.
func cpuNanos(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
