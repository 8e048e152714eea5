package hotspot

import (
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
)

// TestLive runs testdata/java/Chain.java on each JDK the host has, reads
// the VM's layout from its memory and its C2-compiled chain, and runs the
// fixture tests' checks on what it read: the decoders work on the JDKs
// installed now, not only on the ones the fixtures were dumped from.
func TestLive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts JVMs")
	}
	classes := compileChain(t)
	for _, jdk := range testenv.JDKs(t) {
		t.Run(jdk.Name, func(t *testing.T) {
			j := startChain(t, jdk, classes, time.Second, "-XX:CompileCommand=quiet", "-XX:CompileCommand=dontinline,Leaf::work")
			syms := libjvmSymbols(t, j.pid, jdk.LibJVM())
			l, err := ReadLayout(interpreter.ProcessMemory(j.pid), func(name string) (uint64, bool) {
				a, ok := syms[name]
				return a, ok
			})
			if err != nil {
				t.Fatal(err)
			}
			if l.Version() != jdk.Version {
				t.Errorf("Version() = %d, want %d", l.Version(), jdk.Version)
			}
			f := collectCode(t, j, l)
			checkLineTables(t, l, f)
			checkScopes(t, l, f)
			checkSections(t, l, f)
			checkConstMethods(t, l, f)
		})
	}
}
