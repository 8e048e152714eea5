package otlpgrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// backend is an in-process OTLP profiles server that records what it
// receives.
type backend struct {
	collectorpb.UnimplementedProfilesServiceServer

	addr string
	srv  *grpc.Server

	mu          sync.Mutex
	names       []string // the marker of each request received, in order
	compression []string // grpc-encoding of each RPC received
	headers     []metadata.MD
	reply       func(name string) (*collectorpb.ExportProfilesServiceResponse, error)
	received    chan struct{}
}

// startBackend serves on addr ("127.0.0.1:0" for any port) until the test
// ends.
func startBackend(t *testing.T, addr string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	b := &backend{addr: lis.Addr().String(), received: make(chan struct{}, 100)}
	b.srv = grpc.NewServer(grpc.StatsHandler(compressionRecorder{b}))
	collectorpb.RegisterProfilesServiceServer(b.srv, b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.srv.Serve(lis)
	}()
	t.Cleanup(func() {
		b.srv.Stop()
		<-done
	})
	return b
}

// Export implements collectorpb.ProfilesServiceServer.
func (b *backend) Export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error) {
	name := marker(req)
	b.mu.Lock()
	reply := b.reply
	b.mu.Unlock()
	resp, err := &collectorpb.ExportProfilesServiceResponse{}, error(nil)
	if reply != nil {
		resp, err = reply(name)
	}
	if err != nil {
		return nil, err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	b.mu.Lock()
	b.names = append(b.names, name)
	b.headers = append(b.headers, md)
	b.mu.Unlock()
	b.received <- struct{}{}
	return resp, nil
}

func (b *backend) setReply(f func(name string) (*collectorpb.ExportProfilesServiceResponse, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reply = f
}

func (b *backend) got() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.names)
}

// waitFor waits until the backend has accepted n requests in all.
func (b *backend) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(b.got()) < n {
		select {
		case <-b.received:
		case <-deadline:
			t.Fatalf("backend received %q, want %d requests", b.got(), n)
		}
	}
}

// compressionRecorder records the compression of each incoming RPC.
type compressionRecorder struct{ b *backend }

func (r compressionRecorder) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}

func (r compressionRecorder) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok {
		r.b.mu.Lock()
		r.b.compression = append(r.b.compression, h.Compression)
		r.b.mu.Unlock()
	}
}

func (r compressionRecorder) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (r compressionRecorder) HandleConn(context.Context, stats.ConnStats) {}

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

