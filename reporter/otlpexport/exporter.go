// Package otlpexport queues OTLP profile requests and sends them through a
// transport (OTLP/gRPC, OTLP/HTTP), independent of which one.
//
// An [Exporter] decouples the reporter from the backend: [Exporter.Export]
// only enqueues a request and never blocks, while [Exporter.Run] sends the
// queue in order through its [Sender], retrying failures the transport marks
// as transient with [Retryable]. When the backend stays down and the queue
// fills up, the oldest request is dropped, so that a recovered backend
// receives the newest data. On shutdown, [Exporter.Flush] sends what is left
// within a deadline.
//
// Every request is counted once in [Stats], when its fate is known: sent,
// rejected by the backend, or dropped unsent. The counters only grow.
package otlpexport

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"google.golang.org/protobuf/proto"
)

// Defaults applied by [New] to zero fields of [Config].
const (
	DefaultTimeout    = 10 * time.Second
	DefaultMaxBackoff = 30 * time.Second
)

// InitialBackoff is the first wait before a retry, when MaxBackoff allows.
const InitialBackoff = time.Second

// MaxRetryAfter bounds the wait a backend may ask for before a retry
// (Retry-After, RetryInfo), so that a wrong answer cannot stall exports
// for hours.
const MaxRetryAfter = 5 * time.Minute

// The OTLP profiles development version: while profiles are
// v1development, every export names the revision of the profiles messages
// it is encoded in, as request metadata (gRPC) or an HTTP header, so that
// a receiver built for another revision refuses it before decoding it
// wrongly. stackline's messages (proto module v0.4.0) are revision 1, which
// is also what a receiver assumes when the key is missing.
const (
	DevelopmentVersionKey = "otlp-profiles-development-version"
	DevelopmentVersion    = "1"
)

// ErrClosed is returned by the methods of an [Exporter] that has been
// closed.
var ErrClosed = errors.New("otlpexport: exporter closed")

// Sender makes one attempt at sending a request to a backend. Its methods
// may be called from several goroutines.
type Sender interface {
	// Send sends req once and returns the backend's response. An error
	// that may go away when the request is repeated is wrapped with
	// [Retryable]; any other error means the backend refused the request
	// for good.
	Send(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error)
	// Close releases the sender's connections.
	Close() error
}

// RetryableError is an attempt's error that may not recur when the request
// is repeated.
type RetryableError struct {
	Err error
	// After is how long the backend asked to wait before the next
	// attempt; zero if it did not say.
	After time.Duration
}

func (e *RetryableError) Error() string { return e.Err.Error() }

func (e *RetryableError) Unwrap() error { return e.Err }

// Retryable marks err as transient: the request is tried again, not before
// after (zero: the exporter's own backoff).
func Retryable(err error, after time.Duration) error {
	return &RetryableError{Err: err, After: after}
}

// Config configures an [Exporter].
type Config struct {
	// Endpoint names the backend in logs and errors.
	Endpoint string
	// QueueSize is the number of requests held while the backend is
	// unreachable, counting the one being sent. It must be at least 1.
	QueueSize int
	// Timeout bounds each attempt. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxBackoff bounds the wait between retries of a request. Zero means
	// DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Logger receives the exporter's logs. Nil discards them.
	Logger *slog.Logger
}

// Stats counts what an [Exporter] has done since it was created. Every
// field but Queued only grows.
type Stats struct {
	// Sent is the number of requests the backend accepted.
	Sent uint64
	// SentBytes is the encoded size of those requests, before compression.
	SentBytes uint64
	// Failed is the number of attempts that failed.
	Failed uint64
	// Retries is the number of attempts that repeated an earlier failed
	// attempt of the same request.
	Retries uint64
	// Dropped is the number of requests abandoned without being sent: the
	// oldest ones when the queue overflowed, and those still queued at
	// Close. A request being sent when the queue overflows is counted
	// only once it is abandoned: if its attempt succeeds, it counts as
	// sent.
	Dropped uint64
	// Rejected is the number of requests dropped because the backend
	// answered with a non-retryable error.
	Rejected uint64
	// RejectedProfiles is the number of profiles the backend reported as
	// rejected in partially successful responses.
	RejectedProfiles uint64
	// Queued is the number of requests currently waiting or being sent.
	Queued uint64
}

