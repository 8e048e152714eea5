package otlpexport_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/reporter/otlpexport"
	"github.com/stackline-dev/stackline/reporter/otlpgrpc"
	"github.com/stackline-dev/stackline/reporter/otlphttp"
)

// fault is how a test backend answers a request, whatever the transport.
type fault int

const (
	accept    fault = iota
	transient       // gRPC Unavailable, HTTP 503
	throttle        // gRPC ResourceExhausted with a RetryInfo of 1s, HTTP 429 with Retry-After: 1
	reject          // gRPC InvalidArgument, HTTP 400
	partial         // accepted, 2 profiles rejected
)

// backend is a real OTLP receiver on loopback, over one transport.
type backend interface {
	// addr is the host:port the backend listens on.
	addr() string
	// got returns the marker of each accepted request, in order.
	got() []string
	// headers returns the headers of each accepted request.
	headers() []http.Header
	// compressed reports, for each accepted request, whether it arrived
	// gzip-compressed.
	compressed() []bool
	// answer makes the backend answer each request with f's fault; f may
	// block.
	answer(f func(name string) fault)
}

// transport starts backends and makes senders for one OTLP transport.
type transport struct {
	name   string
	start  func(t *testing.T, addr string) backend
	sender func(t *testing.T, addr string, headers map[string]string) otlpexport.Sender
}