func newExporter(t *testing.T, cfg Config) *Exporter {
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
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// startRun runs e.Run until the test ends and checks that it returns nil.
func startRun(t *testing.T, e *Exporter) (stop func()) {
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

func export(t *testing.T, e *Exporter, reqs ...string) {
	t.Helper()
	for _, name := range reqs {
		if err := e.Export(context.Background(), request(name)); err != nil {
			t.Fatalf("Export(%s): %v", name, err)
		}
	}
}

// waitStats polls e.Stats until cond holds.
func waitStats(t *testing.T, e *Exporter, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(e.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: stats %+v", what, e.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewConfig(t *testing.T) {
	for _, cfg := range []Config{
		{QueueSize: 1},
		{Endpoint: "http://localhost:4317", QueueSize: 1},
		{Endpoint: "localhost:4317"},
		{Endpoint: "localhost:4317", QueueSize: 1, Timeout: -1},
		{Endpoint: "localhost:4317", QueueSize: 1, MaxBackoff: -1},
	} {
		if e, err := New(cfg); err == nil {
			e.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
	e, err := New(Config{Endpoint: "localhost:4317", QueueSize: 1})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if e.cfg.Timeout != DefaultTimeout || e.cfg.MaxBackoff != DefaultMaxBackoff {
		t.Errorf("defaults: timeout %v, max backoff %v", e.cfg.Timeout, e.cfg.MaxBackoff)
	}
	if err := e.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestSendGzipInOrder(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	e := newExporter(t, Config{Endpoint: b.addr, Insecure: true, Headers: map[string]string{"Authorization": "Bearer x"}})
	want := names("r", 0, 5)
	export(t, e, want...)
	startRun(t, e)
	b.waitFor(t, len(want))

	if got := b.got(); !slices.Equal(got, want) {
		t.Errorf("backend received %q, want %q", got, want)
	}
	b.mu.Lock()
	for i, c := range b.compression {
		if c != "gzip" {
			t.Errorf("RPC %d compression %q, want gzip", i, c)
		}
	}
	if len(b.compression) != len(want) {
		t.Errorf("recorded %d RPC headers, want %d", len(b.compression), len(want))
	}
	if got := b.headers[0].Get("authorization"); !slices.Equal(got, []string{"Bearer x"}) {
		t.Errorf("authorization header %q, want Bearer x", got)
	}
	b.mu.Unlock()

	waitStats(t, e, "sent", func(s Stats) bool { return s.Sent == 5 })
	s := e.Stats()
	if wantBytes := uint64(5 * proto.Size(request("r0"))); s.SentBytes != wantBytes {
		t.Errorf("SentBytes = %d, want %d", s.SentBytes, wantBytes)
	}
	if s.Failed != 0 || s.Dropped != 0 || s.Rejected != 0 || s.Queued != 0 {
		t.Errorf("stats %+v, want no failures and nothing queued", s)
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

func TestBackendDownThenUp(t *testing.T) {
	addr := freeAddr(t)
	e := newExporter(t, Config{Endpoint: addr, Insecure: true})
	export(t, e, names("r", 0, 3)...)
	startRun(t, e)

	waitStats(t, e, "failed attempts", func(s Stats) bool { return s.Failed >= 2 })
	export(t, e, names("r", 3, 5)...)
	b := startBackend(t, addr)
	export(t, e, names("r", 5, 7)...)
	b.waitFor(t, 7)

	if got, want := b.got(), names("r", 0, 7); !slices.Equal(got, want) {
		t.Errorf("backend received %q, want %q", got, want)
	}
	waitStats(t, e, "sent", func(s Stats) bool { return s.Sent == 7 })
	s := e.Stats()
	if s.Dropped != 0 || s.Rejected != 0 || s.Queued != 0 {
		t.Errorf("stats %+v, want nothing dropped, rejected or queued", s)
	}
	if s.Retries == 0 || s.Failed < 2 {
		t.Errorf("stats %+v, want retries and failures counted", s)
	}
}

func TestRetryableErrorKeepsOrder(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	var mu sync.Mutex
	failures := 0
	b.setReply(func(name string) (*collectorpb.ExportProfilesServiceResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		if name == "r1" && failures < 3 {
			failures++
			codes := []codes.Code{codes.Unavailable, codes.ResourceExhausted, codes.Aborted}
			return nil, status.Error(codes[failures-1], "try later")
		}
		return &collectorpb.ExportProfilesServiceResponse{}, nil
	})
	e := newExporter(t, Config{Endpoint: b.addr, Insecure: true})
	export(t, e, names("r", 0, 4)...)
	startRun(t, e)
	b.waitFor(t, 4)

	if got, want := b.got(), names("r", 0, 4); !slices.Equal(got, want) {
		t.Errorf("backend received %q, want %q", got, want)
	}
	waitStats(t, e, "sent", func(s Stats) bool { return s.Sent == 4 })
	if s := e.Stats(); s.Failed != 3 || s.Retries != 3 || s.Rejected != 0 {
		t.Errorf("stats %+v, want 3 failed attempts and 3 retries", s)
	}
}

func TestNonRetryableErrorDrops(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	b.setReply(func(name string) (*collectorpb.ExportProfilesServiceResponse, error) {
		if name == "bad" {
			return nil, status.Error(codes.InvalidArgument, "malformed")
		}
		return &collectorpb.ExportProfilesServiceResponse{}, nil
	})
	e := newExporter(t, Config{Endpoint: b.addr, Insecure: true})
	export(t, e, "r0", "bad", "r1")
	startRun(t, e)
	b.waitFor(t, 2)

	if got, want := b.got(), []string{"r0", "r1"}; !slices.Equal(got, want) {
		t.Errorf("backend received %q, want %q", got, want)
	}
	waitStats(t, e, "sent", func(s Stats) bool { return s.Sent == 2 })
	if s := e.Stats(); s.Rejected != 1 || s.Failed != 1 || s.Retries != 0 || s.Queued != 0 {
		t.Errorf("stats %+v, want one rejected request, not retried", s)
	}
}

func TestPartialSuccessCounted(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	b.setReply(func(string) (*collectorpb.ExportProfilesServiceResponse, error) {
		return &collectorpb.ExportProfilesServiceResponse{PartialSuccess: &collectorpb.ExportProfilesPartialSuccess{
			RejectedProfiles: 2, ErrorMessage: "bad profiles",
		}}, nil
	})
	e := newExporter(t, Config{Endpoint: b.addr, Insecure: true})
	export(t, e, "r0")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if s := e.Stats(); s.Sent != 1 || s.RejectedProfiles != 2 {
		t.Errorf("stats %+v, want 1 sent and 2 rejected profiles", s)
	}
}

func TestQueueOverflowDropsOldest(t *testing.T) {
	addr := freeAddr(t)
	e := newExporter(t, Config{Endpoint: addr, Insecure: true, QueueSize: 2})
	export(t, e, names("r", 0, 5)...)
	if s := e.Stats(); s.Dropped != 3 || s.Queued != 2 {
		t.Fatalf("stats %+v, want 3 dropped and 2 queued", s)
	}

	b := startBackend(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got, want := b.got(), names("r", 3, 5); !slices.Equal(got, want) {
		t.Errorf("backend received %q, want the newest %q", got, want)
	}
}

// TestOverflowAbandonsInflight checks that the request being retried is the
// oldest one and is the one dropped when the queue overflows.
func TestOverflowAbandonsInflight(t *testing.T) {
	addr := freeAddr(t)
	e := newExporter(t, Config{Endpoint: addr, Insecure: true, QueueSize: 1})
	export(t, e, "r0")
	startRun(t, e)
	waitStats(t, e, "failed attempts", func(s Stats) bool { return s.Failed >= 1 })
	export(t, e, "r1")
	if s := e.Stats(); s.Dropped != 1 || s.Queued != 1 {
		t.Fatalf("stats %+v, want 1 dropped and 1 queued", s)
	}
	b := startBackend(t, addr)
	b.waitFor(t, 1)
	waitStats(t, e, "sent", func(s Stats) bool { return s.Sent == 1 && s.Queued == 0 })
	if got := b.got(); !slices.Equal(got, []string{"r1"}) {
		t.Errorf("backend received %q, want [r1]", got)
	}
	if s := e.Stats(); s.Dropped != 1 {
		t.Errorf("stats %+v, want 1 dropped", s)
	}
}

func TestFlushAfterRun(t *testing.T) {
	addr := freeAddr(t)
	e := newExporter(t, Config{Endpoint: addr, Insecure: true})
	stop := startRun(t, e)
	export(t, e, names("r", 0, 3)...)
	waitStats(t, e, "failed attempts", func(s Stats) bool { return s.Failed >= 1 })
	stop()
	if s := e.Stats(); s.Queued != 3 {
		t.Fatalf("after Run returned: stats %+v, want all 3 queued", s)
	}

	// The backend is still down: Flush gives up at its deadline and says
	// why.
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
	if !strings.Contains(err.Error(), "last error: rpc error: code = Unavailable") {
		t.Errorf("Flush = %v, want the last error named", err)
	}
	t.Logf("Flush to a down backend: %v", err)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Flush took %v past its 200ms deadline", d)
	}

	b := startBackend(t, addr)
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
}

func TestTLSAgainstPlaintextFails(t *testing.T) {
	b := startBackend(t, "127.0.0.1:0")
	e := newExporter(t, Config{Endpoint: b.addr}) // TLS is the default.
	export(t, e, "r0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err := e.Flush(ctx)
	if err == nil {
		t.Fatal("Flush with TLS to a plaintext server succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Flush took %v", d)
	}
	t.Logf("Flush with TLS to a plaintext server: %v", err)
	msg := err.Error()
	if !strings.Contains(msg, "tls") && !strings.Contains(msg, "handshake") {
		t.Errorf("Flush = %v, want an error naming the TLS handshake", err)
	}
	if got := b.got(); len(got) != 0 {
		t.Errorf("backend received %q", got)
	}
}

func TestClose(t *testing.T) {
	addr := freeAddr(t)
	e := newExporter(t, Config{Endpoint: addr, Insecure: true})
	export(t, e, "r0", "r1")
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := e.Export(context.Background(), request("r2")); !errors.Is(err, ErrClosed) {
		t.Errorf("Export after Close = %v, want ErrClosed", err)
	}
	if err := e.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if err := e.Flush(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close = %v, want ErrClosed", err)
	}
	if s := e.Stats(); s.Dropped != 2 || s.Queued != 0 {
		t.Errorf("stats %+v, want the 2 queued requests dropped", s)
	}
}

func TestCloseStopsRun(t *testing.T) {
	addr := freeAddr(t)
	e := newExporter(t, Config{Endpoint: addr, Insecure: true})
	export(t, e, "r0")
	errc := make(chan error, 1)
	go func() { errc <- e.Run(context.Background()) }()
	waitStats(t, e, "failed attempts", func(s Stats) bool { return s.Failed >= 1 })
	e.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Run = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if s := e.Stats(); s.Dropped != 1 || s.Queued != 0 {
		t.Errorf("stats %+v, want the request in flight dropped", s)
	}
}
