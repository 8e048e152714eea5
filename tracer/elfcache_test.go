package tracer

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/trace"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// parsedFile returns a mappedFile of the test binary, opened and parsed,
// of identity id.
func parsedFile(t *testing.T, id byte) *mappedFile {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elffile.NewFile(fh, elffile.Source{})
	if err != nil {
		fh.Close()
		t.Fatal(err)
	}
	return &mappedFile{fi: &fileInfo{id: trace.FileID{id}}, opened: true, fh: fh, parsed: true, ef: ef}
}

// isClosed reports whether fh was closed.
func isClosed(fh *os.File) bool {
	_, err := fh.Stat()
	return err != nil
}

// TestELFCache: a file whose table is built by region is kept open and
// parsed after its build and lent to the next build of its regions, which
// closes the copy it opened; files not built by region are not kept; the
// cache holds maxCachedELF files at most, the least recently used going
// first, closes those unused for cachedELFTTL, and closes all at the end.
func TestELFCache(t *testing.T) {
	now := time.Now()
	var b nativeunwind.Builder
	c := elfCache{keeper: &b}
	defer c.close()
	// The builder keeps the sections of exactly the files held.
	keeps := func(when string) {
		t.Helper()
		if b.Kept() != len(c.files) {
			t.Errorf("%s: the builder keeps %d files, the cache holds %d", when, b.Kept(), len(c.files))
		}
	}

	whole := parsedFile(t, 1)
	c.keep(whole, false, false, now)
	if whole.ef == nil || len(c.files) != 0 {
		t.Fatal("a file built whole was kept")
	}
	whole.close()

	first := parsedFile(t, 2)
	ef, fh := first.ef, first.fh
	c.keep(first, false, true, now)
	if first.ef != nil || first.fh != nil {
		t.Fatal("the kept file is still the build's to close")
	}
	first.close()
	if isClosed(fh) {
		t.Fatal("the file kept was closed with its build")
	}

	next := parsedFile(t, 2)
	own := next.fh
	if !c.lend(next) {
		t.Fatal("the file kept was not lent")
	}
	if !isClosed(own) {
		t.Error("the file the next build opened was not closed")
	}
	if got, err := next.elf(); got != ef || err != nil {
		t.Fatalf("lent %p, %v; want the file kept, %p", got, err, ef)
	}
	// Even a build that failed gives a lent file back.
	c.keep(next, true, false, now.Add(time.Second))
	next.close()
	if isClosed(fh) || c.files[trace.FileID{2}].used != now.Add(time.Second) {
		t.Fatal("the file lent did not go back to the cache, used again")
	}
	keeps("lent and back")
	other := parsedFile(t, 3)
	defer other.close()
	if c.lend(other) {
		t.Fatal("lent a file not kept")
	}

	// Bounded: the least recently used goes first.
	var fhs []*os.File
	for i := range maxCachedELF {
		mf := parsedFile(t, byte(10+i))
		fhs = append(fhs, mf.fh)
		c.keep(mf, false, true, now.Add(time.Duration(2+i)*time.Second))
	}
	if len(c.files) != maxCachedELF {
		t.Fatalf("%d files held, want %d", len(c.files), maxCachedELF)
	}
	if !isClosed(fh) {
		t.Error("the least recently used file was not closed")
	}
	if _, ok := c.files[trace.FileID{2}]; ok {
		t.Error("the least recently used file is still held")
	}
	keeps("bounded")

	// Expiry: those unused for cachedELFTTL.
	c.expire(now.Add(2*time.Second + cachedELFTTL + time.Millisecond))
	if len(c.files) != maxCachedELF-1 || !isClosed(fhs[0]) || isClosed(fhs[1]) {
		t.Errorf("after the first expired: %d files held, want %d", len(c.files), maxCachedELF-1)
	}
	keeps("expired")
	c.close()
	if len(c.files) != 0 {
		t.Errorf("%d files held after close", len(c.files))
	}
	keeps("closed")
	for i, fh := range fhs {
		if !isClosed(fh) {
			t.Errorf("file %d not closed by close", i)
		}
	}
}

// BenchmarkRegionFileOpen measures what a build of regions pays for its
// file when the build worker's elfCache does not hold it: opening the
// file, parsing its ELF headers and looking for its debug file (the
// build's regional and debug calls), for the Go command and GCC's C
// compiler, the files whose regions the whole-agent bench builds most.
// A build the cache lends the file to pays none of it.
func BenchmarkRegionFileOpen(b *testing.B) {
	goCmd, _ := exec.LookPath("go")
	for _, f := range []struct{ name, path string }{
		{"go", goCmd},
		{"cc1", "/usr/lib/gcc/x86_64-linux-gnu/12/cc1"},
	} {
		b.Run(f.name, func(b *testing.B) {
			path, err := filepath.EvalSymlinks(f.path)
			if err != nil {
				b.Skipf("%s not installed: %v", f.name, err)
			}
			b.ReportAllocs()
			cpu0 := testenv.ProcessCPU(b)
			for b.Loop() {
				fh, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				ef, err := elffile.NewFile(fh, elffile.Source{Path: path})
				if err != nil {
					b.Fatal(err)
				}
				ef.Debug()
				if n := regionCount(nativeunwind.CodeEnd(ef)); n < minRegions || !nativeunwind.Regional(ef) {
					b.Fatalf("%s: %d regions, not built by region", path, n)
				}
				ef.Close()
			}
			b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
