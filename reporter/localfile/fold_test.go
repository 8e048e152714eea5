package localfile

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
)

func TestFold(t *testing.T) {
	f, err := Fold(testRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Start.Equal(profileStart) || !f.End.Equal(profileStart.Add(5*time.Second)) {
		t.Errorf("interval [%v, %v), want [%v, +5s)", f.Start, f.End, profileStart)
	}
	var got []string
	for _, st := range f.Stacks {
		var frames []string
		for _, fr := range st.Frames {
			frames = append(frames, fmt.Sprintf("%s@%s:%d/%s", fr.Name, fr.File, fr.Line, fr.Kind))
		}
		got = append(got, fmt.Sprintf("%s %d %q %s/%s %s %d", st.Process, st.PID, st.Thread, st.Type.Type, st.Type.Unit, strings.Join(frames, ";"), st.Value))
	}
	want := []string{
		`app 100 "app-worker" samples/count main@src.c:10/native;work@src.c:11/native;inlined_helper@src.c:10/native;libfoo.so+0x1234@:0/native;do_syscall_64@src.c:10/kernel 3`,
		`app 100 "app" samples/count main@src.c:10/native;work@src.c:11/native;inlined_helper@src.c:10/native 2`,
		`server 200 "serve;loop" samples/count main.main@src.c:10/go;main.serve@src.c:10/go 4`,
		`server 200 "gc" samples/count main.main@src.c:10/go;main.serve@src.c:10/go;do_syscall_64@src.c:10/kernel 1`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("folded stacks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestFoldMatchesFoldedFile checks that Fold and the folded stacks file
// fold an export the same way.
func TestFoldMatchesFoldedFile(t *testing.T) {
	req := testRequest(t)
	f, err := Fold(req)
	if err != nil {
		t.Fatal(err)
	}
	c := newConverter(req, false)
	if err := c.convert(); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, st := range f.Stacks {
		names := []string{sanitize(st.Process)}
		for _, fr := range st.Frames {
			names = append(names, sanitize(fr.Name))
		}
		sums[strings.Join(names, ";")] += st.Value
	}
	var lines []string
	for k, v := range sums {
		lines = append(lines, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(lines)
	if got, want := string(c.folded()), strings.Join(lines, "\n")+"\n"; got != want {
		t.Errorf("folded file:\n%s\nFold:\n%s", got, want)
	}
}

func TestFoldRejectsInvalid(t *testing.T) {
	req := testRequest(t)
	req.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples[0].StackIndex = 999
	if _, err := Fold(req); err == nil {
		t.Error("Fold accepted a sample whose stack index is out of range")
	}
	if _, err := Fold(&collectorpb.ExportProfilesServiceRequest{}); err == nil {
		t.Error("Fold accepted a request without a dictionary")
	}
}