// item is one queued request.
type item struct {
	req  *collectorpb.ExportProfilesServiceRequest
	size int
	// superseded is set, under Exporter.mu, when the queue overflowed
	// while the item was being sent: the sender abandons it after the
	// current attempt unless that attempt succeeds.
	superseded bool
}

// Exporter queues OTLP profile requests and sends them to one backend
// through a [Sender]. Its methods may be called from several goroutines.
type Exporter struct {
	cfg       Config
	log       *slog.Logger
	transport Sender
	sender    chan struct{} // holds a token while Run or Flush sends
	wake      chan struct{} // signals Run that the queue is not empty
	closing   chan struct{} // closed by Close

	mu       sync.Mutex
	queue    []*item // waiting requests, oldest first
	inflight *item   // the request being sent, if any
	closed   bool
	failing  bool  // whether the last attempt failed, for logging
	lastErr  error // the last failed attempt's error
	stats    Stats // Queued is computed by Stats
}

// New returns an Exporter that sends through s, which it owns from then
// on: Close closes it.
func New(s Sender, cfg Config) (*Exporter, error) {
	switch {
	case s == nil:
		return nil, errors.New("otlpexport: no sender")
	case cfg.QueueSize < 1:
		return nil, fmt.Errorf("otlpexport: queue size %d: must be at least 1", cfg.QueueSize)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("otlpexport: negative timeout %v", cfg.Timeout)
	case cfg.MaxBackoff < 0:
		return nil, fmt.Errorf("otlpexport: negative maximum backoff %v", cfg.MaxBackoff)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Endpoint != "" {
		log = log.With("endpoint", cfg.Endpoint)
	}
	return &Exporter{
		cfg:       cfg,
		log:       log,
		transport: s,
		sender:    make(chan struct{}, 1),
		wake:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
	}, nil
}

// queuedLocked returns the number of requests that count against the
// queue size. e.mu must be held.
func (e *Exporter) queuedLocked() int {
	n := len(e.queue)
	if e.inflight != nil && !e.inflight.superseded {
		n++
	}
	return n
}

// Export enqueues req to be sent by Run or Flush and returns at once. When
// the queue is full, the oldest request is dropped and counted; if that is
// the one being sent, it is abandoned after the attempt under way, and
// counted then, unless that attempt succeeds. The
// exporter keeps req: the caller must not modify it afterwards.
func (e *Exporter) Export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	if req == nil {
		return errors.New("otlpexport: export: nil request")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("otlpexport: export: %w", err)
	}
	it := &item{req: req, size: proto.Size(req)}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	dropped := 0
	for e.queuedLocked() >= e.cfg.QueueSize {
		if e.inflight != nil && !e.inflight.superseded {
			// Counted when the sender abandons it, unless its
			// attempt under way succeeds.
			e.inflight.superseded = true
		} else {
			e.queue[0] = nil
			e.queue = e.queue[1:]
			e.stats.Dropped++
		}
		dropped++
	}
	e.queue = append(e.queue, it)
	total := e.stats.Dropped
	e.mu.Unlock()

	if dropped > 0 {
		e.log.Warn("export queue full, dropped the oldest request",
			"queue_size", e.cfg.QueueSize, "dropped_total", total)
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return nil
}

// Run sends queued requests in order until ctx is done, then returns nil.
// A request that fails with a retryable error is retried, after an
// exponential backoff with jitter bounded by MaxBackoff, before any later
// request is sent; one that fails with a non-retryable error is dropped and
// counted as rejected. A request being sent when ctx is done goes back to
// the front of the queue, for Flush. Run returns ErrClosed when the
// exporter is closed, and only one Run or Flush sends at a time.
func (e *Exporter) Run(ctx context.Context) error {
	if err := e.acquire(ctx); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return nil
	}
	defer e.release()
	for {
		it, err := e.next(ctx)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return err
			}
			return nil
		}
		if err := e.send(ctx, it); errors.Is(err, ErrClosed) {
			return err
		}
	}
}