var transports = []transport{
	{
		name: "grpc",
		start: func(t *testing.T, addr string) backend {
			r, err := otlptest.Start(addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Stop)
			return grpcBackend{r}
		},
		sender: func(t *testing.T, addr string, headers map[string]string) otlpexport.Sender {
			s, err := otlpgrpc.New(otlpgrpc.Config{Endpoint: addr, Insecure: true, Headers: headers, MaxBackoff: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	},
	{
		name: "http",
		start: func(t *testing.T, addr string) backend {
			r, err := otlptest.StartHTTP(addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Stop)
			return httpBackend{r}
		},
		sender: func(t *testing.T, addr string, headers map[string]string) otlpexport.Sender {
			s, err := otlphttp.New(otlphttp.Config{URL: "http://" + addr + otlphttp.ProfilesPath, Headers: headers})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	},
}

type grpcBackend struct{ r *otlptest.Receiver }

func (b grpcBackend) got() []string {
	var s []string
	for _, req := range b.r.Requests() {
		s = append(s, marker(req))
	}
	return s
}

func (b grpcBackend) headers() []http.Header { return b.r.Headers() }

func (b grpcBackend) compressed() []bool {
	var c []bool
	for _, e := range b.r.Compression() {
		c = append(c, e == "gzip")
	}
	return c
}

func (b grpcBackend) answer(f func(string) fault) {
	b.r.SetReply(func(req *collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error) {
		switch f(marker(req)) {
		case transient:
			return nil, status.Error(codes.Unavailable, "try later")
		case throttle:
			st, err := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
			if err != nil {
				panic(err)
			}
			return nil, st.Err()
		case reject:
			return nil, status.Error(codes.InvalidArgument, "malformed")
		case partial:
			return partialResponse(), nil
		}
		return &collectorpb.ExportProfilesServiceResponse{}, nil
	})
}

type httpBackend struct{ r *otlptest.HTTPReceiver }

func (b httpBackend) got() []string {
	var s []string
	for _, req := range b.r.Requests() {
		s = append(s, marker(req.Request))
	}
	return s
}

func (b httpBackend) headers() []http.Header {
	var h []http.Header
	for _, req := range b.r.Requests() {
		h = append(h, req.Header)
	}
	return h
}

func (b httpBackend) compressed() []bool {
	var c []bool
	for _, req := range b.r.Requests() {
		c = append(c, req.Header.Get("Content-Encoding") == "gzip")
	}
	return c
}

func (b httpBackend) answer(f func(string) fault) {
	b.r.SetReply(func(req *collectorpb.ExportProfilesServiceRequest) otlptest.HTTPReply {
		switch f(marker(req)) {
		case transient:
			return otlptest.HTTPReply{Status: http.StatusServiceUnavailable, Message: "try later"}
		case throttle:
			return otlptest.HTTPReply{Status: http.StatusTooManyRequests, RetryAfter: "1", Message: "slow down"}
		case reject:
			return otlptest.HTTPReply{Status: http.StatusBadRequest, Message: "malformed"}
		case partial:
			return otlptest.HTTPReply{Response: partialResponse()}
		}
		return otlptest.HTTPReply{}
	})
}

func partialResponse() *collectorpb.ExportProfilesServiceResponse {
	return &collectorpb.ExportProfilesServiceResponse{PartialSuccess: &collectorpb.ExportProfilesPartialSuccess{
		RejectedProfiles: 2, ErrorMessage: "bad profiles",
	}}
}

// forEach runs test once per transport.
func forEach(t *testing.T, test func(t *testing.T, tr transport)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { test(t, tr) })
	}
}

// waitFor waits until b has accepted n requests in all.
func waitFor(t *testing.T, b backend, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(b.got()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("backend received %q, want %d requests", b.got(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// request returns a small request marked with name.
func request(name string) *collectorpb.ExportProfilesServiceRequest {
	return &collectorpb.ExportProfilesServiceRequest{
		Dictionary: &profilespb.ProfilesDictionary{
			StringTable:    []string{"", name, strings.Repeat("x", 1000)},
			MappingTable:   []*profilespb.Mapping{{}},
			LocationTable:  []*profilespb.Location{{}},
			FunctionTable:  []*profilespb.Function{{}},
			LinkTable:      []*profilespb.Link{{}},
			AttributeTable: []*profilespb.KeyValueAndUnit{{}},
			StackTable:     []*profilespb.Stack{{}},
		},
	}
}

func marker(req *collectorpb.ExportProfilesServiceRequest) string {
	if s := req.GetDictionary().GetStringTable(); len(s) > 1 {
		return s[1]
	}
	return ""
}

func names(prefix string, from, to int) []string {
	var s []string
	for i := from; i < to; i++ {
		s = append(s, fmt.Sprintf("%s%d", prefix, i))
	}
	return s
}

func newExporter(t *testing.T, s otlpexport.Sender, cfg otlpexport.Config) *otlpexport.Exporter {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 20 * time.Millisecond
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 100
	}
	e, err := otlpexport.New(s, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// startRun runs e.Run until the test ends and checks that it returns nil.
func startRun(t *testing.T, e *otlpexport.Exporter) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run = %v, want nil after cancel", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func export(t *testing.T, e *otlpexport.Exporter, reqs ...string) {
	t.Helper()
	for _, name := range reqs {
		if err := e.Export(context.Background(), request(name)); err != nil {
			t.Fatalf("Export(%s): %v", name, err)
		}
	}
}

// waitStats polls e.Stats until cond holds, and checks on the way that no
// counter ever goes down.
func waitStats(t *testing.T, e *otlpexport.Exporter, what string, cond func(otlpexport.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	prev := e.Stats()
	for {
		s := e.Stats()
		checkMonotonic(t, prev, s)
		prev = s
		if cond(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: stats %+v", what, s)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func checkMonotonic(t *testing.T, a, b otlpexport.Stats) {
	t.Helper()
	if b.Sent < a.Sent || b.SentBytes < a.SentBytes || b.Failed < a.Failed || b.Retries < a.Retries ||
		b.Dropped < a.Dropped || b.Rejected < a.Rejected || b.RejectedProfiles < a.RejectedProfiles {
		t.Errorf("a counter went down: %+v, then %+v", a, b)
	}
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestNewConfig(t *testing.T) {
	s, err := otlphttp.New(otlphttp.Config{URL: "http://127.0.0.1:1/v1development/profiles"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []otlpexport.Config{
		{},
		{QueueSize: 1, Timeout: -1},
		{QueueSize: 1, MaxBackoff: -1},
	} {
		if _, err := otlpexport.New(s, cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
	if _, err := otlpexport.New(nil, otlpexport.Config{QueueSize: 1}); err == nil {
		t.Error("New without a sender succeeded")
	}
	e, err := otlpexport.New(s, otlpexport.Config{QueueSize: 1})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestSendGzipInOrderWithHeaders(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		b := tr.start(t, "127.0.0.1:0")
		// A header naming the development version too must not make it
		// repeated: a receiver refuses a repeated key.
		e := newExporter(t, tr.sender(t, b.addr(), map[string]string{"Authorization": "Bearer x", "x-tenant": "a=b,c",
			otlpexport.DevelopmentVersionKey: "7"}), otlpexport.Config{})
		want := names("r", 0, 5)
		export(t, e, want...)
		startRun(t, e)
		waitFor(t, b, len(want))

		if got := b.got(); !slices.Equal(got, want) {
			t.Errorf("backend received %q, want %q", got, want)
		}
		for i, c := range b.compressed() {
			if !c {
				t.Errorf("request %d not gzip-compressed", i)
			}
		}
		for i, h := range b.headers() {
			if got := h.Values("Authorization"); !slices.Equal(got, []string{"Bearer x"}) {
				t.Errorf("request %d: authorization header %q, want [Bearer x]", i, got)
			}
			if got := h.Values("X-Tenant"); !slices.Equal(got, []string{"a=b,c"}) {
				t.Errorf("request %d: x-tenant header %q, want [a=b,c]", i, got)
			}
			if got := h.Values(otlpexport.DevelopmentVersionKey); !slices.Equal(got, []string{otlpexport.DevelopmentVersion}) {
				t.Errorf("request %d: %s %q, want exactly [%s]", i, otlpexport.DevelopmentVersionKey, got, otlpexport.DevelopmentVersion)
			}
		}

		waitStats(t, e, "sent", func(s otlpexport.Stats) bool { return s.Sent == 5 })
		s := e.Stats()
		if wantBytes := uint64(5 * proto.Size(request("r0"))); s.SentBytes != wantBytes {
			t.Errorf("SentBytes = %d, want %d", s.SentBytes, wantBytes)
		}
		if s.Failed != 0 || s.Dropped != 0 || s.Rejected != 0 || s.Queued != 0 {
			t.Errorf("stats %+v, want no failures and nothing queued", s)
		}
	})
}

func (b grpcBackend) addr() string { return b.r.Addr() }
func (b httpBackend) addr() string { return b.r.Addr() }

func TestBackendDownThenUp(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		addr := freeAddr(t)
		e := newExporter(t, tr.sender(t, addr, nil), otlpexport.Config{})
		export(t, e, names("r", 0, 3)...)
		startRun(t, e)

		waitStats(t, e, "failed attempts", func(s otlpexport.Stats) bool { return s.Failed >= 2 })
		export(t, e, names("r", 3, 5)...)
		b := tr.start(t, addr)
		export(t, e, names("r", 5, 7)...)
		waitFor(t, b, 7)

		if got, want := b.got(), names("r", 0, 7); !slices.Equal(got, want) {
			t.Errorf("backend received %q, want %q", got, want)
		}
		waitStats(t, e, "sent", func(s otlpexport.Stats) bool { return s.Sent == 7 })
		s := e.Stats()
		if s.Dropped != 0 || s.Rejected != 0 || s.Queued != 0 {
			t.Errorf("stats %+v, want nothing dropped, rejected or queued", s)
		}
		if s.Retries == 0 || s.Failed < 2 {
			t.Errorf("stats %+v, want retries and failures counted", s)
		}
	})
}

// TestRetryableErrorKeepsOrder: a request that fails transiently is retried
// before any later one is sent, and a throttled one waits as long as the
// backend asked (1 s), far above the test's 20 ms backoff.
func TestRetryableErrorKeepsOrder(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		b := tr.start(t, "127.0.0.1:0")
		var mu sync.Mutex
		var failures int
		var throttledAt, retriedAt time.Time
		b.answer(func(name string) fault {
			mu.Lock()
			defer mu.Unlock()
			if name != "r1" {
				return accept
			}
			failures++
			switch failures {
			case 1, 2:
				return transient
			case 3:
				throttledAt = time.Now()
				return throttle
			}
			retriedAt = time.Now()
			return accept
		})
		e := newExporter(t, tr.sender(t, b.addr(), nil), otlpexport.Config{})
		export(t, e, names("r", 0, 4)...)
		startRun(t, e)
		waitFor(t, b, 4)

		if got, want := b.got(), names("r", 0, 4); !slices.Equal(got, want) {
			t.Errorf("backend received %q, want %q", got, want)
		}
		waitStats(t, e, "sent", func(s otlpexport.Stats) bool { return s.Sent == 4 })
		if s := e.Stats(); s.Failed != 3 || s.Retries != 3 || s.Rejected != 0 {
			t.Errorf("stats %+v, want 3 failed attempts and 3 retries", s)
		}
		mu.Lock()
		defer mu.Unlock()
		if d := retriedAt.Sub(throttledAt); d < 900*time.Millisecond {
			t.Errorf("retried %v after being throttled for 1s", d)
		}
	})
}

func TestNonRetryableErrorDrops(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		b := tr.start(t, "127.0.0.1:0")
		b.answer(func(name string) fault {
			if name == "bad" {
				return reject
			}
			return accept
		})
		e := newExporter(t, tr.sender(t, b.addr(), nil), otlpexport.Config{})
		export(t, e, "r0", "bad", "r1")
		startRun(t, e)
		waitFor(t, b, 2)

		if got, want := b.got(), []string{"r0", "r1"}; !slices.Equal(got, want) {
			t.Errorf("backend received %q, want %q", got, want)
		}
		waitStats(t, e, "sent", func(s otlpexport.Stats) bool { return s.Sent == 2 })
		if s := e.Stats(); s.Rejected != 1 || s.Failed != 1 || s.Retries != 0 || s.Queued != 0 || s.Dropped != 0 {
			t.Errorf("stats %+v, want one rejected request, not retried", s)
		}
	})
}

func TestPartialSuccessCounted(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		b := tr.start(t, "127.0.0.1:0")
		b.answer(func(string) fault { return partial })
		e := newExporter(t, tr.sender(t, b.addr(), nil), otlpexport.Config{})
		export(t, e, "r0")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if s := e.Stats(); s.Sent != 1 || s.RejectedProfiles != 2 {
			t.Errorf("stats %+v, want 1 sent and 2 rejected profiles", s)
		}
	})
}

func TestQueueOverflowDropsOldest(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		addr := freeAddr(t)
		e := newExporter(t, tr.sender(t, addr, nil), otlpexport.Config{QueueSize: 2})
		export(t, e, names("r", 0, 5)...)
		if s := e.Stats(); s.Dropped != 3 || s.Queued != 2 {
			t.Fatalf("stats %+v, want 3 dropped and 2 queued", s)
		}

		b := tr.start(t, addr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if got, want := b.got(), names("r", 3, 5); !slices.Equal(got, want) {
			t.Errorf("backend received %q, want the newest %q", got, want)
		}
	})
}

// TestOverflowAbandonsInflight checks that the request being retried is the
// oldest one and is the one dropped when the queue overflows, counted once
// it is abandoned.
func TestOverflowAbandonsInflight(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		addr := freeAddr(t)
		e := newExporter(t, tr.sender(t, addr, nil), otlpexport.Config{QueueSize: 1})
		export(t, e, "r0")
		startRun(t, e)
		waitStats(t, e, "failed attempts", func(s otlpexport.Stats) bool { return s.Failed >= 1 })
		export(t, e, "r1")
		if s := e.Stats(); s.Queued != 1 {
			t.Fatalf("stats %+v, want 1 queued", s)
		}
		waitStats(t, e, "r0 abandoned", func(s otlpexport.Stats) bool { return s.Dropped == 1 })
		b := tr.start(t, addr)
		waitFor(t, b, 1)
		waitStats(t, e, "sent", func(s otlpexport.Stats) bool { return s.Sent == 1 && s.Queued == 0 })
		if got := b.got(); !slices.Equal(got, []string{"r1"}) {
			t.Errorf("backend received %q, want [r1]", got)
		}
		if s := e.Stats(); s.Dropped != 1 {
			t.Errorf("stats %+v, want 1 dropped", s)
		}
	})
}

// TestOverflowInflightDelivered: a request that overflows the queue while
// its attempt is under way, and is then delivered by that attempt, counts
// as sent and never as dropped, so no counter goes down.
func TestOverflowInflightDelivered(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		b := tr.start(t, "127.0.0.1:0")
		arrived, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		b.answer(func(name string) fault {
			if name == "r0" {
				once.Do(func() { close(arrived) })
				<-release
			}
			return accept
		})
		e := newExporter(t, tr.sender(t, b.addr(), nil), otlpexport.Config{QueueSize: 1})
		export(t, e, "r0")
		startRun(t, e)
		<-arrived
		export(t, e, "r1") // overflows: r0 is superseded
		if s := e.Stats(); s.Dropped != 0 || s.Queued != 1 {
			t.Errorf("stats %+v, want nothing dropped yet and 1 queued", s)
		}
		close(release)
		waitFor(t, b, 2)
		waitStats(t, e, "sent", func(s otlpexport.Stats) bool { return s.Sent == 2 })
		if got, want := b.got(), []string{"r0", "r1"}; !slices.Equal(got, want) {
			t.Errorf("backend received %q, want %q", got, want)
		}
		if s := e.Stats(); s.Dropped != 0 || s.Queued != 0 {
			t.Errorf("stats %+v, want nothing dropped", s)
		}
	})
}

