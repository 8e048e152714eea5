package tracer

import (
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	progs "github.com/stackline-dev/stackline/support/ebpf"
	"github.com/stackline-dev/stackline/trace"
)

// TestShortLivedNamed: a C program main -> f -> g without frame pointers,
// exec'd 200 times a second and living 20 to 50 ms each, gets at least 90%
// of its samples fully named: g <- f <- main, or (the dynamic loader's
// start-up and the exit path) every frame named down to _start, or only
// kernel frames (sampled in exec or exit). Most of these processes exit
// before the agent could read /proc/PID/maps: the eBPF unwinder finds
// their mappings in the kernel (support/ebpf/vma.h) and tags each frame
// with its file, which the tracer names through the file known from the
// processes before. Frames of the dynamic loader's own code are counted
// as named when the host has no symbols for it (a stripped ld.so without
// its debug file): nothing can name them, and the stack is complete; they
// are logged apart. (On a loaded host they are a large share: the
// loader's CPU time is fixed, the processes' run time is wall time.)
// Measured with libc6-dbg installed (none by that allowance): 97.4-98.4%
// in ten runs at load 18-23, 95.8-97.9% at load 28-41; 25.8% before the
// kernel-side lookup (load 28). The samples count from when the agent
// has churn's table (below): counted from the launcher's start, a run at
// load 20 measured 82.0%.
func TestShortLivedNamed(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	churn := filepath.Join(dir, "churn")
	launch := filepath.Join(dir, "launch")
	root := testenv.RepoRoot(t)
	testenv.Run(t, root, "gcc", "-O2", "-fomit-frame-pointer", "-o", churn, "tracer/testdata/churn/churn.c")
	testenv.Run(t, root, "gcc", "-O2", "-o", launch, "tracer/testdata/churn/launch.c")
	// The samples count once churn's unwind table is in: before, its
	// first processes wait for the agent to read the new file and build
	// its table (TestTableBuiltWhenSampled asks about that), which takes
	// tens of milliseconds on a quiet host but seconds on one loaded by
	// other work, where it made most of the unnamed samples (9 of 30
	// fully named in the first second, 30 of 57 in the next, then 97-100%
	// in each second after, at load 20).
	tableIn := func(tr *liveTracer) bool {
		return slices.ContainsFunc(tr.Tables(), func(ti TableInfo) bool { return ti.File == "churn" && ti.Rows > 0 })
	}
	var at []uint64 // the traces' timestamps, in the order of traces
	traces, st := sampleTracesFrom(t, exec.Command(launch, churn), tableIn, 6*time.Second, 0,
		func(m trace.TraceMeta) bool {
			if m.Comm != "churn" {
				return false
			}
			at = append(at, m.TimestampNS)
			return true
		})
	nameless := unsymbolizedLoader(t, churn)
	named, inMain, kernelOnly, loader := 0, 0, 0, 0
	var bad []string
	kinds := map[string]int{}
	// Traces and those fully named by second since the first.
	var perSecond [][2]int
	first := slices.Min(append(at[:len(at):len(at)], ^uint64(0)))
	for i, frames := range traces {
		sec := int((at[i] - first) / uint64(time.Second))
		for len(perSecond) <= sec {
			perSecond = append(perSecond, [2]int{})
		}
		perSecond[sec][0]++
		before := named + loader
		switch {
		case nameless != "" && complete(frames) && !slices.ContainsFunc(frames, func(f userFrame) bool { return f.name == "" && f.file != nameless }):
			// The loader's code, which this host cannot name.
			loader++
		case namedChain(frames, "g", "f", "main"):
			named++
			inMain++
		case len(frames) == 0:
			// Sampled in the kernel (exec, exit) with no user stack:
			// every frame is a named kernel frame.
			named++
			kernelOnly++
		case frames[len(frames)-1].name == "_start" && !slices.ContainsFunc(frames, func(f userFrame) bool { return f.name == "" }):
			named++
		default:
			kinds[describe(frames)]++
			if len(bad) < 8 {
				bad = append(bad, describe(frames))
			}
		}
		if named+loader > before {
			perSecond[sec][1]++
		}
	}
	var secs []string
	for i, c := range perSecond {
		secs = append(secs, fmt.Sprintf("%ds %d/%d", i, c[1], c[0]))
	}
	t.Logf("fully named by second since the first trace counted: %s", strings.Join(secs, ", "))
	// Where the rest went, most frequent first.
	top := slices.SortedFunc(maps.Keys(kinds), func(a, b string) int { return kinds[b] - kinds[a] })
	for _, k := range top[:min(len(top), 12)] {
		t.Logf("%5d %s", kinds[k], k)
	}
	t.Logf("eBPF: not ready %d, vma lookups %d, no CFI %d, sync requests %d; %d traces of the kernel only",
		st.Counters[progs.StacklineCounterCOUNTER_NOT_READY], st.Counters[progs.StacklineCounterCOUNTER_VMA_LOOKUPS],
		st.Counters[progs.StacklineCounterCOUNTER_NO_CFI], st.Counters[progs.StacklineCounterCOUNTER_SYNC_REQUESTS], kernelOnly)
	t.Logf("%d traces of churn, %d (%.1f%%) fully named, %d of them g <- f <- main; %d (%.1f%%) complete in the loader's unsymbolized code (%q); %d map reads (%d failed), %d syncs, %d traces parked at the end, %d overflows",
		len(traces), named, 100*float64(named)/float64(max(len(traces), 1)), inMain, loader, 100*float64(loader)/float64(max(len(traces), 1)), nameless,
		st.MapsReads, st.MapsErrors, st.Syncs, st.ParkedTraces, st.ParkOverflows)
	if len(traces) < 150 {
		t.Fatalf("only %d traces of churn", len(traces))
	}
	checkShare(t, "fully named", named+loader, len(traces), bad, 0.90)
}

// unsymbolizedLoader returns the base name of exe's dynamic loader when the
// host has no symbols for its code (no symbol table, no debug file by
// build ID), else "".
func unsymbolizedLoader(t *testing.T, exe string) string {
	t.Helper()
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				t.Fatal(err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		return ""
	}
	ld, err := elf.Open(interp)
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	if ld.Section(".symtab") != nil {
		return ""
	}
	// The GNU build ID note: name size, descriptor size, type, "GNU\0",
	// then the ID.
	if sec := ld.Section(".note.gnu.build-id"); sec != nil {
		if b, err := sec.Data(); err == nil && len(b) > 17 {
			id := b[16:]
			if _, err := os.Stat(fmt.Sprintf("/usr/lib/debug/.build-id/%x/%x.debug", id[:1], id[1:])); err == nil {
				return ""
			}
		}
	}
	return filepath.Base(interp)
}

// namedChain reports whether frames (leaf first) hold chain as consecutive
// frames of exactly these names, with every frame before it named.
func namedChain(frames []userFrame, chain ...string) bool {
	for i := 0; i+len(chain) <= len(frames); i++ {
		ok := true
		for j, c := range chain {
			if frames[i+j].name != c {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
		if frames[i].name == "" {
			return false
		}
	}
	return false
}
