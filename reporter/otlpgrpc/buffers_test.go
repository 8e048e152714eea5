package otlpgrpc

import "testing"

// TestExactPool: large buffers are of the size asked (rounded up to
// exactRound), small ones gRPC's default pool's.
func TestExactPool(t *testing.T) {
	var p exactPool
	small := p.Get(100)
	if len(*small) != 100 {
		t.Fatalf("Get(100) has %d bytes", len(*small))
	}
	p.Put(small)
	for _, n := range []int{minExactBuffer, 40 << 10, 63<<10 + 5, 3 << 20} {
		b := p.Get(n)
		if len(*b) != n || cap(*b) < n || cap(*b)-n >= exactRound || cap(*b)%exactRound != 0 {
			t.Errorf("Get(%d): len %d cap %d, want the size rounded up to %d", n, len(*b), cap(*b), exactRound)
		}
		p.Put(b)
	}
}
