package flamegraph

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"github.com/stackline-dev/stackline/reporter/localfile"
)

// request returns an export of one process, "app" (pid 7), with count
// samples of main -> work (native) -> read (kernel) on thread "worker",
// starting at start, as the reporter builds them.
func request(start time.Time, count int) *collectorpb.ExportProfilesServiceRequest {
	d := &profilespb.ProfilesDictionary{
		MappingTable:   []*profilespb.Mapping{{}},
		LocationTable:  []*profilespb.Location{{}},
		FunctionTable:  []*profilespb.Function{{}},
		LinkTable:      []*profilespb.Link{{}},
		StringTable:    []string{""},
		AttributeTable: []*profilespb.KeyValueAndUnit{{}},
		StackTable:     []*profilespb.Stack{{}},
	}
	str := func(s string) int32 {
		if i := slices.Index(d.StringTable, s); i >= 0 {
			return int32(i)
		}
		d.StringTable = append(d.StringTable, s)
		return int32(len(d.StringTable) - 1)
	}
	attr := func(key string, v *commonpb.AnyValue) int32 {
		d.AttributeTable = append(d.AttributeTable, &profilespb.KeyValueAndUnit{KeyStrindex: str(key), Value: v})
		return int32(len(d.AttributeTable) - 1)
	}
	sv := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	iv := func(n int64) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: n}}
	}
	native, kernel := attr("profile.frame.type", sv("native")), attr("profile.frame.type", sv("kernel"))
	loc := func(name, file string, line int64, kind int32) int32 {
		d.FunctionTable = append(d.FunctionTable, &profilespb.Function{NameStrindex: str(name), SystemNameStrindex: str(name), FilenameStrindex: str(file)})
		d.LocationTable = append(d.LocationTable, &profilespb.Location{
			AttributeIndices: []int32{kind},
			Lines:            []*profilespb.Line{{FunctionIndex: int32(len(d.FunctionTable) - 1), Line: line}},
		})
		return int32(len(d.LocationTable) - 1)
	}
	// Leaf first.
	d.StackTable = append(d.StackTable, &profilespb.Stack{LocationIndices: []int32{
		loc("read", "", 0, kernel), loc("work", "app.c", 20, native), loc("main", "app.c", 10, native),
	}})
	s := &profilespb.Sample{StackIndex: 1, AttributeIndices: []int32{attr("thread.name", sv("worker")), attr("thread.id", iv(8))}}
	for i := range count {
		s.TimestampsUnixNano = append(s.TimestampsUnixNano, uint64(start.UnixNano())+uint64(i))
	}
	return &collectorpb.ExportProfilesServiceRequest{
		Dictionary: d,
		ResourceProfiles: []*profilespb.ResourceProfiles{{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
				{Key: "process.pid", Value: iv(7)},
				{Key: "process.executable.name", Value: sv("app")},
			}},
			ScopeProfiles: []*profilespb.ScopeProfiles{{Profiles: []*profilespb.Profile{{
				SampleType:   &profilespb.ValueType{TypeStrindex: str("samples"), UnitStrindex: str("count")},
				PeriodType:   &profilespb.ValueType{TypeStrindex: str("cpu"), UnitStrindex: str("nanoseconds")},
				Period:       50_000_000,
				TimeUnixNano: uint64(start.UnixNano()),
				DurationNano: uint64(5 * time.Second),
				Samples:      []*profilespb.Sample{s},
			}}}},
		}},
	}
}

