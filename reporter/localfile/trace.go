package localfile

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
)

// The trace-event file (the JSON object format of Chrome's trace-event
// format, which Perfetto UI and chrome://tracing open) shows one timeline
// per thread, under its process:
//
//   - each CPU sample is a complete event ("ph": "X", category "cpu")
//     starting at the sample's time and lasting one sampling period;
//   - each off-CPU wait is a complete event (category "off-cpu") from the
//     moment the thread blocked to the one it ran again;
//
// both named by the leaf function of their stack, with the whole stack,
// root first and ';'-separated as in folded files, in args.stack. A
// thread's slices do not overlap: a CPU sample's slice ends where the
// thread's next slice begins, if that is sooner. Times ("ts", "dur") are
// microseconds, with nanosecond decimals, since otherData.time_origin_unix_nano
// (the earliest profile start of the request).
const (
	// TraceCategoryCPU and TraceCategoryOffCPU are the categories of the
	// trace events of CPU samples and off-CPU waits.
	TraceCategoryCPU    = "cpu"
	TraceCategoryOffCPU = "off-cpu"
)

// traceEvent is one event of the trace-event format.
type traceEvent struct {
	Name string      `json:"name"`
	Cat  string      `json:"cat,omitempty"`
	Ph   string      `json:"ph"`
	TS   json.Number `json:"ts"`
	Dur  json.Number `json:"dur,omitempty"`
	PID  int64       `json:"pid"`
	TID  int64       `json:"tid"`
	Args any         `json:"args,omitempty"`
}

// sliceArgs are the args of a sample's or a wait's slice.
type sliceArgs struct {
	Stack string `json:"stack"`
	// WaitNS is how long an off-CPU wait lasted.
	WaitNS int64 `json:"wait_ns,omitempty"`
}

type nameArgs struct {
	Name string `json:"name"`
}

// traceFile is the JSON object written.
type traceFile struct {
	TraceEvents     []traceEvent      `json:"traceEvents"`
	DisplayTimeUnit string            `json:"displayTimeUnit"`
	OtherData       map[string]string `json:"otherData"`
}

// slice is one thread's CPU sample or off-CPU wait, in nanoseconds.
type slice struct {
	start, dur int64
	name, cat  string
	stack      string
	wait       int64
}

type threadKey struct{ pid, tid int64 }

// micros formats ns nanoseconds as microseconds with three decimals,
// exactly.
func micros(ns int64) json.Number {
	sign := ""
	if ns < 0 {
		sign, ns = "-", -ns
	}
	return json.Number(fmt.Sprintf("%s%d.%03d", sign, ns/1000, ns%1000))
}

