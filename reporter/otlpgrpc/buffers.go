package otlpgrpc

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Buffers of requests, of their own size.
//
// gRPC marshals a request into a buffer of its default pool, and copies
// the compressed request into another. That pool hands out 1 MiB for any
// buffer between 32 KiB and 1 MiB and keeps the buffers it gets back in a
// sync.Pool, which the garbage collector empties within two cycles: at
// an export every 15 s and a collection every few seconds, each export of
// more than 32 KiB allocated a buffer of 1 MiB anew, for a request of
// tens of KiB. A Sender's requests use an exactPool instead, which
// allocates large buffers of the size asked, and keeps none: kept from one
// export to the next, they would stay in the live heap (and, at GOGC=50,
// half again as much in the resident memory) for the 15 s between
// exports, for a few KiB of garbage less.
const (
	// minExactBuffer is the size from which exactPool allocates the
	// buffers itself; smaller ones (the transport's frames and headers)
	// come from gRPC's default pool, where they are reused within the
	// export.
	minExactBuffer = 16<<10 + 1
	// exactRound is what exactPool rounds the size of a buffer up to.
	exactRound = 4 << 10
)

// exactPool is a [mem.BufferPool] that allocates the large buffers of the
// size asked and leaves those given back to the garbage collector. It is
// safe for concurrent use.
type exactPool struct{}

// Get returns a buffer of n bytes.
func (exactPool) Get(n int) *[]byte {
	if n < minExactBuffer {
		return mem.DefaultBufferPool().Get(n)
	}
	b := make([]byte, n, (n+exactRound-1)/exactRound*exactRound)
	return &b
}

// Put takes back a buffer Get returned.
func (exactPool) Put(b *[]byte) {
	if cap(*b) < minExactBuffer {
		mem.DefaultBufferPool().Put(b)
	}
}

// codec marshals requests into buffers of its pool, and unmarshals
// responses, as gRPC's proto codec does with its default pool. It is
// passed to each call (grpc.ForceCodecV2), not registered.
type codec struct {
	pool mem.BufferPool
}

// Marshal returns v's wire encoding in one buffer of c's pool.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("otlpgrpc: marshal %T: not a protocol buffer message", v)
	}
	size := proto.Size(m)
	buf := c.pool.Get(size)
	// Size was just computed, and the request does not change during
	// the call.
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

// Unmarshal decodes data into v.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("otlpgrpc: unmarshal into %T: not a protocol buffer message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// Name is empty: gRPC takes a call's codec's name for the subtype of its
// content type, and the requests keep the plain application/grpc of
// gRPC's own proto codec.
func (codec) Name() string { return "" }
