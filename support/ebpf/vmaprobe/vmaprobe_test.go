package vmaprobe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/tracer/procmaps"
)

// probe is one address looked up, and the mapping /proc/PID/maps puts it
// in (nil for an address between mappings).
type probe struct {
	addr uint64
	m    *procmaps.Mapping
}

// TestMapleWalkAgreesWithProcMaps looks up addresses of a live dynamically
// linked process (cat: its executable, libc, the dynamic loader, the vdso,
// its heap and stack, and the gaps between mappings) with the unwinder's
// maple-tree walk, in the process's own context, and checks each against
// /proc/PID/maps: the same mapping (start, end, file offset, device and
// inode), or none in a gap.
func TestMapleWalkAgreesWithProcMaps(t *testing.T) {
	testenv.RequireBPF(t)
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	pid := cmd.Process.Pid
	// Once cat waits for input, its address space is set up.
	if _, err := in.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	mappings := readMaps(t, pid)
	probes := probes(mappings)
	if len(probes) > int(VmaprobeProbeBoundsPROBE_ADDRS) {
		probes = probes[:VmaprobeProbeBoundsPROBE_ADDRS]
	}

	results := lookup(t, pid, probes, func() {
		// Each line makes cat read and write: system calls in its context.
		if _, err := in.Write([]byte("x\n")); err != nil {
			t.Fatal(err)
		}
	})
	if again := readMaps(t, pid); !slices.Equal(again, mappings) {
		t.Fatal("cat's mappings changed during the test")
	}

	kinds := map[string]int{}
	for i, p := range probes {
		if err := check(p, results[i]); err != nil {
			t.Errorf("address %#x: %v", p.addr, err)
			continue
		}
		if p.m != nil {
			kinds[kind(p.m)]++
		} else {
			kinds["gap"]++
		}
	}
	t.Logf("%d addresses agree with /proc/%d/maps: %v", len(probes), pid, kinds)
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{filepath.Base(exe), "libc", "loader", "[vdso]", "[stack]", "gap"} {
		if kinds[k] == 0 {
			t.Errorf("no address of %s checked", k)
		}
	}
}

