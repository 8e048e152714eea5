// Package testenv holds helpers shared by stackline's tests: the rule for
// skipping tests that need root and eBPF, and building workloads.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// RequireBPF skips t when the test cannot load eBPF programs (not root),
// unless STACKLINE_REQUIRE_BPF=1, in which case it fails: CI sets it so a
// skipped eBPF test never passes silently.
func RequireBPF(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("STACKLINE_REQUIRE_BPF") == "1" {
		t.Fatal("STACKLINE_REQUIRE_BPF=1 but the test is not running as root")
	}
	t.Skip("needs root to load eBPF programs")
}

// Run runs a command for the test and fails it with the command's output
// when it fails.
func Run(t testing.TB, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// RepoRoot returns the repository's root directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the repository")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildAgent builds cmd/stackline into dir and returns the binary's path.
func BuildAgent(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "stackline")
	Run(t, RepoRoot(t), "go", "build", "-o", bin, "./cmd/stackline")
	return bin
}
