package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Missing reports that something a test needs is not installed: the test
// is skipped, unless STACKLINE_REQUIRE_BPF=1 (CI, which installs all the
// tests use), where it fails, so a test never passes by skipping there.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("STACKLINE_REQUIRE_BPF") == "1" {
		t.Fatalf("STACKLINE_REQUIRE_BPF=1 but %s", msg)
	}
	t.Skip(msg)
}

// GoTool returns the go command: from PATH, else the one of the Go
// installation that built the test (sudo often resets PATH).
func GoTool() string { return goTool() }

// Libc returns the path of the C library (libc.so.6) the system's programs
// load, as the dynamic loader maps it into a process; Missing when there
// is none.
func Libc(t testing.TB) string {
	t.Helper()
	p := mappedLibs()["libc.so.6"]
	if p == "" {
		Missing(t, "no dynamically linked C library (libc.so.6) found")
	}
	return p
}

// DynamicLoader returns the path of the dynamic loader (ld-linux) the
// system's programs use; Missing when there is none.
func DynamicLoader(t testing.TB) string {
	t.Helper()
	for name, p := range mappedLibs() {
		if strings.HasPrefix(name, "ld-linux") {
			return p
		}
	}
	Missing(t, "no dynamic loader (ld-linux) found")
	return ""
}

var mapped struct {
	once sync.Once
	libs map[string]string // base name -> path
}

// mappedLibs returns the shared libraries a dynamically linked system
// program (cat) maps, by base name.
func mappedLibs() map[string]string {
	mapped.once.Do(func() {
		mapped.libs = map[string]string{}
		out, err := exec.Command("cat", "/proc/self/maps").Output()
		if err != nil {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 6 || !strings.HasPrefix(f[5], "/") || !strings.Contains(f[5], ".so") {
				continue
			}
			mapped.libs[filepath.Base(f[5])] = f[5]
		}
	})
	return mapped.libs
}

// Python is a CPython interpreter installed on the host.
type Python struct {
	// Name names it in subtests: "system-3.11", "pyenv-3.12".
	Name string
	// Path is its python3.X executable (not a python3 link to it).
	Path string
	// Minor is X in 3.X.
	Minor int
}

// SystemPython returns the system's python3 (the first on PATH, then in
// /usr/local/bin or /usr/bin, that is not a pyenv shim), its links followed
// to the python3.X executable; Missing when there is none.
func SystemPython(t testing.TB) Python {
	t.Helper()
	py, err := systemPython()
	if err != nil {
		Missing(t, "no system python3: %v", err)
	}
	return py
}

var pyExe = regexp.MustCompile(`^python3\.(\d+)$`)

func systemPython() (Python, error) {
	pyenv := pyenvRoot()
	dirs := append(filepath.SplitList(os.Getenv("PATH")), "/usr/local/bin", "/usr/bin")
	for _, dir := range dirs {
		if dir == "" || pyenv != "" && strings.HasPrefix(dir, pyenv+string(filepath.Separator)) {
			continue
		}
		p, err := filepath.EvalSymlinks(filepath.Join(dir, "python3"))
		if err != nil {
			continue
		}
		m := pyExe.FindStringSubmatch(filepath.Base(p))
		if m == nil {
			continue
		}
		minor, _ := strconv.Atoi(m[1])
		return Python{Name: fmt.Sprintf("system-3.%d", minor), Path: p, Minor: minor}, nil
	}
	return Python{}, errors.New("no python3 linked to a python3.X executable outside pyenv")
}

// SystemLibpython returns the shared libpython3.X.so.1.0 of the system
// python3 (the one an embedding program links); Missing when there is
// none.
func SystemLibpython(t testing.TB) string {
	t.Helper()
	py := SystemPython(t)
	out, err := exec.Command(py.Path, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))").Output()
	if err != nil {
		Missing(t, "%s: no LIBDIR: %v", py.Path, err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), fmt.Sprintf("libpython3.%d.so.1.0", py.Minor))
	if _, err := os.Stat(p); err != nil {
		Missing(t, "no shared libpython3.%d: %v", py.Minor, err)
	}
	return p
}

// Pythons returns the Pythons the tests run: the system python3 and the
// pyenv installs of 3.lo to 3.hi. A pyenv version not installed is left
// out with a log line, or fails the test under STACKLINE_REQUIRE_BPF=1
// (CI); a missing system python3 is Missing.
func Pythons(t testing.TB, lo, hi int) []Python {
	t.Helper()
	out := []Python{SystemPython(t)}
	for minor := lo; minor <= hi; minor++ {
		p := PyenvPython(minor)
		if p == "" {
			if os.Getenv("STACKLINE_REQUIRE_BPF") == "1" {
				t.Errorf("STACKLINE_REQUIRE_BPF=1 but pyenv python3.%d is not installed", minor)
			} else {
				t.Logf("pyenv python3.%d not installed: not tested", minor)
			}
			continue
		}
		out = append(out, Python{Name: fmt.Sprintf("pyenv-3.%d", minor), Path: p, Minor: minor})
	}
	return out
}

// InstalledPythons returns those of the Pythons of Pythons that are
// installed, without reporting the others (for fuzz seeds).
func InstalledPythons(lo, hi int) []Python {
	var out []Python
	if py, err := systemPython(); err == nil {
		out = append(out, py)
	}
	for minor := lo; minor <= hi; minor++ {
		if p := PyenvPython(minor); p != "" {
			out = append(out, Python{Name: fmt.Sprintf("pyenv-3.%d", minor), Path: p, Minor: minor})
		}
	}
	return out
}
