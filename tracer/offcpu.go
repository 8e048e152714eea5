package tracer

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// OffCPU configures off-CPU profiling: where threads wait, and for how long
// (support/ebpf/offcpu.h).
type OffCPU struct {
	// Enabled attaches the off-CPU programs.
	Enabled bool
	// Threshold is the shortest wait recorded.
	Threshold time.Duration
	// Fraction is the share of switch-outs (threads blocking) sampled,
	// within (0, 1].
	Fraction float64
}

// Limits of the off-CPU configuration.
const (
	// MaxOffCPUThreshold bounds --off-cpu-threshold.
	MaxOffCPUThreshold = time.Minute
)

// validate checks the off-CPU configuration, in terms of the flags.
func (o *OffCPU) validate() error {
	if !o.Enabled {
		return nil
	}
	var errs []error
	if o.Threshold < 0 || o.Threshold > MaxOffCPUThreshold {
		errs = append(errs, fmt.Errorf("off-CPU threshold %v: must be within 0..%v", o.Threshold, MaxOffCPUThreshold))
	}
	if !(o.Fraction > 0 && o.Fraction <= 1) {
		errs = append(errs, fmt.Errorf("off-CPU fraction %v: must be within (0, 1]", o.Fraction))
	}
	return errors.Join(errs...)
}

// sampleBound returns the eBPF program's offcpu_sample_bound: a switch-out
// is sampled when a random u32 is at most this.
func (o *OffCPU) sampleBound() uint32 {
	if o.Fraction >= 1 {
		return math.MaxUint32
	}
	return uint32(o.Fraction * math.MaxUint32)
}

// offCPUPrograms are the programs of off-CPU profiling. They are loaded
// only when it is on: sched_exit_tp, which one of them attaches to, exists
// only from Linux 6.16, and kernels before refuse to load it.
var offCPUPrograms = map[string]bool{"offcpu_switch": true, "offcpu_resume": true}

// offCPUTracepoint is the tracepoint that needs the newest kernel.
const offCPUTracepoint = "sched_exit_tp"

// checkOffCPUKernel reports whether the running kernel has the
// tracepoints off-CPU profiling attaches to. It reads the kernel's BTF
// through cache, which the load of the programs then shares: decoding it
// costs tens of milliseconds.
func checkOffCPUKernel(cache *btf.Cache) error {
	spec, err := cache.Kernel()
	if err != nil {
		return fmt.Errorf("off-CPU profiling: kernel BTF: %w", err)
	}
	for _, tp := range []string{"sched_switch", offCPUTracepoint} {
		var typ *btf.Typedef
		if err := spec.TypeByName("btf_trace_"+tp, &typ); err != nil {
			return fmt.Errorf("off-CPU profiling needs the scheduler's BTF tracepoint %s (Linux 6.16 or later): %w", tp, err)
		}
	}
	return nil
}

// loadObjects loads spec into objs. The programs named in skip are left
// out (their fields stay nil): LoadAndAssign loads only what the struct it
// fills asks for, so this builds that struct from objs' fields.
func loadObjects(spec *ebpf.CollectionSpec, objs *progs.StacklineObjects, skip map[string]bool, opts *ebpf.CollectionOptions) error {
	parts := []reflect.Value{
		reflect.ValueOf(&objs.StacklinePrograms).Elem(),
		reflect.ValueOf(&objs.StacklineMaps).Elem(),
		reflect.ValueOf(&objs.StacklineVariables).Elem(),
	}
	var fields []reflect.StructField
	for _, part := range parts {
		for i := range part.NumField() {
			f := part.Type().Field(i)
			if !skip[f.Tag.Get("ebpf")] {
				fields = append(fields, reflect.StructField{Name: f.Name, Type: f.Type, Tag: f.Tag})
			}
		}
	}
	loaded := reflect.New(reflect.StructOf(fields)).Elem()
	if err := spec.LoadAndAssign(loaded.Addr().Interface(), opts); err != nil {
		return err
	}
	for _, part := range parts {
		for i := range part.NumField() {
			if v := loaded.FieldByName(part.Type().Field(i).Name); v.IsValid() {
				part.Field(i).Set(v)
			}
		}
	}
	return nil
}

// attachOffCPU attaches the off-CPU programs to the scheduler's
// tracepoints.
func (t *Tracer) attachOffCPU() error {
	for _, p := range []struct {
		prog *ebpf.Program
		name string
	}{
		// The wait's end first: a switch-out recorded before it is
		// attached would wait for a thread's next run.
		{t.objs.OffcpuResume, offCPUTracepoint},
		{t.objs.OffcpuSwitch, "sched_switch"},
	} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return fmt.Errorf("tracer: attach off-CPU program to %s: %w", p.name, err)
		}
		t.links = append(t.links, l)
	}
	t.log.Info("off-CPU profiling", "threshold", t.cfg.OffCPU.Threshold, "fraction", t.cfg.OffCPU.Fraction)
	return nil
}

// setOffCPUVariables sets the off-CPU programs' threshold and sampling
// bound in spec.
func (t *Tracer) setOffCPUVariables(spec *ebpf.CollectionSpec) error {
	if err := spec.Variables["offcpu_threshold_ns"].Set(uint64(t.cfg.OffCPU.Threshold)); err != nil {
		return fmt.Errorf("tracer: set off-CPU threshold: %w", err)
	}
	if err := spec.Variables["offcpu_sample_bound"].Set(t.cfg.OffCPU.sampleBound()); err != nil {
		return fmt.Errorf("tracer: set off-CPU fraction: %w", err)
	}
	return nil
}
