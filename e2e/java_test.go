package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/reporter/otlpcheck"
	"github.com/stackline-dev/stackline/reporter/semconv"
)

// TestEndToEndJava: the agent, with no flags for Java, exports a JVM's
// Java frames to an OTLP receiver typed jvm, named with their classes,
// inlined methods as lines of one location, the process's runtime java;
// with --no-java the same JVM shows no jvm frames.
func TestEndToEndJava(t *testing.T) {
	testenv.RequireBPF(t)
	jdks := testenv.JDKs(t)
	javac, _ := testenv.JavaTools(t)
	dir := t.TempDir()
	bin := testenv.BuildAgent(t, dir)
	src := filepath.Join(dir, "Chain.java")
	if err := os.WriteFile(src, []byte(testenv.JavaChain), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, dir, javac, "--release", "17", "-d", dir, src)

	for _, noJava := range []bool{false, true} {
		name := "java"
		if noJava {
			name = "no-java"
		}
		t.Run(name, func(t *testing.T) {
			java := jdks[0].Command("-cp", dir, "Chain")
			if err := java.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { java.Process.Kill(); java.Wait() })
			rcv, err := otlptest.Start("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer rcv.Stop()
			args := []string{"--collection-agent", rcv.Addr(), "--disable-tls", "--samples-per-second", "99", "--reporter-interval", "2s"}
			if noJava {
				args = append(args, "--no-java")
			}
			// The JVM compiles the workload in its first seconds, and
			// libjvm's unwind table takes a moment to build.
			time.Sleep(2 * time.Second)
			runAgent(t, bin, 12*time.Second, args...)
			checkJava(t, rcv.Requests(), java, noJava)
		})
	}
}

func checkJava(t *testing.T, reqs []*collectorpb.ExportProfilesServiceRequest, java *exec.Cmd, noJava bool) {
	t.Helper()
	chain := []string{"Inner.c(int)", "Middle.b(int)", "Outer.a(int)"}
	total, full, inlined, jvm := 0, 0, 0, 0
	runtime := ""
	for _, req := range reqs {
		if err := otlpcheck.Validate(req); err != nil {
			t.Errorf("request not self-contained: %v", err)
		}
		for _, rp := range req.ResourceProfiles {
			if otlpcheck.ResourceAttr(rp, "process.pid") != itoa(java.Process.Pid) {
				continue
			}
			runtime = otlpcheck.ResourceAttr(rp, semconv.RuntimeName)
			for _, sp := range rp.ScopeProfiles {
				for _, p := range sp.Profiles {
					for _, s := range p.Samples {
						if th, _ := otlpcheck.SampleAttr(req, s, semconv.ThreadName); th != "workload" {
							continue
						}
						n := int(otlpcheck.SampleCount(s))
						total += n
						frames, err := otlpcheck.Frames(req, s)
						if err != nil {
							t.Fatal(err)
						}
						var names []string
						for _, f := range frames {
							if f.Type != "jvm" {
								continue
							}
							jvm += n
							names = append(names, f.Functions...)
							if len(f.Functions) >= 2 && slices.Equal(f.Functions[:2], chain[:2]) {
								inlined += n
							}
						}
						if len(names) >= len(chain) && slices.Equal(names[:len(chain)], chain) {
							full += n
						}
					}
				}
			}
		}
	}
	t.Logf("workload thread: %d samples, %d with %v, %d with Inner.c inlined into Middle.b, %d jvm frames; process.runtime.name %q", total, full, chain, inlined, jvm, runtime)
	if total < 50 {
		t.Fatalf("only %d samples of the workload thread", total)
	}
	if noJava {
		if jvm != 0 || runtime == semconv.RuntimeJava {
			t.Errorf("--no-java: %d jvm frames, process.runtime.name %q", jvm, runtime)
		}
		return
	}
	if float64(full) < 0.9*float64(total) || float64(inlined) < 0.5*float64(total) {
		t.Errorf("%d of %d samples with the chain, %d with Inner.c inlined; want >= 90%% and >= 50%%", full, total, inlined)
	}
	if runtime != semconv.RuntimeJava {
		t.Errorf("process.runtime.name %q, want %q", runtime, semconv.RuntimeJava)
	}
}
