package otlpgrpc

import "testing"

// TestBufferPool: large buffers given back are handed out again for
// requests they fit, the smallest dropped past the bounds; small ones are
// gRPC's default pool's.
func TestBufferPool(t *testing.T) {
	var p bufferPool
	small := p.Get(100)
	if len(*small) != 100 {
		t.Fatalf("Get(100) has %d bytes", len(*small))
	}
	p.Put(small)
	if p.keptBytes() != 0 {
		t.Errorf("a small buffer is kept: %d bytes", p.keptBytes())
	}

	a := p.Get(100 << 10)
	if len(*a) != 100<<10 || cap(*a)%bufferRound != 0 {
		t.Fatalf("Get(100 KiB): len %d cap %d", len(*a), cap(*a))
	}
	p.Put(a)
	if p.keptBytes() != cap(*a) {
		t.Fatalf("kept %d bytes, want %d", p.keptBytes(), cap(*a))
	}
	b := p.Get(90 << 10)
	if &(*b)[:1][0] != &(*a)[:1][0] || len(*b) != 90<<10 {
		t.Errorf("Get(90 KiB) did not reuse the 100 KiB buffer given back")
	}
	if p.keptBytes() != 0 {
		t.Errorf("kept %d bytes once the buffer is out again", p.keptBytes())
	}
	// Larger than any kept: a new one.
	p.Put(b)
	c := p.Get(200 << 10)
	if cap(*c) < 200<<10 || &(*c)[:1][0] == &(*a)[:1][0] {
		t.Errorf("Get(200 KiB) returned the 100 KiB buffer")
	}

	// Bounds: the smallest go first.
	var q bufferPool
	for i := range maxKeptBuffers + 2 {
		q.Put(q.Get((i + 2) * bufferRound))
	}
	if len(q.free) != maxKeptBuffers {
		t.Fatalf("%d buffers kept, want %d", len(q.free), maxKeptBuffers)
	}
	if got, want := cap(*q.free[0]), 4*bufferRound; got != want {
		t.Errorf("smallest kept %d bytes, want %d", got, want)
	}
	q.Put(q.Get(maxKeptBytes))
	if q.keptBytes() > maxKeptBytes {
		t.Errorf("keeps %d bytes, over %d", q.keptBytes(), maxKeptBytes)
	}
	if len(q.free) != 1 || cap(*q.free[0]) != maxKeptBytes {
		t.Errorf("a buffer of the largest size kept drops the others: %d kept", len(q.free))
	}
}