// traceEventsJSON returns the trace-event file of a validated request.
func traceEventsJSON(req *collectorpb.ExportProfilesServiceRequest) ([]byte, error) {
	c := newConverter(req, false) // for frame names only
	d := req.GetDictionary()
	var origin int64
	for _, rp := range req.GetResourceProfiles() {
		for _, sp := range rp.GetScopeProfiles() {
			for _, prof := range sp.GetProfiles() {
				if t := int64(prof.GetTimeUnixNano()); t != 0 && (origin == 0 || t < origin) {
					origin = t
				}
			}
		}
	}
	threads := make(map[threadKey][]slice)
	threadNames := make(map[threadKey]string)
	procNames := make(map[int64]string)
	for _, rp := range req.GetResourceProfiles() {
		pid, _ := strconv.ParseInt(otlpcheck.ResourceAttr(rp, semconv.PID), 10, 64)
		procNames[pid] = processName(rp)
		for _, sp := range rp.GetScopeProfiles() {
			for _, prof := range sp.GetProfiles() {
				offCPU := isOffCPU(d, prof)
				fraction := 1.0
				if offCPU {
					if f, err := otlpcheck.Attr(req, prof.GetAttributeIndices(), semconv.OffCPUFraction); err == nil && f != "" {
						if v, err := strconv.ParseFloat(f, 64); err == nil && v > 0 && v <= 1 {
							fraction = v
						}
					}
				}
				for _, s := range prof.GetSamples() {
					tidText, err := otlpcheck.SampleAttr(req, s, semconv.ThreadID)
					if err != nil {
						return nil, fmt.Errorf("localfile: %w", err)
					}
					tid, _ := strconv.ParseInt(tidText, 10, 64)
					key := threadKey{pid, tid}
					if name, err := otlpcheck.SampleAttr(req, s, semconv.ThreadName); err == nil && name != "" {
						threadNames[key] = name
					}
					locs := d.StackTable[s.GetStackIndex()].GetLocationIndices()
					var names []string
					for j := len(locs) - 1; j >= 0; j-- {
						for _, f := range c.foldedFrames(locs[j]) {
							names = append(names, f.Name)
						}
					}
					leaf := unknownName
					if len(names) > 0 {
						leaf = names[len(names)-1]
					}
					stack := strings.Join(names, ";")
					for i, ts := range s.GetTimestampsUnixNano() {
						sl := slice{start: int64(ts) - origin, name: leaf, stack: stack, cat: TraceCategoryCPU, dur: prof.GetPeriod()}
						if offCPU {
							if i >= len(s.GetValues()) {
								break
							}
							// The value is scaled up by the fraction;
							// the wait itself lasted value*fraction,
							// up to the timestamp.
							sl.wait = int64(math.Round(float64(s.GetValues()[i]) * fraction))
							sl.cat, sl.dur, sl.start = TraceCategoryOffCPU, sl.wait, sl.start-sl.wait
						}
						threads[key] = append(threads[key], sl)
					}
				}
			}
		}
	}

	f := traceFile{DisplayTimeUnit: "ms", OtherData: map[string]string{"time_origin_unix_nano": strconv.FormatInt(origin, 10)}}
	pids := make([]int64, 0, len(procNames))
	for pid := range procNames {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	for _, pid := range pids {
		f.TraceEvents = append(f.TraceEvents, traceEvent{Name: "process_name", Ph: "M", TS: "0", PID: pid, TID: pid, Args: nameArgs{procNames[pid]}})
	}
	keys := make([]threadKey, 0, len(threads))
	for k := range threads {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b threadKey) int { return cmp.Or(cmp.Compare(a.pid, b.pid), cmp.Compare(a.tid, b.tid)) })
	for _, k := range keys {
		if name := threadNames[k]; name != "" {
			f.TraceEvents = append(f.TraceEvents, traceEvent{Name: "thread_name", Ph: "M", TS: "0", PID: k.pid, TID: k.tid, Args: nameArgs{name}})
		}
		sl := threads[k]
		slices.SortStableFunc(sl, func(a, b slice) int { return cmp.Compare(a.start, b.start) })
		for i := range sl {
			// A slice ends where the thread's next one begins, if
			// sooner: a CPU sample stands for a period, but the thread
			// may block before it is over.
			if i+1 < len(sl) && sl[i].start+sl[i].dur > sl[i+1].start {
				sl[i].dur = sl[i+1].start - sl[i].start
			}
			f.TraceEvents = append(f.TraceEvents, traceEvent{
				Name: sl[i].name, Cat: sl[i].cat, Ph: "X",
				TS: micros(sl[i].start), Dur: micros(max(sl[i].dur, 0)),
				PID: k.pid, TID: k.tid,
				Args: sliceArgs{Stack: sl[i].stack, WaitNS: sl[i].wait},
			})
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("localfile: encode trace events: %w", err)
	}
	return b.Bytes(), nil
}

// TraceSlice is one slice of a trace-event file, as [ValidateTraceEvents]
// reads it back.
type TraceSlice struct {
	// PID and TID are the process and thread.
	PID, TID int64
	// Name is the slice's name (the leaf function), Category
	// TraceCategoryCPU or TraceCategoryOffCPU.
	Name, Category string
	// StartUnixNano and DurationNano are the slice's start, in Unix
	// nanoseconds, and length.
	StartUnixNano, DurationNano int64
	// Stack is the stack, root first, ';'-separated.
	Stack string
	// WaitNano is how long an off-CPU wait lasted (args.wait_ns).
	WaitNano int64
}

// ValidateTraceEvents checks a trace-event file as this package writes it
// against the trace-event format: a JSON object with traceEvents; every
// event with a name, a phase, a numeric ts, pid and tid; complete events
// ("X") with a duration of at least 0, named metadata events ("M"); and
// each thread's complete events neither overlapping nor partly
// overlapping (no slice ends after the next one starts). It returns the
// complete events, by thread and time.
func ValidateTraceEvents(data []byte) ([]TraceSlice, error) {
	var f struct {
		TraceEvents []map[string]json.RawMessage `json:"traceEvents"`
		OtherData   map[string]string            `json:"otherData"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("trace events: %w", err)
	}
	if f.TraceEvents == nil {
		return nil, errors.New("trace events: no traceEvents array")
	}
	origin, err := strconv.ParseInt(f.OtherData["time_origin_unix_nano"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("trace events: otherData.time_origin_unix_nano: %w", err)
	}
	var out []TraceSlice
	for i, ev := range f.TraceEvents {
		var name, ph, cat string
		var ts, dur json.Number
		var pid, tid int64
		var args struct {
			Name   string `json:"name"`
			Stack  string `json:"stack"`
			WaitNS int64  `json:"wait_ns"`
		}
		for _, field := range []struct {
			key      string
			to       any
			required bool
		}{
			{"name", &name, true}, {"ph", &ph, true}, {"ts", &ts, true}, {"pid", &pid, true}, {"tid", &tid, true},
			{"cat", &cat, false}, {"dur", &dur, false}, {"args", &args, false},
		} {
			raw, ok := ev[field.key]
			if !ok {
				if field.required {
					return nil, fmt.Errorf("trace events: event %d: no %q", i, field.key)
				}
				continue
			}
			if err := json.Unmarshal(raw, field.to); err != nil {
				return nil, fmt.Errorf("trace events: event %d: %q: %w", i, field.key, err)
			}
		}
		start, err := parseMicros(ts)
		if err != nil {
			return nil, fmt.Errorf("trace events: event %d: ts: %w", i, err)
		}
		switch ph {
		case "M":
			if args.Name == "" {
				return nil, fmt.Errorf("trace events: metadata event %d (%s) names nothing", i, name)
			}
		case "X":
			if dur == "" {
				return nil, fmt.Errorf("trace events: complete event %d has no dur", i)
			}
			d, err := parseMicros(dur)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("trace events: event %d: dur %q: %v", i, dur, err)
			}
			out = append(out, TraceSlice{PID: pid, TID: tid, Name: name, Category: cat, StartUnixNano: origin + start,
				DurationNano: d, Stack: args.Stack, WaitNano: args.WaitNS})
		default:
			return nil, fmt.Errorf("trace events: event %d: phase %q", i, ph)
		}
	}
	slices.SortStableFunc(out, func(a, b TraceSlice) int {
		return cmp.Or(cmp.Compare(a.PID, b.PID), cmp.Compare(a.TID, b.TID), cmp.Compare(a.StartUnixNano, b.StartUnixNano))
	})
	for i := 1; i < len(out); i++ {
		a, b := &out[i-1], &out[i]
		if a.PID == b.PID && a.TID == b.TID && a.StartUnixNano+a.DurationNano > b.StartUnixNano {
			return nil, fmt.Errorf("trace events: thread %d/%d: slice %s [%d, +%d) overlaps %s starting at %d",
				a.PID, a.TID, a.Name, a.StartUnixNano, a.DurationNano, b.Name, b.StartUnixNano)
		}
	}
	return out, nil
}

// parseMicros parses microseconds with up to three decimals into
// nanoseconds, exactly.
func parseMicros(n json.Number) (int64, error) {
	s := string(n)
	whole, frac, _ := strings.Cut(s, ".")
	if len(frac) > 3 {
		return 0, fmt.Errorf("%q: more than nanosecond precision", s)
	}
	us, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	ns := int64(0)
	if frac != "" {
		frac += strings.Repeat("0", 3-len(frac))
		if ns, err = strconv.ParseInt(frac, 10, 64); err != nil || ns < 0 {
			return 0, fmt.Errorf("%q: bad decimals", s)
		}
	}
	if strings.HasPrefix(whole, "-") {
		return us*1000 - ns, nil
	}
	return us*1000 + ns, nil
}
