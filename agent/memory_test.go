package agent

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// exeMaps is the maps of a Go program: its code, read-only data and data
// segments, a part of its own file mapped again elsewhere (as the
// symbolizer maps it), another file mapped right after its data, and a
// read-only file mapping of another file adjacent to its code.
const exeMaps = `00300000-00400000 r--p 00000000 fe:00 555 /usr/lib/other.so
00400000-00c72000 r-xp 00000000 fe:00 100 /usr/bin/stackline
00c72000-015f8000 r--p 00872000 fe:00 100 /usr/bin/stackline
015f8000-0169e000 rw-p 011f8000 fe:00 100 /usr/bin/stackline
0169e000-016c0000 rw-p 00000000 00:00 0
016c0000-016d0000 r--p 01298000 fe:00 100 /usr/bin/stackline
c000000000-c004000000 rw-p 00000000 00:00 0
7f122211a000-7f12227ee000 r--p 00b1a000 fe:00 100 /usr/bin/stackline
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
`

func TestOwnImage(t *testing.T) {
	for _, tc := range []struct {
		name string
		pc   uint64
		want []imageRange
		err  bool
	}{
		{name: "code", pc: 0x401000, want: []imageRange{{0x400000, 0xc72000}, {0xc72000, 0x15f8000}}},
		{name: "rodata", pc: 0xc72000, want: []imageRange{{0x400000, 0xc72000}, {0xc72000, 0x15f8000}}},
		{name: "data", pc: 0x15f8000, err: true},
		{name: "heap", pc: 0xc000001000, err: true},
		{name: "unmapped", pc: 0x10, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ownImage(strings.NewReader(exeMaps), tc.pc)
			if tc.err {
				if err == nil {
					t.Fatalf("got %x, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %x, want %x", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %x, want %x", got, tc.want)
				}
			}
		})
	}
	if _, err := ownImage(strings.NewReader("not a maps line\n"), 0x401000); err == nil {
		t.Fatal("malformed maps: no error")
	}
}

func FuzzOwnImage(f *testing.F) {
	f.Add([]byte(exeMaps), uint64(0x401000))
	f.Add([]byte("00400000-00c72000 r-xp 00000000 fe:00 100 /a\n00c72000-00c73000 r--p 00872000 fe:00 100 /a\n"), uint64(0x400000))
	f.Add([]byte("ffffffffffff0000-ffffffffffffffff r--p fffffffffffff000 fe:00 1 /a\n"), uint64(0xffffffffffff0001))
	f.Fuzz(func(t *testing.T, maps []byte, pc uint64) {
		got, err := ownImage(strings.NewReader(string(maps)), pc)
		if err != nil {
			return
		}
		holds := false
		for i, r := range got {
			if r.end <= r.start {
				t.Fatalf("empty or reversed range %x", r)
			}
			if i > 0 && got[i-1].end != r.start {
				t.Fatalf("ranges not adjacent: %x", got)
			}
			holds = holds || (r.start <= pc && pc < r.end)
		}
		if !holds {
			t.Fatalf("%x does not hold %#x", got, pc)
		}
	})
}

// residentKB sums the Rss of the mappings of /proc/self/smaps that start
// inside ranges.
func residentKB(t *testing.T, ranges []imageRange) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kb, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if lo, _, ok := strings.Cut(fields[0], "-"); ok && !strings.HasSuffix(fields[0], ":") {
			start, err := strconv.ParseUint(lo, 16, 64)
			if err != nil {
				continue
			}
			in = false
			for _, r := range ranges {
				in = in || (r.start <= start && start < r.end)
			}
			continue
		}
		if in && fields[0] == "Rss:" {
			n, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatal(err)
			}
			kb += n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kb
}