// Flush sends the requests still queued, in order, each with retries as in
// Run, until the queue is empty or ctx is done. It is meant for shutdown,
// after Run has returned or instead of running it: while Run is sending,
// Flush waits for it to return. It returns an error naming the number of
// requests left unsent and the last failure when ctx ends first.
func (e *Exporter) Flush(ctx context.Context) error {
	if err := e.acquire(ctx); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("otlpexport: flush: waiting for Run to return: %w", err)
	}
	defer e.release()
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return ErrClosed
		}
		if len(e.queue) == 0 {
			e.mu.Unlock()
			return nil
		}
		if err := ctx.Err(); err != nil {
			e.mu.Unlock()
			return e.unsent(err)
		}
		it := e.popLocked()
		e.mu.Unlock()

		if err := e.send(ctx, it); err != nil {
			if errors.Is(err, ErrClosed) {
				return err
			}
			return e.unsent(err)
		}
	}
}

// unsent describes the requests Flush left queued when ctx ended with err.
func (e *Exporter) unsent(err error) error {
	e.mu.Lock()
	n, last := e.queuedLocked(), e.lastErr
	e.mu.Unlock()
	what := fmt.Sprintf("%d requests", n)
	if n == 1 {
		what = "1 request"
	}
	if last == nil {
		return fmt.Errorf("otlpexport: flush to %s: %s unsent: %w", e.cfg.Endpoint, what, err)
	}
	return fmt.Errorf("otlpexport: flush to %s: %s unsent: %w; last error: %w", e.cfg.Endpoint, what, err, last)
}

// Close drops the requests still queued, counting them, and closes the
// sender. Run and Flush return ErrClosed afterwards, and so does
// Export. Closing twice is harmless.
func (e *Exporter) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	n := len(e.queue)
	e.stats.Dropped += uint64(n)
	e.queue = nil
	e.mu.Unlock()

	close(e.closing)
	if n > 0 {
		e.log.Warn("closing exporter, dropped unsent requests", "requests", n)
	}
	if err := e.transport.Close(); err != nil {
		return fmt.Errorf("otlpexport: close connection to %s: %w", e.cfg.Endpoint, err)
	}
	return nil
}

// Stats returns a snapshot of the exporter's counters.
func (e *Exporter) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Queued = uint64(e.queuedLocked())
	return s
}