func TestFlushAfterRun(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		addr := freeAddr(t)
		e := newExporter(t, tr.sender(t, addr, nil), otlpexport.Config{})
		stop := startRun(t, e)
		export(t, e, names("r", 0, 3)...)
		waitStats(t, e, "failed attempts", func(s otlpexport.Stats) bool { return s.Failed >= 1 })
		stop()
		if s := e.Stats(); s.Queued != 3 {
			t.Fatalf("after Run returned: stats %+v, want all 3 queued", s)
		}

		// The backend is still down: Flush gives up at its deadline and
		// says why.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		err := e.Flush(ctx)
		cancel()
		if err == nil {
			t.Fatal("Flush to a down backend succeeded")
		}
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "3 requests unsent") {
			t.Errorf("Flush = %v, want deadline exceeded with 3 requests unsent", err)
		}
		if !strings.Contains(err.Error(), "last error: ") || !strings.Contains(err.Error(), "connect") {
			t.Errorf("Flush = %v, want the last error (refused connection) named", err)
		}
		t.Logf("Flush to a down backend: %v", err)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Flush took %v past its 200ms deadline", d)
		}

		b := tr.start(t, addr)
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if got, want := b.got(), names("r", 0, 3); !slices.Equal(got, want) {
			t.Errorf("backend received %q, want %q", got, want)
		}
		if s := e.Stats(); s.Queued != 0 || s.Sent != 3 {
			t.Errorf("stats %+v, want 3 sent and nothing queued", s)
		}
	})
}

