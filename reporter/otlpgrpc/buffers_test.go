package otlpgrpc

import (
	"testing"
	"time"
)

// TestBufferPool: large buffers given back are handed out again, the
// smallest that fits first; the oldest are dropped past the bounds and
// after maxKeptAge unused; small ones are gRPC's default pool's.
func TestBufferPool(t *testing.T) {
	now := time.Unix(1000, 0)
	p := newBufferPool()
	p.now = func() time.Time { return now }
	small := p.Get(100)
	if len(*small) != 100 {
		t.Fatalf("Get(100) has %d bytes", len(*small))
	}
	p.Put(small)
	if p.keptBytes() != 0 {
		t.Errorf("a small buffer is kept: %d bytes", p.keptBytes())
	}

	large := p.Get(300 << 10)
	a := p.Get(100 << 10)
	if len(*a) != 100<<10 || cap(*a)%bufferRound != 0 {
		t.Fatalf("Get(100 KiB): len %d cap %d", len(*a), cap(*a))
	}
	p.Put(large)
	p.Put(a)
	if got, want := p.keptBytes(), cap(*a)+cap(*large); got != want {
		t.Fatalf("kept %d bytes, want %d", got, want)
	}
	b := p.Get(90 << 10)
	if &(*b)[:1][0] != &(*a)[:1][0] || len(*b) != 90<<10 {
		t.Errorf("Get(90 KiB) did not reuse the 100 KiB buffer, the smallest that fits")
	}
	if p.keptBytes() != cap(*large) {
		t.Errorf("kept %d bytes once the buffer is out again, want the large one's %d", p.keptBytes(), cap(*large))
	}
	// The large buffer, unused for maxKeptAge, leaves.
	now = now.Add(maxKeptAge + time.Second)
	p.Put(b)
	if p.keptBytes() != cap(*b) {
		t.Errorf("kept %d bytes after the large buffer aged, want %d", p.keptBytes(), cap(*b))
	}

	// Bounds: the oldest go first.
	q := newBufferPool()
	var bufs []*[]byte
	for i := range maxKeptBuffers + 2 {
		bufs = append(bufs, q.Get((i+2)*bufferRound))
	}
	for _, b := range bufs {
		q.Put(b)
	}
	if len(q.free) != maxKeptBuffers || q.free[0].b != bufs[2] {
		t.Fatalf("%d buffers kept, want the last %d given back", len(q.free), maxKeptBuffers)
	}
	q.Put(q.Get(maxKeptBytes))
	if q.keptBytes() > maxKeptBytes {
		t.Errorf("keeps %d bytes, over %d", q.keptBytes(), maxKeptBytes)
	}
	if len(q.free) != 1 || cap(*q.free[0].b) != maxKeptBytes {
		t.Errorf("a buffer of the largest size kept drops the others: %d kept", len(q.free))
	}
}
