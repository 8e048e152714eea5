package elffile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// BenchmarkFirstSight measures what the tracer does with a file it sees
// for the first time: identify it (hash, build IDs), look for its debug
// file, build its unwind table, and load its symbols (on its first sampled
// frame). "shared" does it all on one opened file; "tracer" as the tracer
// does, which loads the symbols later, from the file opened again (told
// where the debug file is).
func BenchmarkFirstSight(b *testing.B) {
	for _, c := range []struct {
		name string
		path func(testing.TB) string
	}{
		{"libpython", testenv.SystemLibpython},
		{"go", func(tb testing.TB) string {
			p, err := filepath.EvalSymlinks(testenv.GoTool())
			if err != nil {
				testenv.Missing(tb, "no go command: %v", err)
			}
			return p
		}},
	} {
		for _, shared := range []bool{true, false} {
			name := c.name + "/tracer"
			if shared {
				name = c.name + "/shared"
			}
			b.Run(name, func(b *testing.B) {
				path := c.path(b)
				src := elffile.Source{Open: func() (*os.File, error) { return os.Open(path) }, Path: path}
				b.ReportAllocs()
				for b.Loop() {
					firstSight(b, src, shared)
				}
			})
		}
	}
}

func firstSight(b *testing.B, src elffile.Source, shared bool) {
	f, err := elffile.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ID(); err != nil {
		b.Fatal(err)
	}
	_ = f.BuildIDs()
	dbg, _ := f.Debug()
	if _, err := nativeunwind.Build(f, dbg, nativeunwind.Options{}); err != nil {
		b.Fatal(err)
	}
	opts := symbolizer.Options{LineInfo: true}
	if shared {
		_, err = symbolizer.Read(f, opts)
	} else {
		src.DebugPath = f.DebugPath()
		_, err = symbolizer.Load(src, opts)
	}
	if err != nil {
		b.Fatal(err)
	}
}
