// Package testenv holds helpers shared by stackline's tests: the rule for
// skipping tests that need root and eBPF, and building workloads.
package testenv

import (
	"fmt"
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

// BuildGo builds a Go program made of the one file main.go with source src
// (a module of its own, cgo enabled only when cgo is true) and returns the
// binary's path. flags go to go build.
func BuildGo(t testing.TB, src string, cgo bool, flags ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module prog\n\ngo 1.22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prog")
	cmd := exec.Command(goTool(), append(append([]string{"build"}, flags...), "-o", bin, ".")...)
	cmd.Dir = dir
	cgoEnabled := "CGO_ENABLED=0"
	if cgo {
		cgoEnabled = "CGO_ENABLED=1"
	}
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", cgoEnabled)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// goTool returns the go command. go test puts its own GOROOT/bin first on
// the test's PATH, so this is the Go that runs the test even when sudo
// reset PATH.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// PyenvPython returns the python3.minor executable of the pyenv install of
// that version (under $PYENV_ROOT, else ~/.pyenv), or "" when there is
// none.
func PyenvPython(minor int) string {
	return pyenvFile(minor, "bin", fmt.Sprintf("python3.%d", minor))
}

// PyenvLibpython returns the libpython3.minor.so.1.0 of the pyenv install
// of that version, or "" when there is none.
func PyenvLibpython(minor int) string {
	return pyenvFile(minor, "lib", fmt.Sprintf("libpython3.%d.so.1.0", minor))
}

// pyenvFile returns dir/name inside the first pyenv install of Python
// 3.minor that has it, or "".
func pyenvFile(minor int, dir, name string) string {
	root := pyenvRoot()
	if root == "" {
		return ""
	}
	installs, _ := filepath.Glob(filepath.Join(root, "versions", fmt.Sprintf("3.%d.*", minor)))
	for _, v := range installs {
		p := filepath.Join(v, dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// pyenvRoot returns where pyenv installs Pythons: $PYENV_ROOT, else
// ~/.pyenv; "" when neither can be told.
func pyenvRoot() string {
	if root := os.Getenv("PYENV_ROOT"); root != "" {
		return root
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".pyenv")
}