// TestDropOwnPages: the test binary's own code and read-only data are
// found, dropping their pages takes them out of the RSS, and the program
// runs on (its code comes back from the page cache).
func TestDropOwnPages(t *testing.T) {
	image, err := selfImage()
	if err != nil {
		t.Fatal(err)
	}
	if len(image) < 2 {
		t.Fatalf("own image %x: want code and read-only data", image)
	}
	before := residentKB(t, image)
	if before < 1024 {
		t.Fatalf("own image resident %d KiB before the trim: too little to measure", before)
	}
	if err := dropPages(image); err != nil {
		t.Fatal(err)
	}
	after := residentKB(t, image)
	t.Logf("own image resident: %d KiB before, %d KiB after", before, after)
	if after > before/2 {
		t.Fatalf("own image resident %d KiB after the trim, %d before: want at most half", after, before)
	}
	// residentBytes, which decides the trims, counts what smaps does.
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	got, err := residentBytes(pm, image)
	if err != nil {
		t.Fatal(err)
	}
	ref := residentKB(t, image)
	if d := int(got>>10) - ref; d < -256 || d > 256 {
		t.Errorf("residentBytes: %d KiB, smaps %d KiB", got>>10, ref)
	}
	// Code and data paged back in work as before.
	var sb strings.Builder
	for i := range 1000 {
		sb.WriteString(strconv.Itoa(i))
	}
	if n := len(sb.String()); n != 2890 {
		t.Fatalf("after the trim: %d bytes, want 2890", n)
	}
}

// TestMemoryLimitFollowsLiveHeap: the configured limit holds while the live
// heap is under half of it, and through a burst above that; once the heap
// has stayed above for limitRaiseAfter, the limit is twice the live heap,
// so the collector never runs back to back against a limit below what is
// live; it comes back when the heap does.
func TestMemoryLimitFollowsLiveHeap(t *testing.T) {
	const mb = 1 << 20
	m := &memoryLimit{configured: 40 * mb, set: 40 * mb}
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		live uint64
		at   time.Duration
		want int64
	}{
		{0, 0, 40 * mb},
		{20 * mb, time.Second, 40 * mb},
		{80 * mb, 2 * time.Second, 40 * mb},    // a burst: not yet
		{80 * mb, 20 * time.Second, 40 * mb},   // still within limitRaiseAfter
		{80 * mb, 32 * time.Second, 160 * mb},  // held: follows
		{300 * mb, 40 * time.Second, 600 * mb}, // and keeps following
		{10 * mb, 45 * time.Second, 40 * mb},   // back to the configured limit
		{1 << 63, 46 * time.Second, 40 * mb},   // a new rise starts the wait again
		{1 << 63, 80 * time.Second, 1 << 62},   // huge values do not overflow
	} {
		got := m.next(c.live, t0.Add(c.at))
		m.set = got
		if got != c.want {
			t.Errorf("live %d at %v: limit %d, want %d", c.live, c.at, got, c.want)
		}
	}
}

// TestProcsAfterStart checks when and to what the agent lowers GOMAXPROCS:
// not while syncs of the start are pending, then to the cap when the
// runtime runs on more Ps, never raised, and not at all without a cap.
func TestProcsAfterStart(t *testing.T) {
	for _, tc := range []struct {
		name              string
		maxProcs, current int
		pending           uint64
		want              int
		wantDone          bool
	}{
		{name: "start under way", maxProcs: 1, current: 8, pending: 3, want: 0, wantDone: false},
		{name: "start done", maxProcs: 1, current: 8, pending: 0, want: 1, wantDone: true},
		{name: "cap of two", maxProcs: 2, current: 64, pending: 0, want: 2, wantDone: true},
		{name: "fewer Ps than the cap", maxProcs: 4, current: 2, pending: 0, want: 0, wantDone: true},
		{name: "at the cap", maxProcs: 2, current: 2, pending: 0, want: 0, wantDone: true},
		{name: "no cap", maxProcs: 0, current: 8, pending: 0, want: 0, wantDone: true},
	} {
		n, done := procsAfterStart(tc.maxProcs, tc.current, tc.pending)
		if n != tc.want || done != tc.wantDone {
			t.Errorf("%s: procsAfterStart(%d, %d, %d) = %d, %v; want %d, %v", tc.name, tc.maxProcs, tc.current, tc.pending, n, done, tc.want, tc.wantDone)
		}
	}
}

