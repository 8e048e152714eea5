package tracer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// capSet returns the effective-set mask of the named capabilities.
func capSet(t *testing.T, names ...string) uint64 {
	t.Helper()
	var mask uint64
	for _, n := range names {
		if n == "CAP_SYS_ADMIN" {
			mask |= 1 << capSysAdmin
			continue
		}
		found := false
		for _, c := range Capabilities() {
			if c.Name == n {
				mask |= 1 << c.bit
				found = true
			}
		}
		if !found {
			t.Fatalf("unknown capability %s", n)
		}
	}
	return mask
}

func TestMissingCapabilities(t *testing.T) {
	least := []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_SYSLOG"}
	for _, tc := range []struct {
		name string
		caps []string
		want []string // each a prefix of one entry, in order
	}{
		{"least", least, nil},
		{"least and optional", append(least, "CAP_CHECKPOINT_RESTORE", "CAP_SYS_NICE"), nil},
		{"none", nil, []string{"CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)", "CAP_SYS_PTRACE for", "CAP_DAC_READ_SEARCH for", "CAP_SYSLOG for"}},
		// CAP_SYS_ADMIN grants what CAP_BPF and CAP_PERFMON do, but
		// neither ptrace access, nor file read access, nor kernel
		// addresses.
		{"sys_admin only", []string{"CAP_SYS_ADMIN"}, []string{"CAP_SYS_PTRACE for", "CAP_DAC_READ_SEARCH for", "CAP_SYSLOG for"}},
		{"sys_admin for bpf", []string{"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_SYSLOG"}, nil},
		{"no perfmon", []string{"CAP_BPF", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_SYSLOG"}, []string{"CAP_PERFMON (or CAP_SYS_ADMIN) to load"}},
		{"no syslog", []string{"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}, []string{"CAP_SYSLOG for reading kernel symbol addresses"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := missingCapabilities(capSet(t, tc.caps...))
			if len(got) != len(tc.want) {
				t.Fatalf("missing %q, want %d entries starting %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("entry %d is %q, want prefix %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestCapabilitiesNumbers checks the table against linux/capability.h.
func TestCapabilitiesNumbers(t *testing.T) {
	want := map[string]uint{"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19, "CAP_SYSLOG": 34, "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40, "CAP_SYS_NICE": 23}
	got := map[string]uint{}
	for _, c := range Capabilities() {
		if c.For == "" {
			t.Errorf("%s: no use given", c.Name)
		}
		got[c.Name] = c.bit
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("capabilities %v, want %v", got, want)
	}
}

// writeStatus writes a proc root whose self/status holds the given text.
func writeStatus(t *testing.T, status string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "self", "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestCheckEnvironmentStatus: the capabilities come from ProcRoot's
// self/status, and a set without CAP_SYSLOG or a status without a
// readable CapEff stops the start with a message saying why.
func TestCheckEnvironmentStatus(t *testing.T) {
	caps := capSet(t, "CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")
	root := writeStatus(t, fmt.Sprintf("Name:\tstackline\nCapInh:\t0000000000000000\nCapEff:\t%016x\n", caps))
	err := CheckEnvironment(root)
	if !errors.Is(err, ErrPrivileges) || !strings.Contains(err.Error(), "CAP_SYSLOG") || strings.Contains(err.Error(), "CAP_BPF") {
		t.Errorf("CheckEnvironment = %v, want ErrPrivileges naming CAP_SYSLOG only", err)
	}
	for name, status := range map[string]string{
		"no CapEff":  "Name:\tstackline\nCapPrm:\t000001ffffffffff\n",
		"bad CapEff": "CapEff:\tzz\n",
		"empty":      "",
	} {
		err := CheckEnvironment(writeStatus(t, status))
		if err == nil || errors.Is(err, ErrPrivileges) || !strings.Contains(err.Error(), "CapEff") {
			t.Errorf("%s: CheckEnvironment = %v, want an error about CapEff", name, err)
		}
	}
	if err := CheckEnvironment(t.TempDir()); err == nil || !strings.Contains(err.Error(), "read capabilities") {
		t.Errorf("no status file: CheckEnvironment = %v", err)
	}
}

func TestKernelError(t *testing.T) {
	if err := kernelError(nil); err != nil {
		t.Errorf("kernelError(nil) = %v", err)
	}
	err := kernelError([]kernelFeature{{name: "bpf_loop", since: "5.17"}, {name: "ring buffer maps", since: "5.8"}})
	want := "tracer: unsupported kernel: the kernel lacks bpf_loop (Linux 5.17), ring buffer maps (Linux 5.8); stackline needs Linux " + MinimumKernel + " or later with BTF"
	if !errors.Is(err, ErrKernel) || err.Error() != want {
		t.Errorf("kernelError = %v\nwant %s", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("kernelError spans lines: %q", err)
	}
}

// TestMinimumKernel: MinimumKernel is the newest of the features' versions.
func TestMinimumKernel(t *testing.T) {
	newest := "0"
	for _, f := range kernelFeatures() {
		if versionLess(newest, f.since) {
			newest = f.since
		}
	}
	if newest != MinimumKernel {
		t.Errorf("newest feature is from Linux %s, MinimumKernel is %s", newest, MinimumKernel)
	}
}

func versionLess(a, b string) bool {
	var a1, a2, b1, b2 int
	fmt.Sscanf(a, "%d.%d", &a1, &a2)
	fmt.Sscanf(b, "%d.%d", &b1, &b2)
	return a1 < b1 || a1 == b1 && a2 < b2
}

// TestKernelFeatures probes the running kernel (6.x here): every feature is
// found, and a helper that no kernel has is reported missing through the
// same probe, so the check can fail.
func TestKernelFeatures(t *testing.T) {
	testenv.RequireBPF(t)
	for _, f := range kernelFeatures() {
		if err := f.probe(); err != nil {
			t.Errorf("%s: %v", f.name, err)
		}
	}
	if err := checkKernel(); err != nil {
		t.Errorf("checkKernel: %v", err)
	}
	if err := CheckEnvironment("/proc"); err != nil {
		t.Errorf("CheckEnvironment: %v", err)
	}
	// One past the last helper asm knows; the kernel knows none so new.
	bogus := asm.FnLoop + 1000
	f := helperFeature(ebpf.PerfEvent, bogus, "bogus", "99.0")
	if err := f.probe(); !errors.Is(err, ebpf.ErrNotSupported) {
		t.Errorf("probe of helper %v = %v, want ErrNotSupported", bogus, err)
	}
}

func FuzzEffectiveCaps(f *testing.F) {
	f.Add("Name:\tx\nCapEff:\t000001ffffffffff\n")
	f.Add("CapEff:\t0\n")
	f.Add("CapEff:\tzz\n")
	f.Add("CapEff:")
	f.Add("")
	f.Fuzz(func(t *testing.T, status string) {
		dir := t.TempDir()
		p := filepath.Join(dir, "status")
		if err := os.WriteFile(p, []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
		caps, err := effectiveCaps(p)
		if err != nil {
			if caps != 0 {
				t.Errorf("error %v with caps %x", err, caps)
			}
			return
		}
		if !strings.Contains(status, "CapEff:") {
			t.Errorf("caps %x from a status without CapEff", caps)
		}
		// Whatever was parsed, the check must not panic on it.
		missingCapabilities(caps)
	})
}
