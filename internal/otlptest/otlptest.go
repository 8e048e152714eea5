// Package otlptest holds in-process OTLP profiles receivers for tests and
// benchmarks, over gRPC ([Receiver]) and HTTP ([HTTPReceiver]): they keep
// every request with the headers and compression it arrived with, and can
// be told how to answer.
package otlptest

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed requests
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Receiver records the requests it receives. Its methods are safe for
// concurrent use.
type Receiver struct {
	collectorpb.UnimplementedProfilesServiceServer

	srv  *grpc.Server
	addr string

	mu          sync.Mutex
	requests    []*collectorpb.ExportProfilesServiceRequest
	headers     []http.Header
	compression []string
	wireBytes   []int
	failWith    codes.Code
	reply       func(*collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error)
}

// Start listens on addr ("127.0.0.1:0" for any free port) and serves
// plaintext gRPC until Stop.
func Start(addr string) (*Receiver, error) {
	return StartTLS(addr, nil)
}

// StartTLS is Start serving TLS with cfg; nil cfg serves plaintext.
func StartTLS(addr string, cfg *tls.Config) (*Receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Receiver{addr: ln.Addr().String()}
	opts := []grpc.ServerOption{grpc.StatsHandler(r)}
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	r.srv = grpc.NewServer(opts...)
	collectorpb.RegisterProfilesServiceServer(r.srv, r)
	go r.srv.Serve(ln) // ends with Stop
	return r, nil
}

// Addr is the host:port the receiver listens on.
func (r *Receiver) Addr() string { return r.addr }

// Stop stops the server at once.
func (r *Receiver) Stop() { r.srv.Stop() }

// FailWith makes Export fail with code (codes.OK: succeed again).
func (r *Receiver) FailWith(code codes.Code) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failWith = code
}

// SetReply makes Export answer each request with f's result instead:
// a request f fails is not recorded. Nil f accepts every request again.
func (r *Receiver) SetReply(f func(*collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reply = f
}

// Export implements the profiles service.
func (r *Receiver) Export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error) {
	r.mu.Lock()
	failWith, reply := r.failWith, r.reply
	r.mu.Unlock()
	if failWith != codes.OK {
		return nil, status.Error(failWith, "test receiver told to fail")
	}
	resp := &collectorpb.ExportProfilesServiceResponse{}
	if reply != nil {
		var err error
		if resp, err = reply(req); err != nil {
			return nil, err
		}
	}
	h := http.Header{}
	md, _ := metadata.FromIncomingContext(ctx)
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, req)
	r.headers = append(r.headers, h)
	return resp, nil
}

// Headers returns the metadata of each request accepted, in order, as
// HTTP headers.
func (r *Receiver) Headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.headers...)
}

// Requests returns the requests received so far.
func (r *Receiver) Requests() []*collectorpb.ExportProfilesServiceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*collectorpb.ExportProfilesServiceRequest(nil), r.requests...)
}

// Compression returns the grpc-encoding of each RPC received, in order.
func (r *Receiver) Compression() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.compression...)
}

// WireBytes returns the on-the-wire (compressed) payload size of each RPC.
func (r *Receiver) WireBytes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.wireBytes...)
}

// TagRPC implements stats.Handler.
func (r *Receiver) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// HandleRPC implements stats.Handler: it records each RPC's compression
// and payload size.
func (r *Receiver) HandleRPC(_ context.Context, s stats.RPCStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch s := s.(type) {
	case *stats.InHeader:
		r.compression = append(r.compression, s.Compression)
	case *stats.InPayload:
		r.wireBytes = append(r.wireBytes, s.CompressedLength)
	}
}

// TagConn implements stats.Handler.
func (r *Receiver) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (r *Receiver) HandleConn(context.Context, stats.ConnStats) {}
