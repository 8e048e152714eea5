package agent

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/tracer/procmaps"
)

// How often the agent drops the file pages it touched since it last did:
// the pages of the symbol files the symbolizer maps, every trimInterval,
// and every trimCheck while it loads files (a load reads the file's whole
// symbol and string tables) and until the start is done (see
// nextTrimCheck). The pages lookups touch, the tracer drops itself after
// each batch of records it names (see Tracer.dropLooked); a trim takes
// what is left, the pages of loads above all. Pages still in use come back
// on their next access, from the page cache (a minor fault, 64 KiB around
// the page touched); what was touched once (the loads of a burst of new
// programs) leaves the RSS. Symbols are looked up only for frames the
// reporter does not know, so a trim costs few faults.
//
// The agent's own image (code and read-only data) is different: the Go
// runtime touches most of what it drops again within seconds (the garbage
// collector reads type data and the function table, the steady paths run
// the same code), so trimming it on a clock makes a saw of the RSS (6-7 MB
// here) that only costs faults. It is trimmed once imageInterval after the
// start, which drops what only the start ran, and then only when its
// resident part has grown by more than imageSlack over what stayed
// resident an imageInterval after the last trim (its working set): after a
// burst of paths the steady state does not run.
const (
	trimCheck     = time.Second
	trimInterval  = 5 * time.Second
	imageInterval = 30 * time.Second
	imageSlack    = 4 << 20
)

// imageTrim decides, every imageInterval, whether the agent's own image is
// trimmed, from the bytes of it resident then.
type imageTrim struct {
	started bool   // trimmed once, after the start
	floor   uint64 // the working set; 0 until measured after a trim
}

// due reports whether the image, resident bytes of it now, is trimmed now.
func (p *imageTrim) due(resident uint64) bool {
	switch {
	case !p.started:
		p.started = true
		return true
	case p.floor == 0:
		p.floor = resident
		return false
	case resident > p.floor+imageSlack:
		p.floor = 0
		return true
	}
	p.floor = min(p.floor, resident)
	return false
}

// imageRange is one read-only mapping of the agent's own executable.
type imageRange struct {
	start, end uint64
}

// ownImage returns the read-only mappings of the executable image that
// holds pc, as r (the process's own maps) lists them: the mapping holding
// pc and the mappings adjacent to it, in memory and in the file, of the
// same file, none of them writable. Those are the ELF segments the kernel
// mapped at exec (code, read-only data), which stay mapped for the life
// of the process; other mappings of the same file (the symbolizer maps
// parts of it) and the writable data segment are left out.
func ownImage(r io.Reader, pc uint64) ([]imageRange, error) {
	var maps []procmaps.Mapping
	if err := procmaps.Parse(r, nil, func(m procmaps.Mapping) { maps = append(maps, m) }); err != nil {
		return nil, err
	}
	at := -1
	for i, m := range maps {
		if m.Start <= pc && pc < m.End {
			at = i
			break
		}
	}
	if at < 0 || !maps[at].IsFile() {
		return nil, fmt.Errorf("no file mapping holds %#x", pc)
	}
	ro := func(m procmaps.Mapping) bool { return m.Perms[1] != 'w' && m.Perms[3] == 'p' }
	same := func(a, b procmaps.Mapping) bool {
		return a.Inode == b.Inode && a.Major == b.Major && a.Minor == b.Minor &&
			a.End == b.Start && b.Offset >= a.Offset && b.Offset-a.Offset == a.End-a.Start
	}
	if !ro(maps[at]) {
		return nil, fmt.Errorf("the mapping holding %#x is writable", pc)
	}
	lo, hi := at, at
	for lo > 0 && ro(maps[lo-1]) && same(maps[lo-1], maps[lo]) {
		lo--
	}
	for hi+1 < len(maps) && ro(maps[hi+1]) && same(maps[hi], maps[hi+1]) {
		hi++
	}
	var out []imageRange
	for _, m := range maps[lo : hi+1] {
		out = append(out, imageRange{start: m.Start, end: m.End})
	}
	return out, nil
}

