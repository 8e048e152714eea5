package otlpgrpc

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"runtime"
	"strings"
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
)

func request(name string) *collectorpb.ExportProfilesServiceRequest {
	return &collectorpb.ExportProfilesServiceRequest{
		Dictionary: &profilespb.ProfilesDictionary{StringTable: []string{"", name}},
	}
}

func newSender(t testing.TB, cfg Config) *Sender {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func send(s *Sender, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := s.Send(ctx, request(name))
	return err
}

func TestNewConfig(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Endpoint: "http://localhost:4317"},
		{Endpoint: "localhost:4317", MaxBackoff: -1},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestHeadersAndCompression(t *testing.T) {
	for _, noCompression := range []bool{false, true} {
		r, err := otlptest.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Stop()
		s := newSender(t, Config{Endpoint: r.Addr(), Insecure: true, NoCompression: noCompression,
			Headers: map[string]string{"Authorization": "Bearer x"}, UserAgent: "stackline/test"})
		if err := send(s, "r0"); err != nil {
			t.Fatal(err)
		}
		h := r.Headers()
		if len(h) != 1 || h[0].Get("Authorization") != "Bearer x" || !strings.HasPrefix(h[0].Get("User-Agent"), "stackline/test") {
			t.Errorf("metadata %v", h)
		}
		// The sender's codec (see bufferPool) keeps gRPC's own content
		// type.
		if len(h) == 1 && h[0].Get("Content-Type") != "application/grpc" {
			t.Errorf("content type %q, want application/grpc", h[0].Get("Content-Type"))
		}
		want := "gzip"
		if noCompression {
			want = ""
		}
		if c := r.Compression(); len(c) != 1 || c[0] != want {
			t.Errorf("compression %q, want %q", c, want)
		}
	}
}

// TestRetryable: the codes the OTLP specification calls retryable are
// wrapped with their RetryInfo delay; the others are not.
func TestRetryable(t *testing.T) {
	r, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	s := newSender(t, Config{Endpoint: r.Addr(), Insecure: true})
	for _, c := range []struct {
		code      codes.Code
		delay     time.Duration
		retryable bool
	}{
		{codes.Unavailable, 0, true},
		{codes.ResourceExhausted, 3 * time.Second, true},
		{codes.Aborted, 0, true},
		{codes.InvalidArgument, 0, false},
		{codes.Unauthenticated, 0, false},
		{codes.Internal, 0, false},
	} {
		r.SetReply(func(*collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error) {
			st := status.New(c.code, "told to fail")
			if c.delay > 0 {
				st, _ = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(c.delay)})
			}
			return nil, st.Err()
		})
		err := send(s, "r")
		var re *otlpexport.RetryableError
		if got := errors.As(err, &re); got != c.retryable {
			t.Errorf("%v: retryable %v, want %v", c.code, got, c.retryable)
		} else if got && re.After != c.delay {
			t.Errorf("%v: after %v, want %v", c.code, re.After, c.delay)
		}
	}
}

// TestMutualTLS: with the CA and a client certificate the RPC goes
// through; without the client certificate it fails.
func TestMutualTLS(t *testing.T) {
	certs, err := otlptest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := otlptest.StartTLS("127.0.0.1:0", certs.ServerTLS(true))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	full, err := otlpexport.LoadTLS(otlpexport.TLSFiles{CA: certs.CAFile, Cert: certs.ClientCertFile, Key: certs.ClientKeyFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := send(newSender(t, Config{Endpoint: r.Addr(), TLS: full, Headers: map[string]string{"x-tenant": "a"}}), "r0"); err != nil {
		t.Fatalf("Send with mTLS: %v", err)
	}
	if h := r.Headers(); len(h) != 1 || h[0].Get("X-Tenant") != "a" {
		t.Errorf("metadata %v", h)
	}
	caOnly, err := otlpexport.LoadTLS(otlpexport.TLSFiles{CA: certs.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	err = send(newSender(t, Config{Endpoint: r.Addr(), TLS: caOnly}), "r1")
	t.Logf("without a client certificate: %v", err)
	if err == nil {
		t.Error("Send without a client certificate succeeded")
	}
	err = send(newSender(t, Config{Endpoint: r.Addr()}), "r2")
	t.Logf("without the CA: %v", err)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Send without the CA = %v, want a certificate error", err)
	}
	if n := len(r.Requests()); n != 1 {
		t.Errorf("%d requests accepted, want 1", n)
	}
}

func TestTLSAgainstPlaintextFails(t *testing.T) {
	r, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	err = send(newSender(t, Config{Endpoint: r.Addr()}), "r0") // TLS is the default.
	if err == nil {
		t.Fatal("Send with TLS to a plaintext server succeeded")
	}
	t.Logf("Send with TLS to a plaintext server: %v", err)
	if msg := err.Error(); !strings.Contains(msg, "tls") && !strings.Contains(msg, "handshake") {
		t.Errorf("Send = %v, want an error naming the TLS handshake", err)
	}
	if len(r.Requests()) != 0 {
		t.Error("the server accepted a request")
	}
}

// TestCompressedExport sends the reporter's captured export of the
// whole-agent benchmark: the receiver (gRPC's own gzip) reads back the
// same request, from fewer bytes than gRPC's gzip would have sent.
func TestCompressedExport(t *testing.T) {
	req, raw := capturedExport(t)
	var std bytes.Buffer
	zw := gzip.NewWriter(&std)
	zw.Write(raw)
	zw.Close()

	r, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	s := newSender(t, Config{Endpoint: r.Addr(), Insecure: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	got := r.Requests()
	if len(got) != 1 || !proto.Equal(got[0], req) {
		t.Fatalf("the receiver got %d requests, not the one sent", len(got))
	}
	wire := r.WireBytes()
	t.Logf("%d bytes on the wire, %d with compress/gzip", wire[0], std.Len())
	if len(wire) != 1 || wire[0] >= std.Len() {
		t.Errorf("%v bytes on the wire, want fewer than compress/gzip's %d", wire, std.Len())
	}
	// Sent again, through the same pool and codec, the request is still
	// read back whole.
	if _, err := s.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	if got := r.Requests(); len(got) != 2 || !proto.Equal(got[1], req) {
		t.Fatalf("the receiver got %d requests, the second not the one sent", len(got))
	}
}

// capturedExport returns the reporter's captured export of the
// whole-agent benchmark.
func capturedExport(tb testing.TB) (*collectorpb.ExportProfilesServiceRequest, []byte) {
	tb.Helper()
	return otlptest.CapturedExport(tb, "../testdata/agentbench-export.pb.gz")
}

// BenchmarkSendExport sends the captured export to a receiver over
// loopback, with a collection between two exports as in the agent (an
// export every 15 s, a collection every few seconds): B/op is the garbage
// of one export, the receiver's included.
func BenchmarkSendExport(b *testing.B) {
	req, raw := capturedExport(b)
	r, err := otlptest.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Stop()
	s := newSender(b, Config{Endpoint: r.Addr(), Insecure: true})
	ctx := context.Background()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		runtime.GC()
		b.StartTimer()
		if _, err := s.Send(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
