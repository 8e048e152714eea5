package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// ErrPrivileges is wrapped by the error New returns when the process lacks a
// privilege it needs.
var ErrPrivileges = errors.New("insufficient privileges")

// ErrKernel is wrapped by the error New returns when the running kernel
// lacks a feature the eBPF programs use.
var ErrKernel = errors.New("unsupported kernel")

// MinimumKernel is the oldest Linux version that has every kernel feature
// stackline uses (bpf_loop and bpf_find_vma came last, in 5.17).
const MinimumKernel = "5.17"

// Capability is a Linux capability stackline uses.
type Capability struct {
	// Name is the capability's name in capabilities(7), e.g. "CAP_BPF".
	Name string
	// For says what stackline does with it.
	For string
	// Optional is set when stackline starts without it and does less.
	Optional bool

	bit uint // its number in linux/capability.h
}

// Capabilities returns the capabilities stackline uses when it runs without
// CAP_SYS_ADMIN: the least privileges to grant it (with the host PID
// namespace). CheckEnvironment refuses to start without the ones that are
// not Optional.
func Capabilities() []Capability {
	return []Capability{
		{Name: "CAP_BPF", bit: 39, For: "loading the eBPF programs and creating their maps"},
		{Name: "CAP_PERFMON", bit: 38, For: "opening a perf event per CPU and using tracing helpers in eBPF"},
		{Name: "CAP_SYS_PTRACE", bit: 19, For: "reading other processes' /proc/PID/maps and /proc/PID/root, and Python state from their memory (process_vm_readv)"},
		{Name: "CAP_DAC_READ_SEARCH", bit: 2, For: "opening other processes' executables and libraries whatever their file permissions"},
		{Name: "CAP_SYSLOG", bit: 34, For: "reading kernel symbol addresses from /proc/kallsyms"},
		{Name: "CAP_CHECKPOINT_RESTORE", bit: 40, Optional: true, For: "opening mapped files through /proc/PID/map_files: files deleted or replaced since they were mapped, and memfd executables"},
		{Name: "CAP_SYS_NICE", bit: 23, Optional: true, For: "setting its own threads' timer slack to 1 ms once started, which spares the Go runtime's monitor thread most of its wake-ups"},
	}
}

// capSysAdmin stands in for CAP_BPF, CAP_PERFMON and CAP_CHECKPOINT_RESTORE
// (not for the others), and also lets stackline list the loaded BPF
// programs to name their frames in kernel stacks.
const capSysAdmin = 21

// CheckEnvironment says, before anything is loaded, which capability or
// kernel feature is missing, rather than letting a bare EPERM or a verifier
// message surface later. The error wraps ErrPrivileges when a capability is
// missing and ErrKernel when a kernel feature is. New calls it; callers that
// prepare other parts first (kernel symbols) call it earlier.
func CheckEnvironment(procRoot string) error {
	caps, err := effectiveCaps(procRoot + "/self/status")
	if err != nil {
		return fmt.Errorf("tracer: %w", err)
	}
	if missing := missingCapabilities(caps); len(missing) > 0 {
		return privilegesError(missing, os.Geteuid() == 0)
	}
	return checkKernel()
}

// missingCapabilities lists the required capabilities that the effective
// set caps lacks, each as "CAP_X to ...". CAP_BPF and CAP_PERFMON are named
// together, as CAP_SYS_ADMIN grants both.
func missingCapabilities(caps uint64) []string {
	has := func(bit uint) bool { return caps&(1<<bit) != 0 }
	var missing []string
	var bpf []string
	for _, c := range Capabilities() {
		switch {
		case c.Optional || has(c.bit):
		case c.Name == "CAP_BPF" || c.Name == "CAP_PERFMON":
			if !has(capSysAdmin) {
				bpf = append(bpf, c.Name)
			}
		default:
			missing = append(missing, c.Name+" for "+c.For)
		}
	}
	if len(bpf) > 0 {
		missing = append([]string{strings.Join(bpf, " and ") + " (or CAP_SYS_ADMIN) to load eBPF programs and open perf events"}, missing...)
	}
	return missing
}

func privilegesError(missing []string, root bool) error {
	who := "this process"
	if !root {
		who = "this process (not root)"
	}
	return fmt.Errorf("tracer: %w: %s lacks %s; run as root, in a privileged container, or with the capabilities in README's \"Least privileges\"",
		ErrPrivileges, who, strings.Join(missing, "; "))
}