// TestMapleWalkManyMappings looks up addresses of this process after it
// mapped 6,000 more pages apart, a tree of several levels: each agrees
// with /proc/self/maps.
func TestMapleWalkManyMappings(t *testing.T) {
	testenv.RequireBPF(t)
	const n = 6000
	page := os.Getpagesize()
	// Every other page of a reserved range, so that no two merge.
	region, err := unix.Mmap(-1, 0, 2*n*page, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(region)
	for i := 0; i < n; i++ {
		if err := unix.Mprotect(region[2*i*page:(2*i+1)*page], unix.PROT_READ); err != nil {
			t.Fatal(err)
		}
	}
	pid := os.Getpid()
	mappings := readMaps(t, pid)
	if len(mappings) < n {
		t.Fatalf("%d mappings, want at least %d", len(mappings), n)
	}
	// Every 37th mapping's addresses, and the gaps: up to the probe's bound.
	var all []probe
	for i, p := range probes(mappings) {
		if i%37 < 4 {
			all = append(all, p)
		}
	}
	all = all[:min(len(all), int(VmaprobeProbeBoundsPROBE_ADDRS))]
	results := lookup(t, pid, all, func() { os.Getppid() })
	after := map[procmaps.Mapping]bool{}
	var afterList []procmaps.Mapping
	for _, m := range readMaps(t, pid) {
		after[m] = true
		afterList = append(afterList, m)
	}
	mappedNow := func(addr uint64) bool {
		return slices.ContainsFunc(afterList, func(m procmaps.Mapping) bool { return addr >= m.Start && addr < m.End })
	}
	agree := 0
	for i, p := range all {
		if (p.m != nil && !after[*p.m]) || (p.m == nil && mappedNow(p.addr)) {
			// The Go runtime mapped or unmapped memory meanwhile (a
			// mapping changed, or a gap was filled: a new thread's
			// stack, the race detector's memory).
			continue
		}
		if err := check(p, results[i]); err != nil {
			t.Errorf("address %#x: %v", p.addr, err)
			continue
		}
		agree++
	}
	t.Logf("%d of %d addresses among %d mappings agree with /proc/self/maps", agree, len(all), len(mappings))
	if agree < len(all)*9/10 {
		t.Errorf("only %d of %d addresses checked", agree, len(all))
	}
}

// lookup runs the walk for each probe's address in process pid, calling
// poke until the process made a system call, and returns what it found.
func lookup(t *testing.T, pid int, probes []probe, poke func()) []VmaprobeProbeResult {
	t.Helper()
	spec, err := LoadVmaprobe()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables["target_tgid"].Set(uint32(pid)); err != nil {
		t.Fatal(err)
	}
	var objs VmaprobeObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			t.Fatalf("verifier: %+v", verr)
		}
		t.Fatal(err)
	}
	defer objs.Close()
	for i, p := range probes {
		if err := objs.ProbeAddrs.Put(uint32(i), p.addr); err != nil {
			t.Fatal(err)
		}
	}
	// The unused slots hold address 0, which no mapping covers.
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: objs.VmaProbe})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		poke()
		var runs uint32
		if err := objs.ProbeRuns.Lookup(uint32(0), &runs); err != nil {
			t.Fatal(err)
		}
		if runs > 0 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the probe did not run within 5 s")
		}
	}

	out := make([]VmaprobeProbeResult, len(probes))
	for i := range probes {
		if err := objs.ProbeResults.Lookup(uint32(i), &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// kind names what m maps, for the test's tally.
func kind(m *procmaps.Mapping) string {
	base := filepath.Base(m.Path)
	switch {
	case m.Inode == 0:
		return m.Path
	case len(base) >= 5 && base[:5] == "libc.":
		return "libc"
	case len(base) >= 6 && base[:6] == "ld-lin":
		return "loader"
	}
	return base
}

// check compares what the walk found for p with /proc/PID/maps.
func check(p probe, r VmaprobeProbeResult) error {
	if p.m == nil {
		if r.Found != 0 {
			return fmt.Errorf("between mappings, but the walk found %#x-%#x", r.Start, r.End)
		}
		return nil
	}
	m := p.m
	if r.Found == 0 {
		return fmt.Errorf("in %#x-%#x %s, not found", m.Start, m.End, m.Path)
	}
	dev := m.Major<<20 | m.Minor
	// /proc shows the offset and device of file mappings only.
	file := m.Inode != 0
	if r.Start != m.Start || r.End != m.End || r.Inode != m.Inode || file && (r.Pgoff<<12 != m.Offset || r.Dev != dev) {
		return fmt.Errorf("in %#x-%#x offset %#x dev %#x inode %d (%s), the walk found %#x-%#x offset %#x dev %#x inode %d",
			m.Start, m.End, m.Offset, dev, m.Inode, m.Path, r.Start, r.End, r.Pgoff<<12, r.Dev, r.Inode)
	}
	return nil
}

// readMaps returns the mappings of process pid, in the address space the
// maple tree holds (not the vsyscall page, which is no mapping of it).
func readMaps(t *testing.T, pid int) []procmaps.Mapping {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []procmaps.Mapping
	err = procmaps.Parse(f, func([4]byte) bool { return true }, func(m procmaps.Mapping) {
		if m.Path != "[vsyscall]" {
			out = append(out, m)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// probes returns the addresses to look up: the first, a middle and the
// last byte of each mapping, and the byte before each mapping when it is
// not mapped.
func probes(mappings []procmaps.Mapping) []probe {
	var out []probe
	for i := range mappings {
		m := &mappings[i]
		if m.Start > 0 && (i == 0 || mappings[i-1].End < m.Start) {
			out = append(out, probe{addr: m.Start - 1})
		}
		mid := m.Start + (m.End-m.Start)/2
		out = append(out, probe{m.Start, m}, probe{mid, m}, probe{m.End - 1, m})
	}
	return out
}
