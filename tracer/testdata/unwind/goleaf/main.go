// Command goleaf is an unwinding workload for the tracer's tests:
// main.main -> main.a -> main.b -> main.leaf, where leaf, the hot
// function, is a leaf without a frame of its own (no frame pointer set up),
// so only its stack-pointer delta finds its caller.
package main

var sink int

//go:noinline
func leaf(n int) int {
	x := 0
	for i := 0; i < n; i++ {
		x = x*31 + i
	}
	return x
}

//go:noinline
func b() {
	for {
		sink += leaf(1 << 20)
	}
}

//go:noinline
func a() {
	b()
	sink++
}

func main() {
	a()
	sink++
}
