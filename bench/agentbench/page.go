package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// pageClient follows the agent's flame graph page as an open page does:
// it holds the update stream (/api/events) open and fetches the graph of
// the last 15 minutes at each event.
type pageClient struct {
	addr   string
	client *http.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// connected is set once the stream was opened: failures before it
	// are the agent not listening yet.
	connected bool
	fetches   int
	errors    int
	total     time.Duration
	slowest   time.Duration
	maxBytes  int
	lastErr   error
}

// followPage starts following the page at addr until stop.
func followPage(addr string) *pageClient {
	ctx, cancel := context.WithCancel(context.Background())
	p := &pageClient{addr: addr, client: &http.Client{}, cancel: cancel, done: make(chan struct{})}
	go p.run(ctx)
	return p
}

// stop ends the stream and waits for the client to return.
func (p *pageClient) stop() {
	p.cancel()
	<-p.done
}

func (p *pageClient) run(ctx context.Context) {
	defer close(p.done)
	for ctx.Err() == nil {
		if err := p.follow(ctx); err != nil && ctx.Err() == nil {
			p.fail(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second): // the agent is not listening yet, or went away
		}
	}
}

// follow reads the update stream and fetches the graph at each event.
func (p *pageClient) follow(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr+"/api/events", nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("events: %s", resp.Status)
	}
	p.mu.Lock()
	p.connected = true
	p.mu.Unlock()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data:") {
			if err := p.fetch(ctx); err != nil && ctx.Err() == nil {
				p.fail(err)
			}
		}
	}
	return sc.Err()
}

// fetch gets the graph of the last 15 minutes, gzip-compressed as a
// browser asks for it.
func (p *pageClient) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr+"/api/flamegraph?window=900", nil)
	if err != nil {
		return err
	}
	// Set by hand, the body stays compressed: its size is what a page
	// receives.
	req.Header.Set("Accept-Encoding", "gzip")
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("flame graph: %s", resp.Status)
	}
	d := time.Since(start)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fetches++
	p.total += d
	p.slowest = max(p.slowest, d)
	p.maxBytes = max(p.maxBytes, int(n))
	return nil
}

func (p *pageClient) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.connected {
		return
	}
	p.errors++
	p.lastErr = err
}

// summary says what the client did.
func (p *pageClient) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf("page: %d graphs fetched", p.fetches)
	if p.fetches > 0 {
		s += fmt.Sprintf(", %.0f ms on average, %.0f ms at most, up to %d bytes (gzip)",
			float64(p.total.Milliseconds())/float64(p.fetches), float64(p.slowest.Milliseconds()), p.maxBytes)
	}
	if p.errors > 0 {
		s += fmt.Sprintf("; %d errors, the last: %v", p.errors, p.lastErr)
	}
	return s
}