// newTestServer returns a server listening on loopback with mux, closed
// when the test ends.
func newTestServer(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	srv, err := New(Options{History: time.Hour, MaxStacks: 1000, Address: ts.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	ts.Config.Handler = mux
	ts.Start()
	t.Cleanup(func() { srv.Close(); ts.Close() })
	return srv, ts
}

func TestServerExport(t *testing.T) {
	srv, ts := newTestServer(t)
	if err := srv.Export(context.Background(), request(t0, 6)); err != nil {
		t.Fatal(err)
	}
	g := graphOf(t, srv, Query{})
	want := `all/root 6 0 0
 app/process 6 0 0
  main/native 6 0 10
   work/native 6 0 20
    read/kernel 6 6 0
`
	if got := render(g); got != want {
		t.Errorf("graph:\n%s\nwant:\n%s", got, want)
	}
	bad := request(t0, 1)
	bad.ResourceProfiles[0].ScopeProfiles[0].Profiles[0].Samples[0].StackIndex = 9
	if err := srv.Export(context.Background(), bad); err == nil {
		t.Error("Export accepted an invalid request")
	}
	if st := srv.Store().Stats(); st.Added != 1 {
		t.Errorf("%d intervals added, want 1", st.Added)
	}

	// The same through HTTP, gzipped when asked.
	resp, err := http.Get(ts.URL + "/api/flamegraph?window=60&process=app&thread=worker")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"read"`) {
		t.Errorf("GET /api/flamegraph: %s %.200s", resp.Status, body)
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !resp.Uncompressed {
		t.Errorf("Content-Encoding %q", ce)
	}
}

func TestServerPprof(t *testing.T) {
	srv, ts := newTestServer(t)
	srv.add(folded(0,
		stackOf("app", 1, "main", 3, "main@app.c:10", "work@app.c:20", "read/kernel"),
		stackOf("app", 1, "main", 4, "main@app.c:10", "idle@app.c:5")))
	for _, tc := range []struct {
		query string
		want  int64
	}{
		{"", 7},
		{"?focus=app&focus=main&focus=work", 3},
		{"?focus=app&focus=main&focus=nothing", 0},
		{"?pid=2", 0},
	} {
		resp, err := http.Get(ts.URL + "/api/flamegraph.pb.gz" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		p, err := profile.Parse(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		var total int64
		for _, s := range p.Sample {
			total += s.Value[0]
			if s.Label["process_name"][0] != "app" || s.NumLabel["pid"][0] != 1 || s.Label["thread_name"][0] != "main" {
				t.Errorf("%s: sample labels %v %v", tc.query, s.Label, s.NumLabel)
			}
		}
		if total != tc.want {
			t.Errorf("%s: %d samples, want %d", tc.query, total, tc.want)
		}
		if !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment;") {
			t.Errorf("Content-Disposition %q", resp.Header.Get("Content-Disposition"))
		}
	}
}

// TestServerPprofOffCPU checks the download of an off-CPU view: its
// sample type is off_cpu/nanoseconds, it holds the waits alone, and its
// file is named as the local off-CPU files are.
func TestServerPprofOffCPU(t *testing.T) {
	srv, ts := newTestServer(t)
	wait := stackOf("app", 1, "main", 2_500_000, "main@app.c:10", "waitInner@app.c:30", "pipe_read/kernel")
	wait.Type = localfile.ValueType{Type: "off_cpu", Unit: "nanoseconds"}
	srv.add(folded(0, stackOf("app", 1, "main", 3, "main@app.c:10", "work@app.c:20"), wait))
	for _, tc := range []struct {
		query, typ, unit, infix string
		want                    int64
	}{
		{"", "samples", "count", "", 3},
		{"?type=samples", "samples", "count", "", 3},
		{"?type=off_cpu", "off_cpu", "nanoseconds", ".offcpu", 2_500_000},
		{"?type=off_cpu&focus=app&focus=main&focus=waitInner", "off_cpu", "nanoseconds", ".offcpu", 2_500_000},
		{"?type=off_cpu&focus=app&focus=main&focus=work", "off_cpu", "nanoseconds", ".offcpu", 0},
	} {
		resp, err := http.Get(ts.URL + "/api/flamegraph.pb.gz" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		p, err := profile.Parse(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		if len(p.SampleType) != 1 || p.SampleType[0].Type != tc.typ || p.SampleType[0].Unit != tc.unit {
			t.Errorf("%s: sample types %v, want [%s/%s]", tc.query, p.SampleType, tc.typ, tc.unit)
		}
		var total int64
		for _, s := range p.Sample {
			total += s.Value[0]
		}
		if total != tc.want {
			t.Errorf("%s: values sum to %d, want %d", tc.query, total, tc.want)
		}
		cd := resp.Header.Get("Content-Disposition")
		if want := regexp.MustCompile(`^attachment; filename="stackline-[0-9]{8}T[0-9]{6}Z` + regexp.QuoteMeta(tc.infix) + `\.pb\.gz"$`); !want.MatchString(cd) {
			t.Errorf("%s: Content-Disposition %q, want %v", tc.query, cd, want)
		}
	}
}

func TestServerRefuses(t *testing.T) {
	_, ts := newTestServer(t)
	for _, tc := range []struct {
		method, path, host string
		want               int
	}{
		{"GET", "/", "", http.StatusOK},
		{"HEAD", "/flamegraph.js", "", http.StatusOK},
		{"GET", "/", "localhost:1234", http.StatusOK},
		{"GET", "/", "[::1]:80", http.StatusOK},
		{"POST", "/api/flamegraph", "", http.StatusMethodNotAllowed},
		{"PUT", "/", "", http.StatusMethodNotAllowed},
		{"DELETE", "/api/flamegraph.pb.gz", "", http.StatusMethodNotAllowed},
		{"GET", "/nothing", "", http.StatusNotFound},
		{"GET", "/", "attacker.example:80", http.StatusMisdirectedRequest},
		{"GET", "/api/flamegraph", "127.0.0.1.attacker.example", http.StatusMisdirectedRequest},
		{"GET", "/api/flamegraph?window=x", "", http.StatusBadRequest},
		{"GET", "/api/flamegraph?window=0", "", http.StatusBadRequest},
		{"GET", "/api/flamegraph?pid=-1", "", http.StatusBadRequest},
		{"GET", "/api/flamegraph.pb.gz?pid=abc", "", http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		if tc.host != "" {
			req.Host = tc.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s (Host %q): %s, want %d", tc.method, tc.path, tc.host, resp.Status, tc.want)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s %s: a CORS header", tc.method, tc.path)
		}
		if tc.want == http.StatusOK && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("%s %s: Content-Security-Policy %q", tc.method, tc.path, resp.Header.Get("Content-Security-Policy"))
		}
	}
}

// TestServerAnyHost checks that a server listening on all addresses
// answers whatever host a request names.
func TestServerAnyHost(t *testing.T) {
	srv, err := New(Options{History: time.Hour, MaxStacks: 1000, Address: ":8080"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	req := httptest.NewRequest("GET", "http://profiler.example:8080/", nil)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Errorf("GET / on :8080 for host profiler.example: %d", w.Code)
	}
	if _, err := New(Options{History: time.Hour, MaxStacks: 1000, Address: "no-port"}); err == nil {
		t.Error("New accepted an address without a port")
	}
}

func TestServerEvents(t *testing.T) {
	srv, ts := newTestServer(t)
	resp, err := http.Get(ts.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		t.Helper()
		var ev []string
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					return strings.Join(append(ev, "EOF"), "|")
				}
				if l == "" {
					return strings.Join(ev, "|")
				}
				ev = append(ev, l)
			case <-time.After(10 * time.Second):
				t.Fatal("no event within 10s")
			}
		}
	}
	if got := next(); got != "event: interval|data: 0" {
		t.Errorf("first event %q", got)
	}
	srv.add(folded(0, stackOf("app", 1, "", 1, "main")))
	if got := next(); got != "event: interval|data: 1" {
		t.Errorf("event after an interval %q", got)
	}
	// Close ends the stream, so that an http.Server can shut down.
	srv.Close()
	if got := next(); got != "EOF" {
		t.Errorf("after Close: %q, want the end of the stream", got)
	}
	resp2, err := http.Get(ts.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("events after Close: %s", resp2.Status)
	}
}
