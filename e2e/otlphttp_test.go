package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
)

// TestEndToEndOTLPHTTPFromEnv runs the built agent with no flags at all,
// configured only by the standard OpenTelemetry variables, against an
// OTLP/HTTP receiver: profiles arrive self-contained, gzip-compressed, with
// the header and the resource attributes the variables set.
func TestEndToEndOTLPHTTPFromEnv(t *testing.T) {
	testenv.RequireBPF(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	cBin := filepath.Join(dir, "workload")
	testenv.Run(t, testenv.RepoRoot(t), "gcc", "-O0", "-fno-omit-frame-pointer", "-fno-inline", "-g", "-o", cBin, "e2e/testdata/workload.c")
	work := exec.Command(cBin, "chain")
	if err := work.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { work.Process.Kill(); work.Wait() })

	rcv, err := otlptest.StartHTTP("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Stop()

	// The default 15s interval: one export, and a second at exit.
	runAgentWith(t, bin, agentRun{d: 17 * time.Second, dir: dir, env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.URL(),
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20x",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=e2e,service.name=from-attributes",
	}})
	if _, err := os.Stat(filepath.Join(dir, "stackline-profiles")); err == nil {
		t.Error("the agent wrote local files although an endpoint was set")
	}

	got := rcv.Requests()
	if len(got) < 2 {
		t.Fatalf("received %d requests in 17s at a 15s interval", len(got))
	}
	samples := 0
	for i, r := range got {
		if err := otlpcheck.Validate(r.Request); err != nil {
			t.Errorf("request %d is not self-contained: %v", i, err)
		}
		if h := r.Header.Get("Authorization"); h != "Bearer x" {
			t.Errorf("request %d: authorization %q, want %q", i, h, "Bearer x")
		}
		if enc := r.Header.Get("Content-Encoding"); enc != "gzip" {
			t.Errorf("request %d: content encoding %q, want gzip", i, enc)
		}
		for _, rp := range r.Request.ResourceProfiles {
			if v := otlpcheck.ResourceAttr(rp, "deployment.environment.name"); v != "e2e" {
				t.Errorf("request %d: deployment.environment.name %q, want e2e", i, v)
			}
			if otlpcheck.ResourceAttr(rp, "process.pid") != itoa(work.Process.Pid) {
				continue // another process may name its own service
			}
			if v := otlpcheck.ResourceAttr(rp, "service.name"); v != "from-attributes" {
				t.Errorf("request %d: the workload's service.name %q, want from-attributes", i, v)
			}
			for _, sp := range rp.ScopeProfiles {
				for _, p := range sp.Profiles {
					for _, s := range p.Samples {
						samples += int(otlpcheck.SampleCount(s))
					}
				}
			}
		}
	}
	t.Logf("%d requests, %d samples of the workload", len(got), samples)
	// 19 Hz for ~12 s of a busy process is about 230 samples when it has
	// a core to itself; on a loaded 2-core machine it gets a third of
	// that. This test is about the transport: some must arrive.
	if samples < 20 {
		t.Errorf("only %d samples of the busy workload reached the receiver", samples)
	}
}
