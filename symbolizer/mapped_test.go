package symbolizer

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/trace"
)

// parseBoth parses the file at path twice: from the open file, whose
// tables are mapped, and from its bytes in memory, whose names are copied
// into the heap.
func parseBoth(tb testing.TB, path string, opts Options) (mapped, heap *File) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if heap, err = Parse(bytes.NewReader(data), opts); err != nil {
		tb.Fatal(err)
	}
	return parseOpts(tb, path, opts), heap
}

// sameLookups checks that two tables of one file name every offset in
// offs alike.
func sameLookups(tb testing.TB, a, b *File, offs []uint64) (named int) {
	tb.Helper()
	var bufA, bufB []trace.Line
	for _, off := range offs {
		bufA, bufB = a.Lookup(off, bufA[:0]), b.Lookup(off, bufB[:0])
		if !slices.Equal(bufA, bufB) {
			tb.Fatalf("Lookup(%#x) = %+v mapped, %+v from memory", off, bufA, bufB)
		}
		if len(bufA) > 0 {
			named++
		}
	}
	return named
}

// TestMappedMatchesHeap checks that tables read in place from a mapped
// file name frames exactly as tables read from memory do, and that they
// hold less heap.
func TestMappedMatchesHeap(t *testing.T) {
	files := map[string]string{
		"c":    build(t, "gcc", cSource, ".c", "prog", "-O1", "-g", "-fno-builtin"),
		"c++":  build(t, "g++", cxxSource, ".cc", "prog", "-O1", "-g"),
		"libc": testenv.Libc(t),
		"go":   filepath.Join(goroot(t), "bin", "go"),
	}
	for name, path := range files {
		t.Run(name, func(t *testing.T) {
			mapped, heap := parseBoth(t, path, Options{Demangle: DemangleFull, LineInfo: true})
			if mapped.Len() == 0 || mapped.Len() != heap.Len() {
				t.Fatalf("%d symbols mapped, %d from memory", mapped.Len(), heap.Len())
			}
			if mapped.MappedBytes() == 0 || heap.MappedBytes() != 0 {
				t.Errorf("MappedBytes() = %d mapped, %d from memory", mapped.MappedBytes(), heap.MappedBytes())
			}
			if mapped.Bytes() >= heap.Bytes() {
				t.Errorf("Bytes() = %d mapped, not less than %d from memory", mapped.Bytes(), heap.Bytes())
			}
			named := sameLookups(t, mapped, heap, lookupOffsets(mapped, 1<<14))
			if named == 0 {
				t.Error("no offset named")
			}
			t.Logf("%d symbols: %d heap bytes + %d mapped, %d heap bytes from memory; %d of %d offsets named",
				mapped.Len(), mapped.Bytes(), mapped.MappedBytes(), heap.Bytes(), named, 1<<14)
		})
	}
}