func TestClose(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		addr := freeAddr(t)
		e := newExporter(t, tr.sender(t, addr, nil), otlpexport.Config{})
		export(t, e, "r0", "r1")
		if err := e.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := e.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := e.Export(context.Background(), request("r2")); !errors.Is(err, otlpexport.ErrClosed) {
			t.Errorf("Export after Close = %v, want ErrClosed", err)
		}
		if err := e.Run(context.Background()); !errors.Is(err, otlpexport.ErrClosed) {
			t.Errorf("Run after Close = %v, want ErrClosed", err)
		}
		if err := e.Flush(context.Background()); !errors.Is(err, otlpexport.ErrClosed) {
			t.Errorf("Flush after Close = %v, want ErrClosed", err)
		}
		if s := e.Stats(); s.Dropped != 2 || s.Queued != 0 {
			t.Errorf("stats %+v, want the 2 queued requests dropped", s)
		}
	})
}

func TestCloseStopsRun(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		addr := freeAddr(t)
		e := newExporter(t, tr.sender(t, addr, nil), otlpexport.Config{})
		export(t, e, "r0")
		errc := make(chan error, 1)
		go func() { errc <- e.Run(context.Background()) }()
		waitStats(t, e, "failed attempts", func(s otlpexport.Stats) bool { return s.Failed >= 1 })
		e.Close()
		select {
		case err := <-errc:
			if !errors.Is(err, otlpexport.ErrClosed) {
				t.Errorf("Run = %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after Close")
		}
		if s := e.Stats(); s.Dropped != 1 || s.Queued != 0 {
			t.Errorf("stats %+v, want the request in flight dropped", s)
		}
	})
}

