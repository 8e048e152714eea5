package tracer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/symbolizer"
	"github.com/stackline-dev/stackline/trace"
)

// filler returns C source of n functions named prefix_0...: code enough
// to make a library's text larger than eagerTextBytes, so that its table
// is built only when a sample reaches it.
func filler(prefix string, n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "int %s_%d(int x) { int s = %d; for (int i = 0; i < x; i++) s = s * 31 + (i ^ %d) + (s >> 3); return s; }\n", prefix, i, i, i)
	}
	return b.String()
}

// unoptimized wraps src in pragmas that compile it without optimization
// whatever the command line asks (the source around it keeps -O2): for
// filler code that is never run and only has to be there, which gcc -O2
// takes five times as long on (6.6 s of CPU for 1,500 functions, against
// 1.4). Its unwind rows are fewer: TestTableBuiltByRegion, which counts
// them, keeps its filler optimized.
func unoptimized(src string) string {
	return "#pragma GCC push_options\n#pragma GCC optimize(\"O0\")\n" + src + "#pragma GCC pop_options\n"
}

// hotSource is a library whose hot_c spins for the milliseconds asked,
// called through hot_a and hot_b; built -O2 -fomit-frame-pointer, only its
// table unwinds it.
const hotSource = `
#include <time.h>
static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
volatile unsigned long hot_sink;
__attribute__((noinline)) void hot_c(long long until) {
	unsigned long x = hot_sink;
	while (now_ns() < until) {
		for (int i = 0; i < 100000; i++)
			x = x * 2862933555777941757UL + 3037000493UL;
		hot_sink = x;
	}
}
__attribute__((noinline)) void hot_b(long long until) { hot_c(until); hot_sink++; }
__attribute__((noinline)) void hot_a(long ms) { hot_b(now_ns() + ms * 1000000LL); hot_sink++; }
`

// mainSource runs hot_a for argv[1] milliseconds; it links libcold but
// never calls it.
const mainSource = `
#include <stdlib.h>
void hot_a(long ms);
int cold_0(int x);
int main(int argc, char **argv) {
	hot_a(argc > 1 ? atol(argv[1]) : 1000);
	if (argc > 2)
		return cold_0(argc);
	return 0;
}
`

// writeSource writes src to dir/name and returns its path.
func writeSource(t *testing.T, dir, name, src string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	write(t, p, src)
	return p
}

// TestTableBuiltWhenSampled: a process runs in one large library (no
// frame pointers) and maps another that it never executes. The first gets
// its table once a sample reaches it; the second gets none and is listed
// as not sampled. Once the table is built, >= 95% of the samples unwind
// fully, down to _start, as when tables were built at sync; the samples
// taken before still show their frame in the library.
func TestTableBuiltWhenSampled(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	hot := writeSource(t, dir, "hot.c", hotSource+unoptimized(filler("hot_fill", 1500)))
	cold := writeSource(t, dir, "cold.c", unoptimized(filler("cold", 1500)))
	mainC := writeSource(t, dir, "main.c", mainSource)
	testenv.Run(t, dir, "gcc", "-O2", "-g", "-fomit-frame-pointer", "-shared", "-fPIC", "-o", filepath.Join(dir, "libhot.so"), hot)
	testenv.Run(t, dir, "gcc", "-O2", "-g", "-fomit-frame-pointer", "-shared", "-fPIC", "-o", filepath.Join(dir, "libcold.so"), cold)
	bin := filepath.Join(dir, "lazy")
	testenv.Run(t, dir, "gcc", "-O2", "-fomit-frame-pointer", "-o", bin, mainC,
		"-L"+dir, "-Wl,--no-as-needed", "-lhot", "-lcold", "-Wl,-rpath,"+dir)

	rec := &recorder{frames: map[trace.FrameID]trace.FrameInfo{}, execs: map[trace.FileID]trace.ExecutableInfo{}}
	tr := startTracer(t, Config{SamplesPerSecond: 199, MaxStackDepth: 128, RingBufferSize: 4 << 20, FileCacheSize: 256,
		Reporter: rec, MaxUnwindTableBytes: 256 << 20}, symbolizer.Options{CacheSize: 64, MaxBytes: 256 << 20})
	for start := time.Now(); tr.Stats().PendingSyncs > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the processes running at start were not synced within a minute")
		}
	}
	cmd := exec.Command(bin, "6000")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	table := func(name string) (TableInfo, bool) {
		for _, ti := range tr.Tables() {
			if ti.File == name {
				return ti, true
			}
		}
		return TableInfo{}, false
	}
	// The traces recorded before the table is in may include samples
	// taken before it; those after builtAt (read a little later) not.
	builtAt := -1
	for start := time.Now(); builtAt < 0; time.Sleep(10 * time.Millisecond) {
		if ti, ok := table("libhot.so"); ok && ti.Rows > 0 {
			time.Sleep(100 * time.Millisecond)
			rec.mu.Lock()
			builtAt = len(rec.traces)
			rec.mu.Unlock()
		}
		if time.Since(start) > 3*time.Second {
			t.Fatal("libhot.so's table was not built within 3 s of the process's start")
		}
	}
	time.Sleep(3 * time.Second)
	coldInfo, coldListed := table("libcold.so")
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	tr.stop(t)

	pid := uint32(cmd.Process.Pid)
	var before, after [][]userFrame
	rec.mu.Lock()
	n := len(rec.traces)
	rec.mu.Unlock()
	all := rec.userTraces(func(m trace.TraceMeta) bool { return m.PID == pid })

	// main never calls into libcold.so, but the loader runs its
	// initialisers at the process's start: a sample there (rare) asks for
	// its table as any other does. A frame in its cold_ functions, which
	// nothing runs, is a frame put in the wrong file.
	coldSampled := 0
	for _, frames := range all {
		i := slices.IndexFunc(frames, func(f userFrame) bool { return f.file == "libcold.so" })
		if i < 0 {
			continue
		}
		coldSampled++
		if strings.HasPrefix(frames[i].name, "cold_") {
			t.Errorf("a frame in libcold.so's %s, which nothing runs: %s", frames[i].name, describe(frames))
		}
	}
	switch {
	case !coldListed:
		t.Errorf("libcold.so, mapped and never run, not listed in the tables")
	case coldSampled > 0:
		t.Logf("libcold.so sampled %d times (its initialisers), its table: %+v", coldSampled, coldInfo)
	case coldInfo.Rows != 0 || coldInfo.Error != errNotSampled:
		t.Errorf("libcold.so, mapped and never run: %+v, want no rows and %q", coldInfo, errNotSampled)
	}
	// userTraces keeps the recorder's order: split at builtAt by
	// counting this process's traces among the first builtAt.
	rec.mu.Lock()
	k := 0
	for _, r := range rec.traces[:builtAt] {
		if r.meta.PID == pid {
			k++
		}
	}
	rec.mu.Unlock()
	before, after = all[:k], all[k:]
	t.Logf("%d traces recorded, %d of the workload: %d before its table was in, %d after", n, len(all), len(before), len(after))

	if len(after) < 100 {
		t.Fatalf("only %d traces after the table was built", len(after))
	}
	full := 0
	var bad []string
	for _, frames := range after {
		if namedChain(frames, "hot_c", "hot_b", "hot_a", "main") && complete(frames) && frames[len(frames)-1].name == "_start" {
			full++
		} else if len(bad) < 5 {
			bad = append(bad, describe(frames))
		}
	}
	t.Logf("after the build: %d of %d (%.1f%%) hot_c <- hot_b <- hot_a <- main down to _start",
		full, len(after), 100*float64(full)/float64(len(after)))
	checkShare(t, "full stack after the table was built", full, len(after), bad, 0.95)

	// The samples that asked for the table show the frame in it.
	shown := 0
	for _, frames := range before {
		if len(frames) > 0 && frames[0].file == "libhot.so" {
			shown++
		}
	}
	t.Logf("before the build: %d of %d traces show their leaf in libhot.so", shown, len(before))
	if len(before) > 0 && shown == 0 {
		t.Errorf("none of the %d traces taken before libhot.so's table was built shows its frame there", len(before))
	}
}

