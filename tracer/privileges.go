package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Capabilities stackline uses (linux/capability.h).
const (
	capDACReadSearch = 2
	capSysPtrace     = 19
	capSysAdmin      = 21
	capSyslog        = 34
	capPerfmon       = 38
	capBPF           = 39
)

// ErrPrivileges is wrapped by the error New returns when the process lacks a
// privilege it needs.
var ErrPrivileges = errors.New("insufficient privileges")

// CheckEnvironment says, before anything is loaded, which capability or
// kernel feature is missing, rather than letting a bare EPERM or a verifier
// message surface later. The error wraps ErrPrivileges when a capability is
// missing. New calls it; callers that prepare other parts first (kernel
// symbols) call it earlier.
func CheckEnvironment(procRoot string) error {
	if err := checkPrivileges(procRoot); err != nil {
		return err
	}
	return checkKernel()
}

func checkPrivileges(procRoot string) error {
	caps, err := effectiveCaps(procRoot + "/self/status")
	if err != nil {
		return fmt.Errorf("tracer: %w", err)
	}
	has := func(c uint) bool { return caps&(1<<c) != 0 }
	var missing []string
	if !has(capSysAdmin) && !(has(capBPF) && has(capPerfmon)) {
		missing = append(missing, "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to load eBPF programs and open perf events")
	}
	if !has(capSysAdmin) && !has(capSysPtrace) {
		missing = append(missing, "CAP_SYS_PTRACE (or CAP_SYS_ADMIN) to read other processes' mappings and mapped files")
	}
	if !has(capDACReadSearch) && !has(capSysAdmin) {
		missing = append(missing, "CAP_DAC_READ_SEARCH to open other processes' executables")
	}
	if !has(capSyslog) && !has(capSysAdmin) {
		missing = append(missing, "CAP_SYSLOG to read kernel symbol addresses")
	}
	if len(missing) > 0 {
		who := "this process"
		if os.Geteuid() != 0 {
			who = "this process (not root)"
		}
		return fmt.Errorf("tracer: %w: %s lacks %s; run as root or in a privileged container", ErrPrivileges, who, strings.Join(missing, "; "))
	}
	return nil
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
	return 0, fmt.Errorf("no CapEff line in %s", statusPath)
}

// checkKernel says which kernel feature is missing.
func checkKernel() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("tracer: the kernel exposes no BTF (/sys/kernel/btf/vmlinux: %w); stackline needs a kernel built with CONFIG_DEBUG_INFO_BTF (5.8 or later)", err)
	}
	return nil
}
