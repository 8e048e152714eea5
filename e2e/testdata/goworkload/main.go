// Command goworkload burns CPU in main.main -> main.alpha -> main.beta ->
// main.gamma for the end-to-end tests. gamma keeps an array on its stack,
// so it sets up a frame; it calls nothing in its loop.
package main

import "os"

//go:noinline
func gamma(n int) int {
	var buf [64]int
	s := 0
	for i := 0; i < n; i++ {
		buf[i&63] += i
		s += buf[(i*7)&63]
	}
	return s
}

//go:noinline
func beta() int {
	s := 0
	for {
		s += gamma(1 << 30)
		if s == 42 {
			return s
		}
	}
}

//go:noinline
func alpha() int { return beta() + 1 }

func main() {
	os.Exit(alpha())
}