// selfImage finds the agent's own code and read-only data in
// /proc/self/maps.
func selfImage() ([]imageRange, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ownImage(f, uint64(reflect.ValueOf(selfImage).Pointer()))
}

// dropPages drops the resident pages of the read-only file mappings
// ranges from the process's page tables (MADV_DONTNEED): the next access
// maps them again from the page cache.
func dropPages(ranges []imageRange) error {
	for _, r := range ranges {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(r.start), uintptr(r.end-r.start), unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("madvise %#x-%#x: %w", r.start, r.end, errno)
		}
	}
	return nil
}

// residentBytes returns how many bytes of ranges are mapped in the
// process's page tables, which is what its RSS counts, from pagemap (the
// process's /proc/PID/pagemap: a little-endian word per page, bit 63 set
// when the page is present).
func residentBytes(pagemap io.ReaderAt, ranges []imageRange) (uint64, error) {
	const page = 4096
	buf := make([]byte, 8<<10)
	var n uint64
	for _, r := range ranges {
		for va := r.start &^ (page - 1); va < r.end; {
			words := min(uint64(len(buf)/8), (r.end-va+page-1)/page)
			b := buf[:words*8]
			if _, err := pagemap.ReadAt(b, int64(va/page*8)); err != nil {
				return 0, fmt.Errorf("pagemap at %#x: %w", va, err)
			}
			for i := 0; i < len(b); i += 8 {
				if b[i+7]&0x80 != 0 {
					n += page
				}
			}
			va += words * page
		}
	}
	return n, nil
}

// imageResident returns how many bytes of the agent's own image are
// resident.
func (a *Agent) imageResident() (uint64, error) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return residentBytes(f, a.image)
}

// trimPages drops the file pages the agent touched since the last trim:
// the symbol files', and with image its own image's when a.imageTrim says
// so.
func (a *Agent) trimPages(image bool) {
	if image && len(a.image) > 0 {
		resident, err := a.imageResident()
		if err == nil && a.imageTrim.due(resident) {
			err = dropPages(a.image)
		}
		if err != nil {
			a.log.Debug("trim own pages", "error", err)
			a.image = nil // not again
		}
	}
	a.symbols.Trim()
}

// nextTrimCheck returns how long trimLoop waits for its next look: a
// trimCheck while the start is not done (settled false) or the symbolizer
// loaded files since the look before (loading true), so that the pages of
// a burst of loads leave soon and GOMAXPROCS is lowered soon; otherwise
// trimInterval, the next trim, which takes in a load that came meanwhile.
// The agent's threads wake for it every few seconds instead of every
// second.
func nextTrimCheck(settled, loading bool) time.Duration {
	if !settled || loading {
		return trimCheck
	}
	return trimInterval
}

// trimLoop drops the symbol files' pages every trimInterval, or sooner
// when the symbolizer loaded files since, and the agent's own image's
// every imageInterval, until ctx is done.
func (a *Agent) trimLoop(ctx context.Context) {
	wait := trimCheck
	timer := time.NewTimer(wait)
	defer timer.Stop()
	loads := a.symbols.Stats().Loads
	var sinceTrim, sinceImage time.Duration
	procsSettled := a.cfg.MaxProcs <= 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if !procsSettled {
			procsSettled = a.settleProcs()
		}
		sinceTrim += wait
		sinceImage += wait
		n := a.symbols.Stats().Loads
		wait = nextTrimCheck(procsSettled, n != loads)
		timer.Reset(wait)
		if n == loads && sinceTrim < trimInterval {
			continue
		}
		loads, sinceTrim = n, 0
		now := time.Now()
		a.memLimit.adjust(now)
		if procsSettled {
			a.gcPace.pace(now)
		}
		image := sinceImage >= imageInterval
		if image {
			sinceImage = 0
		}
		a.trimPages(image)
	}
}

