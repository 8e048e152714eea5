package interpreter_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/hotspot"
	"github.com/stackline-dev/stackline/interpreter/python"
	"github.com/stackline-dev/stackline/interpreter/v8"
)

// BenchmarkDetect measures each runtime's Detect on the files it finds
// (node for V8, libjvm.so for HotSpot, libpython for CPython) and V8's
// on other large files, which it looks at too: V8 is recognised by its
// symbols whatever the file's name, so its Detect runs on every file a
// process maps. The file is opened and parsed outside the timed part, as
// the tracer parses a file once for every runtime.
func BenchmarkDetect(b *testing.B) {
	type target struct {
		name, path string
		rt         interpreter.Runtime
	}
	var targets []target
	for _, n := range testenv.Nodes(b) {
		targets = append(targets, target{"v8/" + n.Name, n.V8File, v8.Runtime{}})
	}
	for _, j := range testenv.JDKs(b) {
		targets = append(targets,
			target{"hotspot/" + filepath.Base(j.Home), j.LibJVM(), hotspot.Runtime{}},
			target{"v8/" + filepath.Base(j.Home), j.LibJVM(), v8.Runtime{}})
	}
	libpython := testenv.SystemLibpython(b)
	targets = append(targets,
		target{"cpython/libpython", libpython, python.Runtime{}},
		target{"v8/libpython", libpython, v8.Runtime{}},
		target{"v8/libstdc++", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", v8.Runtime{}})
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
			cpu0 := testenv.ProcessCPU(b).Nanoseconds()
			for b.Loop() {
				if _, err := tg.rt.Detect(file); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(testenv.ProcessCPU(b).Nanoseconds()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
