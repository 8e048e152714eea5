package e2e

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
)

// TestStartWithoutPrivileges: without root, or as root without the eBPF
// capabilities, the agent stops at once with exit code 77 and says which
// capability is missing.
func TestStartWithoutPrivileges(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	bin := testenv.BuildAgent(t, dir)
	out := filepath.Join(dir, "out")
	for name, prefix := range map[string][]string{
		"not root":             {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"},
		"root without CAP_BPF": {"setpriv", "--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin"},
	} {
		args := append(prefix, bin, "--output-dir", out)
		cmd := exec.Command(args[0], args[1:]...)
		msg, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 77 {
			t.Errorf("%s: %v, want exit code 77\n%s", name, err, msg)
			continue
		}
		if !strings.Contains(string(msg), "CAP_BPF") || !strings.Contains(string(msg), "privileged") {
			t.Errorf("%s: message does not say what is missing:\n%s", name, msg)
		}
	}
	if name := "flag out of range"; true {
		msg, err := exec.Command(bin, "--samples-per-second", "5000").CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(msg), "--samples-per-second: 5000 is out of range 1..1000") {
			t.Errorf("%s: %v\n%s", name, err, msg)
		}
	}
}

// TestBackendDown: the backend is unreachable for the first seconds; every
// interval still arrives once it is up, in order, with no gap in time.
func TestBackendDown(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	startWorkloads(t, dir)
	// Reserve a free port, then leave it closed until the receiver starts.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var rcv *otlptest.Receiver
	go func() {
		time.Sleep(4 * time.Second)
		r, err := otlptest.Start(addr)
		if err != nil {
			t.Errorf("receiver: %v", err)
			return
		}
		rcv = r
	}()
	runAgent(t, bin, 8*time.Second, "--collection-agent", addr, "--disable-tls", "--reporter-interval", "1s")
	if rcv == nil {
		t.Fatal("receiver never started")
	}
	defer rcv.Stop()

	reqs := rcv.Requests()
	if len(reqs) < 7 {
		t.Fatalf("%d requests for an 8s run at a 1s interval", len(reqs))
	}
	// Intervals follow each other without a gap. A profile's range may
	// start a little before its interval (widened for samples taken
	// before the switch and read after it), so consecutive requests may
	// overlap, but never leave a gap or go backwards.
	var prevStart, prevEnd uint64
	for i, req := range reqs {
		if err := otlpcheck.Validate(req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		start, end := ^uint64(0), uint64(0)
		for _, rp := range req.ResourceProfiles {
			p := rp.ScopeProfiles[0].Profiles[0]
			start, end = min(start, p.TimeUnixNano), max(end, p.TimeUnixNano+p.DurationNano)
		}
		if i > 0 && (start > prevEnd || start < prevStart || end <= prevEnd) {
			t.Errorf("request %d covers [%d, %d), the previous one [%d, %d): an interval is missing or out of order", i, start, end, prevStart, prevEnd)
		}
		prevStart, prevEnd = start, end
	}
}