// slowAnswer delivers each request through the real transport at once but
// answers only when released: the window in which a backend has a request
// and the sender has not heard back yet.
type slowAnswer struct {
	otlpexport.Sender
	delivered chan struct{}
	release   chan struct{}
}

func (s *slowAnswer) Send(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error) {
	resp, err := s.Sender.Send(ctx, req)
	s.delivered <- struct{}{}
	<-s.release
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

// TestStopDuringAttemptSendsOnce: when Run is stopped while an attempt is
// under way, the attempt finishes (bounded by its timeout) instead of being
// cut off and the request sent again by Flush: a backend that already has
// it would get it twice (found by the Collector tests at shutdown).
func TestStopDuringAttemptSendsOnce(t *testing.T) {
	forEach(t, func(t *testing.T, tr transport) {
		b := tr.start(t, "127.0.0.1:0")
		s := &slowAnswer{Sender: tr.sender(t, b.addr(), nil), delivered: make(chan struct{}, 1), release: make(chan struct{})}
		e := newExporter(t, s, otlpexport.Config{})
		export(t, e, "last")
		stop := startRun(t, e)
		<-s.delivered
		stopped := make(chan struct{})
		go func() { stop(); close(stopped) }()
		time.Sleep(50 * time.Millisecond) // Run's context is cancelled now
		close(s.release)
		<-stopped
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := b.got(); !slices.Equal(got, []string{"last"}) {
			t.Errorf("backend received %q, want the request once", got)
		}
		if st := e.Stats(); st.Sent != 1 || st.Queued != 0 {
			t.Errorf("stats %+v, want 1 sent and none queued", st)
		}
	})
}
