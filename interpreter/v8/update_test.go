package v8

import (
	"bytes"
	"debug/elf"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// update rewrites testdata/node*.consts from the installed node binaries.
var (
	update = flag.Bool("update", false, "rewrite testdata/node*.consts from the installed nodes")
	// dumpFile and dumpName add one more file to -update: node 18's
	// libnode.so.108, which the tests cannot run (see testenv.NodeMajors).
	dumpFile = flag.String("dump-file", "", "with -update, also dump this V8 file")
	dumpName = flag.String("dump-name", "", "with -dump-file, the testdata name (node18)")
)

// TestUpdateConstants dumps the constants of each installed node major into
// testdata when run with -update.
func TestUpdateConstants(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata")
	}
	nodes := testenv.Nodes(t)
	if *dumpFile != "" {
		nodes = append(nodes, testenv.Node{Name: *dumpName, V8File: *dumpFile})
	}
	for _, n := range nodes {
		ef, err := elf.Open(n.V8File)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ReadConstants(ef)
		ef.Close()
		if err != nil {
			t.Fatalf("%s: %v", n.V8File, err)
		}
		var b bytes.Buffer
		if err := c.Dump(&b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", n.Name+".consts"), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