// acquire takes the sender token, so that Run and Flush never send at the
// same time.
func (e *Exporter) acquire(ctx context.Context) error {
	select {
	case e.sender <- struct{}{}:
		return nil
	case <-e.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Exporter) release() { <-e.sender }

// popLocked moves the oldest queued request to inflight. e.mu must be held
// and the queue must not be empty.
func (e *Exporter) popLocked() *item {
	it := e.queue[0]
	e.queue[0] = nil
	e.queue = e.queue[1:]
	e.inflight = it
	return it
}

// next waits for a queued request and makes it the one in flight.
func (e *Exporter) next(ctx context.Context) (*item, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return nil, ErrClosed
		}
		if len(e.queue) > 0 {
			it := e.popLocked()
			e.mu.Unlock()
			return it, nil
		}
		e.mu.Unlock()

		select {
		case <-e.wake:
		case <-e.closing:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// outcome is what became of a request in flight.
type outcome int

const (
	outcomeSent outcome = iota
	outcomeRejected
	outcomeAbandoned // dropped by a queue overflow, or by Close
	outcomeRequeued  // ctx ended: back to the front of the queue
)

// finish records what became of the request in flight. Each request is
// counted here once, under exactly one of Sent, Rejected and Dropped.
func (e *Exporter) finish(it *item, o outcome) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inflight = nil
	switch o {
	case outcomeSent:
		e.stats.Sent++
		e.stats.SentBytes += uint64(it.size)
	case outcomeRejected:
		e.stats.Rejected++
	case outcomeAbandoned:
		e.stats.Dropped++
	case outcomeRequeued:
		if it.superseded || e.closed {
			e.stats.Dropped++
			break
		}
		e.queue = append([]*item{it}, e.queue...)
	}
}

// send sends the request in flight, retrying retryable failures until it
// is sent, rejected or abandoned, or ctx is done. It returns ctx's error
// when ctx ended first, ErrClosed when the exporter was closed, and nil
// otherwise.
func (e *Exporter) send(ctx context.Context, it *item) error {
	wait := min(InitialBackoff, e.cfg.MaxBackoff)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			e.mu.Lock()
			superseded, closed := it.superseded, e.closed
			e.mu.Unlock()
			if closed {
				e.finish(it, outcomeAbandoned)
				return ErrClosed
			}
			if superseded {
				e.finish(it, outcomeAbandoned)
				return nil
			}
			e.mu.Lock()
			e.stats.Retries++
			e.mu.Unlock()
		}

		err := e.attempt(ctx, it)
		if err == nil {
			e.finish(it, outcomeSent)
			return nil
		}
		if ctx.Err() != nil || pastDeadline(ctx) {
			// Our own deadline or cancellation, not the backend's failure.
			// (The attempt's own copy of ctx's deadline may fire before
			// ctx's.)
			e.finish(it, outcomeRequeued)
			return cmp.Or(ctx.Err(), context.DeadlineExceeded)
		}

		var re *RetryableError
		retry := errors.As(err, &re)
		var delay time.Duration
		if retry {
			delay = min(re.After, MaxRetryAfter)
		}
		e.mu.Lock()
		e.stats.Failed++
		e.lastErr = err
		wasFailing := e.failing
		e.failing = true
		closed := e.closed
		e.mu.Unlock()
		if closed {
			e.finish(it, outcomeAbandoned)
			return ErrClosed
		}
		if !retry {
			e.log.Error("backend rejected request, dropping it", "error", err, "bytes", it.size)
			e.finish(it, outcomeRejected)
			return nil
		}
		if !wasFailing {
			if msg := err.Error(); strings.Contains(msg, "first record does not look like a TLS handshake") ||
				strings.Contains(msg, "server gave HTTP response to HTTPS client") {
				e.log.Warn("export failed, retrying: the endpoint does not seem to speak TLS; if it is plaintext, use --disable-tls (gRPC) or an http:// URL", "error", err)
			} else {
				e.log.Warn("export failed, retrying", "error", err)
			}
		} else {
			e.log.Debug("export failed again, retrying", "error", err, "attempt", attempt+1)
		}

		sleep := max(jitter(wait), delay)
		wait = min(2*wait, e.cfg.MaxBackoff)
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-e.closing:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			e.finish(it, outcomeRequeued)
			return ctx.Err()
		}
	}
}

// pastDeadline reports whether ctx's deadline, if it has one, has come.
func pastDeadline(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// attempt makes one attempt at sending the request in flight.
func (e *Exporter) attempt(ctx context.Context, it *item) error {
	// An attempt under way is not cut off when ctx is cancelled (Run
	// stopping at shutdown): the backend may have the request already,
	// and one cut off would be sent again by Flush. It still ends at
	// ctx's deadline (Flush's) and at the export timeout.
	actx := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		var cancelDL context.CancelFunc
		actx, cancelDL = context.WithDeadline(actx, dl)
		defer cancelDL()
	}
	actx, cancel := context.WithTimeout(actx, e.cfg.Timeout)
	defer cancel()
	ctx = actx
	resp, err := e.transport.Send(ctx, it.req)
	if err != nil {
		return err
	}

	e.mu.Lock()
	recovered := e.failing
	e.failing = false
	e.mu.Unlock()
	if recovered {
		e.log.Info("export recovered")
	}
	if ps := resp.GetPartialSuccess(); ps.GetRejectedProfiles() > 0 || ps.GetErrorMessage() != "" {
		e.mu.Lock()
		e.stats.RejectedProfiles += uint64(max(ps.GetRejectedProfiles(), 0))
		e.mu.Unlock()
		e.log.Warn("backend accepted request partially",
			"rejected_profiles", ps.GetRejectedProfiles(), "message", ps.GetErrorMessage())
	}
	return nil
}

// jitter returns a random duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