// settleProcs lowers GOMAXPROCS to --max-procs once the agent's start is
// done: once the processes running at start are given to the eBPF unwinder
// (their files identified, their tables built), which the workers do in
// parallel with the reading of records. It reports whether it is done.
//
// After its start the agent's work comes in small bursts (a batch of
// records every second or sooner, a process read, an export) that one CPU
// serves: more Ps only wake more threads for each burst (an idle P is
// handed to a spinning thread that finds no work, the collector starts a
// worker per P), a few hundred context switches a second. A P lowered by
// runtime.GOMAXPROCS also stops the runtime's own updates of GOMAXPROCS
// from the cgroup's CPU limit (Go 1.25), which a cap of a few CPUs makes
// moot.
func (a *Agent) settleProcs() bool {
	n, done := procsAfterStart(a.cfg.MaxProcs, runtime.GOMAXPROCS(0), a.tracer.Stats().PendingSyncs)
	if n > 0 {
		runtime.GOMAXPROCS(n)
		a.log.Debug("start done: GOMAXPROCS lowered", "gomaxprocs", n)
	}
	if done {
		// Without CAP_SYS_NICE the threads keep the kernel's
		// default slack (50 µs).
		threads, err := setTimerSlack("/proc", "/proc/self/task", threadSlack)
		a.log.Debug("start done: timer slack set", "slack", threadSlack, "threads", threads, "error", err)
	}
	return done
}

// procsAfterStart returns the GOMAXPROCS to set (0: none) for a cap of
// maxProcs, with current Ps and pending syncs still to do, and whether the
// start is done.
func procsAfterStart(maxProcs, current int, pending uint64) (int, bool) {
	if pending > 0 {
		return 0, false
	}
	if maxProcs <= 0 || current <= maxProcs {
		return 0, true
	}
	return maxProcs, true
}

// memoryLimit is the Go runtime's soft memory limit as the agent sets it:
// the configured limit (--memory-limit), raised to twice the live heap once
// the heap has held more than half of it for limitRaiseAfter. The
// configured limit keeps the garbage of a burst of table and symbol builds
// (seconds long) from inflating the RSS of a small agent; a host whose
// agent legitimately holds more (many runtimes' name caches full, many
// processes) must not have its collector run back to back against a limit
// below what is live, which would cost up to half the CPUs the runtime may
// use.
type memoryLimit struct {
	configured int64
	set        int64
	// highSince is when the live heap last rose above half the
	// configured limit (zero: it is below).
	highSince time.Time
}

// limitRaiseAfter is how long the live heap stays above half the configured
// limit before the limit follows it: longer than a burst of builds.
const limitRaiseAfter = 30 * time.Second

// next returns the limit for a live heap of live bytes at now.
func (m *memoryLimit) next(live uint64, now time.Time) int64 {
	l := int64(min(live, 1<<61))
	if 2*l <= m.configured {
		m.highSince = time.Time{}
		return m.configured
	}
	if m.highSince.IsZero() {
		m.highSince = now
	}
	if now.Sub(m.highSince) < limitRaiseAfter {
		return max(m.set, m.configured)
	}
	return 2 * l
}

// liveHeap is the runtime metric of the heap the last collection found live.
const liveHeap = "/gc/heap/live:bytes"

// adjust sets the runtime's limit to m.next of the live heap, when it
// changed.
func (m *memoryLimit) adjust(now time.Time) {
	if m.configured <= 0 {
		return
	}
	s := []rtmetrics.Sample{{Name: liveHeap}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return
	}
	if n := m.next(s[0].Value.Uint64(), now); n != m.set {
		debug.SetMemoryLimit(n)
		m.set = n
	}
}

// gcPacing lowers the garbage collector's target percent (GOGC) from the
// one set at start, once the start is done, when the agent allocates
// little: the heap may then grow over what is live by what the agent
// allocates in gcSpacing, within the configured percent and a floor.
//
// At a fixed percent the heap grows to that much over what is live before
// each collection however slowly it is allocated, and the runtime keeps
// the pages of that growth after a collection (the scavenger returns only
// what exceeds the next goal): the resident memory of an agent whose host
// changes little sits that much over its live heap, for tens of seconds
// between collections. Sized by the allocation rate, the growth is smaller
// on such a host, for a collection about every gcSpacing at most (a few
// milliseconds of CPU each); a busy agent, which collects more often than
// that anyway, keeps the configured percent.
type gcPacing struct {
	// floor and ceiling bound the percent; ceiling is the one set at
	// start. Pacing is off when ceiling <= floor.
	floor, ceiling int
	// set is the percent set now.
	set int
	// looks are the last gcWindow+1 looks, oldest first.
	looks []gcLook
}