// TestImageTrimDue: the own image is trimmed once after the start, its
// working set measured an interval later, and trimmed again only when it
// grew by more than imageSlack over the least it has been since.
func TestImageTrimDue(t *testing.T) {
	const mb = 1 << 20
	var p imageTrim
	for i, c := range []struct {
		resident uint64
		want     bool
	}{
		{30 * mb, true},  // the start's pages
		{12 * mb, false}, // working set measured
		{15 * mb, false}, // within the slack
		{10 * mb, false}, // less: the floor follows
		{15 * mb, true},  // 5 MB over the floor
		{13 * mb, false}, // measured again
		{17 * mb, false},
		{17*mb + 1, true},
	} {
		if got := p.due(c.resident); got != c.want {
			t.Fatalf("step %d (%d MB resident): due %v, want %v", i, c.resident/mb, got, c.want)
		}
	}
}

// TestNextTrimCheck: the trim loop looks every second while the start is
// not done or files are being loaded, and otherwise only when the next
// trim is due.
func TestNextTrimCheck(t *testing.T) {
	for _, c := range []struct {
		settled, loading bool
		want             time.Duration
	}{
		{false, false, trimCheck},
		{false, true, trimCheck},
		{true, true, trimCheck},
		{true, false, trimInterval},
	} {
		if got := nextTrimCheck(c.settled, c.loading); got != c.want {
			t.Errorf("nextTrimCheck(settled %v, loading %v) = %v, want %v", c.settled, c.loading, got, c.want)
		}
	}
}

// TestGCPacing: the collector's percent stays the configured one while
// the agent allocates fast, goes down to what lets the heap grow for
// gcSpacing once allocation has been slow for the whole window, and goes
// back up at the first look after a burst.
func TestGCPacing(t *testing.T) {
	const live = 10 << 20
	g := newGCPacing(20, 50)
	if !g.on() {
		t.Fatal("pacing 20..50 is off")
	}
	at := time.Unix(1000, 0)
	var allocs uint64
	look := func(step uint64) int {
		at = at.Add(trimInterval)
		allocs += step
		return g.next(at, allocs, live)
	}
	if p := look(0); p != 50 {
		t.Fatalf("first look: %d, want the configured 50", p)
	}
	// Not lowered before the window is full, however slow.
	for i := range gcWindow - 1 {
		if p := look(0); p != 50 {
			t.Fatalf("look %d of the first window, allocating nothing: %d, want 50", i+2, p)
		}
	}
	// 2 MB a second: a heap of 10 MB grows by 20 MB in gcSpacing.
	for range gcWindow {
		if p := look(10 << 20); p != 50 {
			t.Fatalf("allocating 2 MB/s: %d, want 50", p)
		}
	}
	// 300 kB a second: 3 MB in gcSpacing, 30 %, once the window holds
	// only slow looks.
	var p int
	for i := range gcWindow {
		p = look(1500 << 10)
		if i < gcWindow-1 && p != 50 {
			t.Fatalf("look %d of the slow spell: %d, want 50 until the window is slow", i, p)
		}
	}
	if want := 30; p != want {
		t.Fatalf("allocating 300 kB/s for the window: %d, want %d", p, want)
	}
	// A little slower: 28 %, less than a step down.
	for range gcWindow {
		p = look(1400 << 10)
	}
	if p != 30 {
		t.Errorf("a change of less than %d points: %d, want 30 kept", gcPercentStep, p)
	}
	// Very slow: the floor.
	for range gcWindow {
		p = look(100 << 10)
	}
	if p != 20 {
		t.Errorf("allocating 20 kB/s: %d, want the floor 20", p)
	}
	// A burst: back up at the next look.
	if p := look(20 << 20); p != 50 {
		t.Errorf("after a burst of 20 MB in 5 s: %d, want 50", p)
	}
	// A counter that went back (never, but not a rate): the ceiling.
	allocs = 0
	if p := look(0); p != 50 {
		t.Errorf("allocations going back: %d, want 50", p)
	}
	if len(g.looks) != gcWindow+1 {
		t.Errorf("%d looks kept, want %d", len(g.looks), gcWindow+1)
	}

	for _, c := range []struct{ floor, ceiling int }{{0, 50}, {20, 20}, {20, -1}, {50, 20}} {
		if g := newGCPacing(c.floor, c.ceiling); g.on() {
			t.Errorf("pacing %d..%d is on", c.floor, c.ceiling)
		}
	}
}
