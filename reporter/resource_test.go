package reporter

import (
	"context"
	"maps"
	"runtime"
	"testing"

	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
	"github.com/stackline-dev/stackline/trace"
)

// TestResourceAttributes: each process's resource carries the host's
// attributes, what the tracer read of the process, and the service name by
// precedence: the process's own, the agent's --service-name,
// unknown_service:<exe>.
func TestResourceAttributes(t *testing.T) {
	host := map[string]string{
		semconv.HostName: "testhost",
		semconv.HostArch: semconv.HostArchOf(runtime.GOARCH),
		semconv.OSType:   "linux",
	}
	full := &trace.ProcessMeta{ContainerID: "c0ffee", PodUID: "8a9f3c2e-51d7-4b6a-9e0f-2c4d6e8f0a1b",
		ServiceName: "checkout", RuntimeName: semconv.RuntimeGo}
	for _, c := range []struct {
		name         string
		agentService string
		meta         []*trace.ProcessMeta // given with successive traces
		want         map[string]string
	}{
		{"nothing known", "", []*trace.ProcessMeta{nil}, map[string]string{
			semconv.ServiceName: "unknown_service:w",
		}},
		{"agent's service name", "agent-svc", []*trace.ProcessMeta{nil}, map[string]string{
			semconv.ServiceName: "agent-svc",
		}},
		{"process's own service name wins", "agent-svc", []*trace.ProcessMeta{full}, map[string]string{
			semconv.ServiceName: "checkout", semconv.RuntimeName: "go",
			semconv.ContainerID: "c0ffee", semconv.PodUID: "8a9f3c2e-51d7-4b6a-9e0f-2c4d6e8f0a1b",
		}},
		{"runtime learnt later in the interval", "", []*trace.ProcessMeta{nil, {}, {RuntimeName: semconv.RuntimeCPython}, nil}, map[string]string{
			semconv.ServiceName: "unknown_service:w", semconv.RuntimeName: "cpython",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			exp := &captureExporter{}
			cfg := testConfig()
			cfg.ServiceName = c.agentService
			r, err := New(cfg, exp)
			if err != nil {
				t.Fatal(err)
			}
			f := trace.FrameID{File: fileID(1), Addr: 1, Type: trace.FrameNative}
			resolve(r, f)
			for i, m := range c.meta {
				r.ReportTrace(&trace.Trace{Frames: []trace.FrameID{f}}, trace.TraceMeta{PID: 42, TID: 42, Comm: "w",
					TimestampNS: uint64(i), ExecutablePath: "/usr/bin/w", ProcessName: "w", Process: m})
			}
			r.Flush(context.Background())
			if len(exp.reqs) != 1 || len(exp.reqs[0].ResourceProfiles) != 1 {
				t.Fatalf("%d requests", len(exp.reqs))
			}
			if err := otlpcheck.Validate(exp.reqs[0]); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{semconv.PID: "42", semconv.ExeName: "w", semconv.ExePath: "/usr/bin/w"}
			maps.Copy(want, host)
			maps.Copy(want, c.want)
			if got := otlpcheck.ResourceAttrs(exp.reqs[0].ResourceProfiles[0]); !maps.Equal(got, want) {
				t.Errorf("resource\n%v\nwant\n%v", got, want)
			}
		})
	}
}

func TestHostArchOf(t *testing.T) {
	for goarch, want := range map[string]string{
		"amd64": "amd64", "arm64": "arm64", "arm": "arm32", "386": "x86",
		"ppc64": "ppc64", "ppc64le": "ppc64", "s390x": "s390x", "riscv64": "riscv64",
	} {
		if got := semconv.HostArchOf(goarch); got != want {
			t.Errorf("%s: %q, want %q", goarch, got, want)
		}
	}
}
