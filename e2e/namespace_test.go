package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
)

// TestMountNamespaces: two processes run different binaries at the same
// path, each in a mount namespace of its own where a tmpfs covers a
// directory that is empty on the host. Each is named from its own binary.
func TestMountNamespaces(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	root := testenv.RepoRoot(t)
	// The same source, with the chain's functions renamed in the second.
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	testenv.Run(t, root, "gcc", "-O0", "-fno-omit-frame-pointer", "-o", a, "e2e/testdata/workload.c")
	testenv.Run(t, root, "gcc", "-O0", "-fno-omit-frame-pointer", "-Dfp_gamma=ns_gamma", "-Dfp_beta=ns_beta", "-Dfp_alpha=ns_alpha", "-o", b, "e2e/testdata/workload.c")

	// Empty on the host; each namespace mounts its own tmpfs over it.
	mnt := "/tmp/stackline-ns-test"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mnt)
	start := func(src string) *exec.Cmd {
		script := "mount -t tmpfs none " + mnt + " && cp " + src + " " + mnt + "/app && exec " + mnt + "/app chain"
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	pa, pb := start(a), start(b)
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(mnt + "/app"); err == nil {
		t.Fatal("the binary is visible on the host: the test proves nothing")
	}
	for _, p := range []*exec.Cmd{pa, pb} {
		if exe, _ := os.Readlink(filepath.Join("/proc", itoa(p.Process.Pid), "exe")); exe != mnt+"/app" {
			t.Fatalf("process %d runs %q, not %s/app", p.Process.Pid, exe, mnt)
		}
	}

	rcv, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Stop()
	runAgent(t, bin, 5*time.Second, "--collection-agent", rcv.Addr(), "--disable-tls",
		"--samples-per-second", "49", "--reporter-interval", "1s")
	reqs := rcv.Requests()
	for i, req := range reqs {
		if err := otlpcheck.Validate(req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	for _, c := range []struct {
		pid   int
		chain []string
	}{
		{pa.Process.Pid, []string{"fp_gamma", "fp_beta", "fp_alpha", "main"}},
		{pb.Process.Pid, []string{"ns_gamma", "ns_beta", "ns_alpha", "main"}},
	} {
		n, share := chainShare(reqs, c.pid, c.chain)
		t.Logf("pid %d: %d samples, %.1f%% with %v", c.pid, n, 100*share, c.chain)
		if n < 50 || share < 0.9 {
			t.Errorf("pid %d: %d samples, %.1f%% with %v, want >= 90%%", c.pid, n, 100*share, c.chain)
		}
	}
}
