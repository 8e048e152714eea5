package otlpgrpc

import (
	"fmt"
	"sync"
	"time"

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
	// maxKeptAge is how long a buffer is kept unused: a few exports, so
	// that the large buffers of the start's first exports leave.
	maxKeptAge = time.Minute
	// bufferRound is what bufferPool rounds the size of a new buffer up
	// to, so that exports of about the same size reuse it.
	bufferRound = 16 << 10
)

// bufferPool is a [mem.BufferPool] that keeps the large buffers given back
// to it, up to maxKeptBuffers and maxKeptBytes, for maxKeptAge at most.
// It is safe for concurrent use.
type bufferPool struct {
	// now is the clock (time.Now).
	now  func() time.Time
	mu   sync.Mutex
	free []keptBuffer // oldest first
	kept int          // bytes of free
}

// keptBuffer is a buffer given back, and when.
type keptBuffer struct {
	b  *[]byte
	at time.Time
}

// newBufferPool returns an empty pool.
func newBufferPool() *bufferPool {
	return &bufferPool{now: time.Now}
}

// Get returns a buffer of n bytes: the smallest kept that is large
// enough, else a new one.
func (p *bufferPool) Get(n int) *[]byte {
	if n < minKeptBuffer {
		return mem.DefaultBufferPool().Get(n)
	}
	p.mu.Lock()
	p.expire(p.now())
	best := -1
	for i, k := range p.free {
		if c := cap(*k.b); c >= n && (best < 0 || c < cap(*p.free[best].b)) {
			best = i
		}
	}
	if best >= 0 {
		b := p.free[best].b
		p.remove(best)
		p.mu.Unlock()
		*b = (*b)[:n]
		return b
	}
	p.mu.Unlock()
	b := make([]byte, n, (n+bufferRound-1)/bufferRound*bufferRound)
	return &b
}

// Put takes back a buffer Get returned and keeps it, dropping the
// oldest kept past the bounds.
func (p *bufferPool) Put(b *[]byte) {
	if cap(*b) < minKeptBuffer {
		mem.DefaultBufferPool().Put(b)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.free = append(p.free, keptBuffer{b: b, at: now})
	p.kept += cap(*b)
	p.expire(now)
}

// expire drops the buffers kept longer than maxKeptAge, and the oldest
// past maxKeptBuffers and maxKeptBytes.
func (p *bufferPool) expire(now time.Time) {
	for len(p.free) > 0 && (len(p.free) > maxKeptBuffers || p.kept > maxKeptBytes || now.Sub(p.free[0].at) > maxKeptAge) {
		p.remove(0)
	}
}

// remove drops the i-th kept buffer from the pool.
func (p *bufferPool) remove(i int) {
	p.kept -= cap(*p.free[i].b)
	copy(p.free[i:], p.free[i+1:])
	p.free[len(p.free)-1] = keptBuffer{}
	p.free = p.free[:len(p.free)-1]
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
