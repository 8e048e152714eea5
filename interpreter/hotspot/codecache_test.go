package hotspot

import (
	"encoding/binary"
	"reflect"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/trace"
)

// TestCompiledCodeCache names every pc with debug information of the
// chain's C2-compiled methods in a live JVM (the newest JDK the host has;
// TestLive checks the decoders on each), as return addresses and as
// running pcs, through one instance (which keeps each method's debug
// data after its first pc) and through a new instance for each pc (which
// reads everything): the names agree, and beyond the first pc of each
// method the first reads the process only to check that the nmethod is
// the one sampled and, once, for the methods inlined there. It logs the
// CPU time per frame of both.
func TestCompiledCodeCache(t *testing.T) {
	if testing.Short() {
		t.Skip("starts JVMs")
	}
	classes := compileChain(t)
	jdks := testenv.JDKs(t)
	for _, jdk := range jdks[len(jdks)-1:] {
		t.Run(jdk.Name, func(t *testing.T) {
			j := startChain(t, jdk, classes, time.Second, "-XX:CompileCommand=quiet", "-XX:CompileCommand=dontinline,Leaf::work")
			syms := libjvmSymbols(t, j.pid, jdk.LibJVM())
			mem := interpreter.ProcessMemory(j.pid)
			l, err := ReadLayout(mem, func(name string) (uint64, bool) {
				a, ok := syms[name]
				return a, ok
			})
			if err != nil {
				t.Fatal(err)
			}
			fl, err := fieldsOf(l)
			if err != nil {
				t.Fatal(err)
			}
			pcd, err := PcDescLayoutOf(l)
			if err != nil {
				t.Fatal(err)
			}
			newInstance := func(m interpreter.Memory) *instance {
				return &instance{layout: l, f: fl, mem: m, names: NewCache(DefaultCacheConfig).newProcess(), enc: EncodingFor(l.Version()), pcDesc: pcd}
			}
			cached := &countingMemory{mem: mem}
			shared := newInstance(cached)
			f := collectCode(t, j, l)
			var frames, sharedReads, freshReads, firstReads int
			var sharedCPU, freshCPU time.Duration
			for _, nm := range f.NMethods {
				method := binary.LittleEndian.Uint64(nm.Header[fl.nmethodMethod:])
				id := binary.LittleEndian.Uint32(nm.Header[fl.nmethodCompileID:])
				mcheck, err := shared.methodCheckNow(method)
				if err != nil {
					t.Fatalf("%s: %v", nm.Method, err)
				}
				check := compiledCheck(id, mcheck)
				first := true
				for i := uint64(0); i+pcd.Size <= uint64(len(nm.PcDescs)); i += pcd.Size {
					off := int32(binary.LittleEndian.Uint32(nm.PcDescs[i+pcd.PCOffset:]))
					if off <= 0 {
						continue
					}
					for _, ret := range []bool{true, false} {
						fr := interpreter.Frame{Type: trace.FrameJVMCompiled, Addr: nm.Addr, Aux: uint32(nm.CodeBegin + uint64(off) - nm.Addr), Extra: check, ReturnAddress: ret}
						// A running pc one byte before the PcDesc's
						// takes it (FindPcDesc).
						if !ret {
							fr.Aux--
						}
						n := cached.reads
						c0 := testenv.ProcessCPU(t)
						got, err := shared.Frame(fr)
						sharedCPU += testenv.ProcessCPU(t) - c0
						if err != nil {
							t.Fatalf("%s at +%d: %v", nm.Method, off, err)
						}
						sharedReads += cached.reads - n
						if first {
							firstReads += cached.reads - n
							first = false
						}
						fresh := &countingMemory{mem: mem}
						c0 = testenv.ProcessCPU(t)
						want, err := newInstance(fresh).Frame(fr)
						freshCPU += testenv.ProcessCPU(t) - c0
						if err != nil {
							t.Fatalf("%s at +%d, new instance: %v", nm.Method, off, err)
						}
						freshReads += fresh.reads
						if !reflect.DeepEqual(got, want) {
							t.Errorf("%s at +%d (return address %v): %+v, named anew %+v", nm.Method, off, ret, got, want)
						}
						frames++
					}
				}
			}
			if frames == 0 {
				t.Fatal("no pc named")
			}
			t.Logf("%d frames of %d compiled methods: %d reads of the process with the code kept (%d for the first pc of each), %d reading each anew; CPU %v a frame against %v",
				frames, len(f.NMethods), sharedReads, firstReads, freshReads, sharedCPU/time.Duration(frames), freshCPU/time.Duration(frames))
			// Beyond the first pc of each method: the nmethod's check
			// (some seven reads), and each method inlined there once.
			if sharedReads-firstReads > freshReads/4 {
				t.Errorf("%d reads beyond the first pcs, of %d reading anew", sharedReads-firstReads, freshReads)
			}
		})
	}
}
