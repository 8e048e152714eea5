package ebpf

import (
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// BenchmarkProgramLoad loads each program on its own (with the maps it
// uses) and reports what the verifier did: instructions processed, states,
// and the CPU time of the load, which is nearly all verification. The
// kernel's BTF is decoded once, before, as the tracer decodes it once for
// all its programs; BenchmarkKernelBTF measures that.
func BenchmarkProgramLoad(b *testing.B) {
	testenv.RequireBPF(b)
	spec, err := LoadStackline()
	if err != nil {
		b.Fatal(err)
	}
	cache := btf.NewCache()
	if _, err := cache.Kernel(); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"sample", "unwind_native", "process_exit", "process_exec", "offcpu_switch", "offcpu_resume"} {
		b.Run(name, func(b *testing.B) {
			var insns, states, peak float64
			var cpu time.Duration
			for range b.N {
				coll, cpuUsed, err := loadOne(spec, name, cache)
				if err != nil {
					b.Fatal(err)
				}
				cpu += cpuUsed
				insns, states, peak = verifierStats(coll.Programs[name].VerifierLog)
				coll.Close()
			}
			b.ReportMetric(insns, "insns")
			b.ReportMetric(states, "states")
			b.ReportMetric(peak, "peak-states")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/load")
		})
	}
}

// loadOne loads program name of spec with the maps it references, and
// returns the CPU time of the calling thread spent doing so (the
// verifier's in the kernel and cilium/ebpf's own, which includes
// relocating against the kernel's BTF, decoded in cache).
func loadOne(spec *ebpf.CollectionSpec, name string, cache *btf.Cache) (*ebpf.Collection, time.Duration, error) {
	s := spec.Copy()
	for n := range s.Programs {
		if n != name {
			delete(s.Programs, n)
		}
	}
	// Create the maps first: only the program load is timed.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	maps := map[string]*ebpf.Map{}
	for n, ms := range s.Maps {
		if ms.Type == ebpf.ProgramArray || strings.HasPrefix(n, ".") {
			continue
		}
		m, err := ebpf.NewMap(ms)
		if err != nil {
			return nil, 0, err
		}
		maps[n] = m
	}
	before := threadCPU()
	coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{
		MapReplacements: maps,
		Cache:           cache,
		Programs:        ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
	})
	used := threadCPU() - before
	for _, m := range maps {
		m.Close()
	}
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, 0, fmt.Errorf("%+v", verr)
		}
		return nil, 0, err
	}
	return coll, used, nil
}

// BenchmarkKernelBTF decodes the kernel's BTF as loading the programs
// does, once for all of them: the CPU time per decode.
func BenchmarkKernelBTF(b *testing.B) {
	testenv.RequireBPF(b)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	var cpu time.Duration
	for b.Loop() {
		before := threadCPU()
		if _, err := btf.NewCache().Kernel(); err != nil {
			b.Fatal(err)
		}
		cpu += threadCPU() - before
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

func threadCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var statsRE = regexp.MustCompile(`processed (\d+) insns .* total_states (\d+) peak_states (\d+)`)

func verifierStats(log string) (insns, states, peak float64) {
	m := statsRE.FindStringSubmatch(log)
	if m == nil {
		return 0, 0, 0
	}
	i, _ := strconv.Atoi(m[1])
	s, _ := strconv.Atoi(m[2])
	p, _ := strconv.Atoi(m[3])
	return float64(i), float64(s), float64(p)
}