func effectiveCaps(statusPath string) (uint64, error) {
	f, err := os.Open(statusPath)
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("parse CapEff %q: %w", v, err)
			}
			return caps, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return 0, fmt.Errorf("no CapEff line in %s", statusPath)
}

// kernelFeature is something the eBPF programs use that a kernel may lack.
type kernelFeature struct {
	name  string // as the error names it
	since string // the first Linux version that has it
	probe func() error
}

// kernelFeatures lists what support/ebpf uses, each with a probe that
// returns an error wrapping ebpf.ErrNotSupported when the kernel lacks it.
// Helpers are probed for the program type that calls them.
func kernelFeatures() []kernelFeature {
	helper, progType, mapType := helperFeature, progTypeFeature, mapTypeFeature
	return []kernelFeature{
		{"BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)", "5.4", haveKernelBTF},
		progType(ebpf.PerfEvent, "perf_event programs", "4.9"),
		progType(ebpf.RawTracepoint, "raw tracepoint programs", "4.17"),
		mapType(ebpf.RingBuf, "ring buffer maps", "5.8"),
		mapType(ebpf.HashOfMaps, "hash-of-maps maps", "4.12"),
		mapType(ebpf.LRUHash, "LRU hash maps", "4.10"),
		mapType(ebpf.ProgramArray, "program array maps (tail calls)", "4.2"),
		mapType(ebpf.PerCPUArray, "per-CPU array maps", "4.6"),
		helper(ebpf.PerfEvent, asm.FnLoop, "bpf_loop", "5.17"),
		helper(ebpf.PerfEvent, asm.FnFindVma, "bpf_find_vma", "5.17"),
		helper(ebpf.PerfEvent, asm.FnTaskPtRegs, "bpf_task_pt_regs", "5.15"),
		helper(ebpf.PerfEvent, asm.FnGetCurrentTaskBtf, "bpf_get_current_task_btf", "5.11"),
		helper(ebpf.PerfEvent, asm.FnRingbufOutput, "bpf_ringbuf_output", "5.8"),
		helper(ebpf.PerfEvent, asm.FnRingbufQuery, "bpf_ringbuf_query", "5.8"),
		helper(ebpf.PerfEvent, asm.FnProbeReadUser, "bpf_probe_read_user", "5.5"),
		helper(ebpf.PerfEvent, asm.FnProbeReadKernel, "bpf_probe_read_kernel", "5.5"),
		helper(ebpf.PerfEvent, asm.FnGetStack, "bpf_get_stack", "4.18"),
		helper(ebpf.RawTracepoint, asm.FnRingbufOutput, "bpf_ringbuf_output in raw tracepoints", "5.8"),
	}
}

// helperFeature is the eBPF helper fn, called from programs of type pt.
func helperFeature(pt ebpf.ProgramType, fn asm.BuiltinFunc, name, since string) kernelFeature {
	return kernelFeature{name, since, func() error { return features.HaveProgramHelper(pt, fn) }}
}

func progTypeFeature(pt ebpf.ProgramType, name, since string) kernelFeature {
	return kernelFeature{name, since, func() error { return features.HaveProgramType(pt) }}
}

func mapTypeFeature(mt ebpf.MapType, name, since string) kernelFeature {
	return kernelFeature{name, since, func() error { return features.HaveMapType(mt) }}
}

func haveKernelBTF() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("%w: %w", ebpf.ErrNotSupported, err)
	}
	return nil
}

// checkKernel probes every kernel feature and names, in one line, all the
// ones missing. A probe that cannot decide (an error other than
// ebpf.ErrNotSupported) does not stop the start: loading the programs then
// fails with the precise cause if the feature is really missing.
func checkKernel() error {
	var missing []kernelFeature
	for _, f := range kernelFeatures() {
		if err := f.probe(); errors.Is(err, ebpf.ErrNotSupported) {
			missing = append(missing, f)
		}
	}
	return kernelError(missing)
}

// kernelError returns nil when nothing is missing, else an error naming
// every missing feature with the Linux version that brought it.
func kernelError(missing []kernelFeature) error {
	if len(missing) == 0 {
		return nil
	}
	names := make([]string, len(missing))
	for i, f := range missing {
		names[i] = fmt.Sprintf("%s (Linux %s)", f.name, f.since)
	}
	return fmt.Errorf("tracer: %w: the kernel lacks %s; stackline needs Linux %s or later with BTF",
		ErrKernel, strings.Join(names, ", "), MinimumKernel)
}
