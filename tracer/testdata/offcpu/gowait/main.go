// An off-CPU workload for the tests: the main goroutine waits in
// main.main -> main.waitOuter -> main.waitInner on a channel that another
// goroutine feeds every 4 ms.
package main

import "time"

var sink int

//go:noinline
func waitInner(ch chan int) {
	sink += <-ch
}

//go:noinline
func waitOuter(ch chan int) {
	waitInner(ch)
	sink++
}

func main() {
	ch := make(chan int)
	go func() {
		for {
			time.Sleep(4 * time.Millisecond)
			ch <- 1
		}
	}()
	for {
		waitOuter(ch)
	}
}