// TestUnbuiltFiles: the table store counts the processes waiting for a
// file's table, takes one request for its build at a time (also for a
// file only processes that exited waited for), and lists the files
// waiting until the last process mapping them is gone.
func TestUnbuiltFiles(t *testing.T) {
	s := newTableStore(nil, 1<<20, nil)
	a, b := trace.FileID{1}, trace.FileID{2}
	s.wait(a, "liba.so")
	s.wait(a, "liba.so")
	listed := func() map[string]TableInfo {
		out := map[string]TableInfo{}
		for _, ti := range s.list(time.Now()) {
			out[ti.File] = ti
		}
		return out
	}
	if ti := listed()["liba.so"]; ti.Processes != 2 || ti.Error != errNotSampled || ti.Rows != 0 {
		t.Errorf("liba.so waited for by two processes: %+v", ti)
	}
	if !s.request(a, "liba.so", 0) {
		t.Fatal("first request of liba.so refused")
	}
	if s.request(a, "liba.so", 0) {
		t.Error("second request of liba.so while its build is asked for taken")
	}
	if ti := listed()["liba.so"]; ti.Error != errBuilding {
		t.Errorf("liba.so asked for: %+v", ti)
	}
	s.unrequest(a)
	if !s.request(a, "liba.so", 0) {
		t.Error("request of liba.so after the build was dropped refused")
	}
	s.unrequest(a)
	s.unwait(a)
	s.unwait(a)
	if _, ok := listed()["liba.so"]; ok {
		t.Error("liba.so still listed with no process waiting")
	}
	// A file whose processes all exited before their traces were read.
	if !s.request(b, "libb.so", 0) {
		t.Fatal("request of a file no live process waits for refused")
	}
	if ti := listed()["libb.so"]; ti.Processes != 0 || ti.Error != errBuilding {
		t.Errorf("libb.so asked for: %+v", ti)
	}
	s.unrequest(b)
	if len(s.unbuilt) != 0 {
		t.Errorf("%d files left waiting", len(s.unbuilt))
	}
	// A file whose table is known is not built again.
	s.tables[a] = &unwindTable{id: a, name: "liba.so"}
	s.wait(a, "liba.so")
	if s.request(a, "liba.so", 0) {
		t.Error("request of a file with a table taken")
	}
	if ti := listed()["liba.so"]; ti.Error == errNotSampled {
		t.Errorf("liba.so with a table listed as not built: %+v", ti)
	}
}
