package otlpgrpc

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Buffers of requests, kept from one export to the next.
//
// gRPC marshals a request into a buffer of its default pool, and copies
// the compressed request into another. That pool hands out 1 MiB for any
// buffer between 32 KiB and 1 MiB and keeps the buffers it gets back in a
// sync.Pool, which the garbage collector empties within two cycles: at
// an export every 15 s and a collection every few seconds, each export
// allocated two buffers of 1 MiB anew (half the agent's garbage between
// two exports, once the start is over). A Sender's requests use a
// bufferPool instead, which keeps its few large buffers, of the sizes the
// exports need, from one export to the next.
const (
	// minKeptBuffer is the size from which bufferPool keeps the
	// buffers itself; smaller ones (the transport's frames and headers)
	// come from gRPC's default pool, where they are reused within the
	// export.
	minKeptBuffer = 16<<10 + 1
	// maxKeptBuffers and maxKeptBytes bound what bufferPool keeps: the
	// marshaled and the compressed request of one export, and of a
	// retry under way.
	maxKeptBuffers = 4
	maxKeptBytes   = 4 << 20
	// bufferRound is what bufferPool rounds the size of a new buffer up
	// to, so that exports of about the same size reuse it.
	bufferRound = 16 << 10
)

// bufferPool is a [mem.BufferPool] that keeps the large buffers given back
// to it, up to maxKeptBuffers and maxKeptBytes. It is safe for concurrent
// use.
type bufferPool struct {
	mu   sync.Mutex
	free []*[]byte // kept buffers, by increasing capacity
	kept int       // bytes of free
}

// Get returns a buffer of n bytes.
func (p *bufferPool) Get(n int) *[]byte {
	if n < minKeptBuffer {
		return mem.DefaultBufferPool().Get(n)
	}
	p.mu.Lock()
	for i, b := range p.free {
		if cap(*b) >= n {
			p.free = append(p.free[:i], p.free[i+1:]...)
			p.kept -= cap(*b)
			p.mu.Unlock()
			*b = (*b)[:n]
			return b
		}
	}
	p.mu.Unlock()
	b := make([]byte, n, (n+bufferRound-1)/bufferRound*bufferRound)
	return &b
}

// Put takes back a buffer Get returned: it keeps it, unless it keeps
// enough larger ones already.
func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c < minKeptBuffer {
		mem.DefaultBufferPool().Put(b)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i := 0
	for i < len(p.free) && cap(*p.free[i]) < c {
		i++
	}
	p.free = append(p.free, nil)
	copy(p.free[i+1:], p.free[i:])
	p.free[i] = b
	p.kept += c
	// Over the bounds, the smallest go first: a large request needs a
	// large buffer, and a small one fits in it.
	for len(p.free) > maxKeptBuffers || p.kept > maxKeptBytes {
		p.kept -= cap(*p.free[0])
		p.free[0] = nil
		p.free = p.free[1:]
	}
}

// keptBytes returns the bytes of the buffers p keeps.
func (p *bufferPool) keptBytes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kept
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