// gcLook is the heap's cumulative allocation at a time.
type gcLook struct {
	at     time.Time
	allocs uint64
}

const (
	// gcSpacing is the interval between collections the percent is
	// sized for.
	gcSpacing = 10 * time.Second
	// gcWindow is how many looks (a look every trimInterval in the steady
	// state) the allocation rate that lowers the percent is measured over.
	gcWindow = 6
	// gcPercentStep is the least the percent is lowered by at once (but
	// to the floor), so that it does not follow every small change of
	// the rate.
	gcPercentStep = 5
)

// newGCPacing returns the pacing between percents floor and ceiling.
func newGCPacing(floor, ceiling int) gcPacing {
	return gcPacing{floor: floor, ceiling: ceiling, set: ceiling}
}

// on reports whether the pacing may change the percent.
func (g *gcPacing) on() bool {
	return g.floor > 0 && g.ceiling > g.floor
}

// percentFor returns the percent that lets a heap of live bytes, allocated
// at rate bytes a second, grow for gcSpacing, within floor..ceiling.
func (g *gcPacing) percentFor(rate float64, live uint64) int {
	if live == 0 {
		return g.ceiling
	}
	p := math.Ceil(100 * rate * gcSpacing.Seconds() / float64(live))
	if p >= float64(g.ceiling) {
		return g.ceiling
	}
	return max(int(p), g.floor)
}

// next takes in a look at now, allocs bytes allocated since the start
// with live bytes live, and returns the percent to set. The rate is the
// higher of the last interval's and of the window's: a burst of
// allocation raises the percent at the next look, a quiet spell lowers it
// only once it has lasted the window (and the window is full).
func (g *gcPacing) next(now time.Time, allocs, live uint64) int {
	g.looks = append(g.looks, gcLook{at: now, allocs: allocs})
	if len(g.looks) > gcWindow+1 {
		g.looks = append(g.looks[:0], g.looks[1:]...)
	}
	n := len(g.looks)
	if n < 2 {
		return g.set
	}
	rate := func(from, to gcLook) float64 {
		d := to.at.Sub(from.at).Seconds()
		if d <= 0 || to.allocs < from.allocs {
			return math.Inf(1)
		}
		return float64(to.allocs-from.allocs) / d
	}
	r := max(rate(g.looks[n-2], g.looks[n-1]), rate(g.looks[0], g.looks[n-1]))
	p := g.percentFor(r, live)
	switch {
	case p > g.set:
		g.set = p
	case n <= gcWindow:
		// Not lowered before the window is full: the first looks
		// after the start do not tell a quiet spell.
	case g.set-p >= gcPercentStep || p == g.floor:
		g.set = p
	}
	return g.set
}

// Runtime metrics the pacing reads.
const (
	heapAllocs = "/gc/heap/allocs:bytes"
	gcPercent  = "/gc/gogc:percent"
)

// currentGCPercent returns the garbage collector's target percent now
// (negative: off).
func currentGCPercent() int {
	s := []rtmetrics.Sample{{Name: gcPercent}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 {
		return -1
	}
	return int(min(s[0].Value.Uint64(), 1<<20))
}

// pace sets the garbage collector's percent from g.next of the heap now.
func (g *gcPacing) pace(now time.Time) {
	if !g.on() {
		return
	}
	s := []rtmetrics.Sample{{Name: heapAllocs}, {Name: liveHeap}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() != rtmetrics.KindUint64 || s[1].Value.Kind() != rtmetrics.KindUint64 {
		return
	}
	before := g.set
	if p := g.next(now, s[0].Value.Uint64(), s[1].Value.Uint64()); p != before {
		debug.SetGCPercent(p)
	}
}
