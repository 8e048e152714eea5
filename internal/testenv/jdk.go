package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// JDK is a Java runtime installed on the host, with how to run its java.
type JDK struct {
	// Name names it in subtests: "jdk17", "jdk21", "jdk25".
	Name string
	// Version is its feature version (17, 21, 25).
	Version int
	// Home is its java.home: bin/java and lib/server/libjvm.so are in it.
	Home string
	// Java is the command that runs its java, program first: the java
	// launcher itself, or a dynamic loader with its arguments followed
	// by the launcher (JDK 21 from Debian trixie runs with trixie's C
	// library and loader).
	Java []string
}

// Command returns the command that runs java with args.
func (j JDK) Command(args ...string) *exec.Cmd {
	return exec.Command(j.Java[0], append(append([]string{}, j.Java[1:]...), args...)...)
}

// LibJVM returns the path of its server VM, libjvm.so.
func (j JDK) LibJVM() string { return filepath.Join(j.Home, "lib", "server", "libjvm.so") }

// The JDKs the tests run, where this host has them.
const (
	jdk17Home = "/usr/lib/jvm/java-17-openjdk-amd64" // Debian openjdk-17
	jdk25Home = "/usr/lib/jvm/temurin-25-jdk-amd64"  // Temurin 25, where present
	jdk21Dir  = "/var/cache/stackline/jdk21"         // support/runtimes/jdk21.sh
	jdk21Home = "usr/lib/jvm/java-21-openjdk-amd64"  // in jdk21Dir/root
	jdk21Lib  = "usr/lib/x86_64-linux-gnu"           // trixie's C library, in jdk21Dir/root
	jdk21Ld   = "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
)

// JDKs returns the JDKs the tests run: Debian's OpenJDK 17, OpenJDK 21
// from Debian trixie as support/runtimes/jdk21.sh installs it (in
// $STACKLINE_JDK21_CACHE, else /var/cache/stackline/jdk21), and Temurin 25
// where present. A missing 17 is Missing; a missing 21 is left out with a
// log line, or fails the test under STACKLINE_REQUIRE_BPF=1 (CI installs
// it); a missing 25 is logged and left out.
func JDKs(t testing.TB) []JDK {
	t.Helper()
	var out []JDK
	if j, ok := jdk17(); ok {
		out = append(out, j)
	} else {
		Missing(t, "no OpenJDK 17 at %s (apt-get install openjdk-17-jdk-headless)", jdk17Home)
	}
	if j, ok := jdk21(); ok {
		out = append(out, j)
	} else if os.Getenv("STACKLINE_REQUIRE_BPF") == "1" {
		t.Errorf("STACKLINE_REQUIRE_BPF=1 but there is no OpenJDK 21 in %s (run support/runtimes/jdk21.sh)", jdk21Cache())
	} else {
		t.Logf("no OpenJDK 21 in %s (support/runtimes/jdk21.sh installs it): JDK 21 not tested", jdk21Cache())
	}
	if j, ok := jdk25(); ok {
		out = append(out, j)
	} else {
		t.Logf("no Temurin 25 at %s: JDK 25 not tested", jdk25Home)
	}
	return out
}

// InstalledJDKs returns those of the JDKs of JDKs that are installed,
// without reporting the others (for fuzz seeds).
func InstalledJDKs() []JDK {
	var out []JDK
	for _, f := range []func() (JDK, bool){jdk17, jdk21, jdk25} {
		if j, ok := f(); ok {
			out = append(out, j)
		}
	}
	return out
}

// JavaTools returns the javac and jcmd of the host's JDK 17, which
// compile the tests' Java programs (with --release 17, so every JDK runs
// them) and query any of the JDKs' VMs; Missing when there are none.
func JavaTools(t testing.TB) (javac, jcmd string) {
	t.Helper()
	javac = filepath.Join(jdk17Home, "bin", "javac")
	jcmd = filepath.Join(jdk17Home, "bin", "jcmd")
	for _, p := range []string{javac, jcmd} {
		if !executable(p) {
			Missing(t, "no %s (apt-get install openjdk-17-jdk-headless)", p)
		}
	}
	return javac, jcmd
}

func jdk17() (JDK, bool) {
	java := filepath.Join(jdk17Home, "bin", "java")
	if !executable(java) {
		return JDK{}, false
	}
	return JDK{Name: "jdk17", Version: 17, Home: jdk17Home, Java: []string{java}}, true
}

func jdk21Cache() string {
	if d := os.Getenv("STACKLINE_JDK21_CACHE"); d != "" {
		return d
	}
	return jdk21Dir
}

func jdk21() (JDK, bool) {
	root := filepath.Join(jdk21Cache(), "root")
	home := filepath.Join(root, jdk21Home)
	java := filepath.Join(home, "bin", "java")
	ld := filepath.Join(root, jdk21Ld)
	if !executable(java) || !executable(ld) {
		return JDK{}, false
	}
	libs := strings.Join([]string{filepath.Join(root, jdk21Lib), filepath.Join(home, "lib"), filepath.Join(home, "lib", "server")}, ":")
	return JDK{Name: "jdk21", Version: 21, Home: home, Java: []string{ld, "--library-path", libs, java}}, true
}

func jdk25() (JDK, bool) {
	java := filepath.Join(jdk25Home, "bin", "java")
	if !executable(java) || releaseVersion(jdk25Home) != "25" {
		return JDK{}, false
	}
	return JDK{Name: "jdk25", Version: 25, Home: jdk25Home, Java: []string{java}}, true
}

// releaseVersion returns the feature version the JDK's release file
// states ("25" for JAVA_VERSION="25.0.3"); "" when it states none.
func releaseVersion(home string) string {
	f, err := os.Open(filepath.Join(home, "release"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "JAVA_VERSION=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"`)
		feature, _, _ := strings.Cut(v, ".")
		return feature
	}
	return ""
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
