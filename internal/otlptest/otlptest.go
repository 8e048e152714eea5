// Package otlptest is an in-process OTLP profiles receiver for tests and
// benchmarks: it keeps every request and the compression it arrived with.
package otlptest

import (
	"context"
	"net"
	"sync"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed requests
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
	compression []string
	wireBytes   []int
	failWith    codes.Code
}

// Start listens on addr ("127.0.0.1:0" for any free port) and serves until
// Stop.
func Start(addr string) (*Receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Receiver{addr: ln.Addr().String()}
	r.srv = grpc.NewServer(grpc.StatsHandler(r))
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

// Export implements the profiles service.
func (r *Receiver) Export(_ context.Context, req *collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failWith != codes.OK {
		return nil, status.Error(r.failWith, "test receiver told to fail")
	}
	r.requests = append(r.requests, req)
	return &collectorpb.ExportProfilesServiceResponse{}, nil
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