// TestTruncatedUnderMapping truncates files whose tables are mapped: a
// lookup that touches a page past the new end faults, and the fault must
// leave the frame unnamed rather than crash the process.
func TestTruncatedUnderMapping(t *testing.T) {
	c := build(t, "gcc", cSource, ".c", "prog", "-O0", "-fno-builtin")
	goBin := filepath.Join(t.TempDir(), "go")
	copyFile(t, filepath.Join(goroot(t), "bin", "go"), goBin)
	for _, path := range []string{c, goBin} {
		dir := t.TempDir()
		p := filepath.Join(dir, filepath.Base(path))
		copyFile(t, path, p)
		f, err := Load(elffile.Source{Open: openPath(p), Path: p}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if f.MappedBytes() == 0 {
			t.Fatalf("%s: nothing mapped", path)
		}
		offs := lookupOffsets(f, 256)
		named := 0
		for _, off := range offs {
			if len(f.Lookup(off, nil)) > 0 {
				named++
			}
		}
		if named == 0 {
			t.Fatalf("%s: nothing named before truncation", path)
		}
		if err := os.Truncate(p, 0); err != nil {
			t.Fatal(err)
		}
		for _, off := range offs {
			if got := f.Lookup(off, nil); len(got) > 0 {
				t.Fatalf("%s: Lookup(%#x) = %+v from a truncated file", path, off, got)
			}
		}
	}
}

// mappingsOf counts the mappings of path in this process.
func mappingsOf(tb testing.TB, path string) int {
	tb.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, line := range bytes.Split(maps, []byte("\n")) {
		if bytes.HasSuffix(line, []byte(" "+path)) {
			n++
		}
	}
	return n
}

// TestUnmappedWhenEvicted checks that the mappings of a table are
// released once the cache evicts or forgets it and nothing else refers to
// it.
func TestUnmappedWhenEvicted(t *testing.T) {
	dir := t.TempDir()
	c := filepath.Join(dir, "prog")
	copyFile(t, build(t, "gcc", cSource, ".c", "prog", "-O0", "-fno-builtin"), c)
	goBin := filepath.Join(dir, "go")
	copyFile(t, filepath.Join(goroot(t), "bin", "go"), goBin)

	s, err := New(Options{CacheSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range []string{c, goBin} {
		if _, err := s.File(trace.FileID{byte(i + 1)}, elffile.Source{Open: openPath(p), Path: p}); err != nil {
			t.Fatal(err)
		}
		if mappingsOf(t, p) == 0 {
			t.Fatalf("%s: not mapped after loading", p)
		}
	}
	st := s.Stats()
	if st.Files != 1 || st.Evictions != 1 || st.BytesMapped == 0 || st.BytesMapped >= 64<<20 {
		t.Errorf("Stats() = %+v, want the go binary alone, mapped", st)
	}
	// The C program's table was evicted: its mappings go with it once
	// collected. The go binary's stay while cached.
	deadline := time.Now().Add(5 * time.Second)
	for mappingsOf(t, c) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still mapped %d times after eviction", c, mappingsOf(t, c))
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if mappingsOf(t, goBin) == 0 {
		t.Errorf("%s: unmapped while cached", goBin)
	}

	// A forgotten table goes the same way, and its counts with it.
	s.Forget(trace.FileID{2})
	if st := s.Stats(); st.Files != 0 || st.BytesHeld != 0 || st.BytesMapped != 0 || st.Evictions != 1 {
		t.Errorf("after Forget: Stats() = %+v, want nothing cached", st)
	}
	for mappingsOf(t, goBin) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still mapped %d times after Forget", goBin, mappingsOf(t, goBin))
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	s.Forget(trace.FileID{2}) // not cached: nothing to do
	runtime.KeepAlive(s)
}

// TestTrimDropsPages checks that Trim drops the pages lookups made
// resident in the mapped tables, and that lookups name frames alike
// afterwards.
func TestTrimDropsPages(t *testing.T) {
	goBin := filepath.Join(t.TempDir(), "go")
	copyFile(t, filepath.Join(goroot(t), "bin", "go"), goBin)
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.File(trace.FileID{1}, elffile.Source{Open: openPath(goBin), Path: goBin})
	if err != nil {
		t.Fatal(err)
	}
	// Offsets over the whole text of the binary.
	var offs []uint64
	for _, seg := range f.loads {
		if seg.exec {
			for off := seg.off; off < seg.off+seg.filesz; off += 997 {
				offs = append(offs, off)
			}
		}
	}
	before := make([][]trace.Line, len(offs))
	for i, off := range offs {
		before[i] = f.Lookup(off, nil)
	}
	touched := testenv.ResidentOf(t, goBin)
	s.Trim()
	trimmed := testenv.ResidentOf(t, goBin)
	t.Logf("%d lookups: %d kB resident, %d kB after Trim", len(offs), touched>>10, trimmed>>10)
	if touched < 1<<20 || trimmed > touched/10 {
		t.Errorf("resident %d bytes after %d lookups, %d after Trim: want over 1 MiB, then under a tenth", touched, len(offs), trimmed)
	}
	for i, off := range offs {
		if got := f.Lookup(off, nil); !slices.Equal(got, before[i]) {
			t.Fatalf("Lookup(%#x) after Trim = %+v, before %+v", off, got, before[i])
		}
	}
}
