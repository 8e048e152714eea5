// Package otlpgrpc sends OTLP profiles to a backend over gRPC.
//
// An [Exporter] decouples the reporter from the backend: [Exporter.Export]
// only enqueues a request and never blocks, while [Exporter.Run] sends the
// queue in order, gzip-compressed, retrying failures the backend marks as
// transient. When the backend stays down and the queue fills up, the oldest
// request is dropped, so that a recovered backend receives the newest data.
// On shutdown, [Exporter.Flush] sends what is left within a deadline.
package otlpgrpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Defaults applied by [New] to zero fields of [Config].
const (
	DefaultTimeout    = 10 * time.Second
	DefaultMaxBackoff = 30 * time.Second
)

// initialBackoff is the first wait before a retry, when MaxBackoff allows.
const initialBackoff = time.Second

// minConnectTimeout bounds how long one connection attempt may take.
const minConnectTimeout = 20 * time.Second

// ErrClosed is returned by the methods of an [Exporter] that has been
// closed.
var ErrClosed = errors.New("otlpgrpc: exporter closed")

// Config configures an [Exporter].
type Config struct {
	// Endpoint is the backend's address as host:port.
	Endpoint string
	// Insecure disables TLS (--disable-tls). By default the connection
	// uses TLS, verified against the system's root certificates.
	Insecure bool
	// QueueSize is the number of requests held while the backend is
	// unreachable, counting the one being sent. It must be at least 1.
	QueueSize int
	// Timeout bounds each RPC. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxBackoff bounds the wait between retries of a request, and between
	// connection attempts. Zero means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Headers are sent as gRPC metadata with every request, for example
	// for authentication.
	Headers map[string]string
	// Logger receives the exporter's logs. Nil discards them.
	Logger *slog.Logger
}

// Stats counts what an [Exporter] has done since it was created.
type Stats struct {
	// Sent is the number of requests the backend accepted.
	Sent uint64
	// SentBytes is the encoded size of those requests, before compression.
	SentBytes uint64
	// Failed is the number of RPC attempts that failed.
	Failed uint64
	// Retries is the number of attempts that repeated an earlier failed
	// attempt of the same request.
	Retries uint64
	// Dropped is the number of requests dropped without being sent: the
	// oldest ones when the queue overflowed, and those still queued at
	// Close.
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
	// dropped is set, under Exporter.mu, when the queue overflowed while
	// the item was being sent: the sender abandons it after the current
	// attempt unless that attempt succeeds.
	dropped bool
}

// Exporter sends OTLP profile requests to one backend over gRPC. Its
// methods may be called from several goroutines.
type Exporter struct {
	cfg     Config
	log     *slog.Logger
	conn    *grpc.ClientConn
	client  collectorpb.ProfilesServiceClient
	md      metadata.MD
	sender  chan struct{} // holds a token while Run or Flush sends
	wake    chan struct{} // signals Run that the queue is not empty
	closing chan struct{} // closed by Close

	mu       sync.Mutex
	queue    []*item // waiting requests, oldest first
	inflight *item   // the request being sent, if any
	closed   bool
	failing  bool  // whether the last attempt failed, for logging
	lastErr  error // the last failed attempt's error
	stats    Stats // Queued is computed by Stats
}

// New returns an Exporter for cfg. It does not connect: the connection is
// made when the first request is sent, and remade as needed.
func New(cfg Config) (*Exporter, error) {
	switch {
	case cfg.Endpoint == "":
		return nil, errors.New("otlpgrpc: no endpoint")
	case strings.Contains(cfg.Endpoint, "://"):
		return nil, fmt.Errorf("otlpgrpc: endpoint %q: want host:port, without a scheme", cfg.Endpoint)
	case cfg.QueueSize < 1:
		return nil, fmt.Errorf("otlpgrpc: queue size %d: must be at least 1", cfg.QueueSize)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("otlpgrpc: negative timeout %v", cfg.Timeout)
	case cfg.MaxBackoff < 0:
		return nil, fmt.Errorf("otlpgrpc: negative maximum backoff %v", cfg.MaxBackoff)
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
	log = log.With("endpoint", cfg.Endpoint)

	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	if cfg.Insecure {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(cfg.Endpoint,
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("stackline"),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  min(initialBackoff, cfg.MaxBackoff),
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   cfg.MaxBackoff,
			},
			MinConnectTimeout: minConnectTimeout,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("otlpgrpc: client for %s: %w", cfg.Endpoint, err)
	}
	md := metadata.MD{}
	for k, v := range cfg.Headers {
		md.Append(k, v)
	}
	return &Exporter{
		cfg:     cfg,
		log:     log,
		conn:    conn,
		client:  collectorpb.NewProfilesServiceClient(conn),
		md:      md,
		sender:  make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
	}, nil
}

// queuedLocked returns the number of requests that count against the
// queue size. e.mu must be held.
func (e *Exporter) queuedLocked() int {
	n := len(e.queue)
	if e.inflight != nil && !e.inflight.dropped {
		n++
	}
	return n
}

// Export enqueues req to be sent by Run or Flush and returns at once. When
// the queue is full, the oldest request is dropped and counted. The
// exporter keeps req: the caller must not modify it afterwards.
func (e *Exporter) Export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	if req == nil {
		return errors.New("otlpgrpc: export: nil request")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("otlpgrpc: export: %w", err)
	}
	it := &item{req: req, size: proto.Size(req)}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	dropped := 0
	for e.queuedLocked() >= e.cfg.QueueSize {
		if e.inflight != nil && !e.inflight.dropped {
			e.inflight.dropped = true
		} else {
			e.queue[0] = nil
			e.queue = e.queue[1:]
		}
		e.stats.Dropped++
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
		return fmt.Errorf("otlpgrpc: flush: waiting for Run to return: %w", err)
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
		return fmt.Errorf("otlpgrpc: flush to %s: %s unsent: %w", e.cfg.Endpoint, what, err)
	}
	return fmt.Errorf("otlpgrpc: flush to %s: %s unsent: %w; last error: %w", e.cfg.Endpoint, what, err, last)
}

// Close drops the requests still queued, counting them, and closes the
// connection. Run and Flush return ErrClosed afterwards, and so does
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
	if err := e.conn.Close(); err != nil {
		return fmt.Errorf("otlpgrpc: close connection to %s: %w", e.cfg.Endpoint, err)
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

// finish records what became of the request in flight.
func (e *Exporter) finish(it *item, o outcome) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inflight = nil
	switch o {
	case outcomeSent:
		e.stats.Sent++
		e.stats.SentBytes += uint64(it.size)
		if it.dropped {
			e.stats.Dropped-- // Counted when it overflowed, but delivered.
		}
	case outcomeRejected:
		if !it.dropped {
			e.stats.Rejected++
		}
	case outcomeAbandoned:
		if !it.dropped {
			e.stats.Dropped++
		}
	case outcomeRequeued:
		if it.dropped {
			break
		}
		if e.closed {
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
	wait := min(initialBackoff, e.cfg.MaxBackoff)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			e.mu.Lock()
			dropped, closed := it.dropped, e.closed
			e.mu.Unlock()
			if closed {
				e.finish(it, outcomeAbandoned)
				return ErrClosed
			}
			if dropped {
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
		if ctx.Err() != nil {
			// Our own deadline or cancellation, not the backend's failure.
			e.finish(it, outcomeRequeued)
			return ctx.Err()
		}

		retry, delay := retryable(err)
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
			if strings.Contains(err.Error(), "first record does not look like a TLS handshake") {
				e.log.Warn("export failed, retrying: the endpoint does not seem to speak TLS; set Insecure (--disable-tls) if it is plaintext", "error", err)
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

// attempt makes one RPC.
func (e *Exporter) attempt(ctx context.Context, it *item) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	if len(e.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, e.md)
	}
	resp, err := e.client.Export(ctx, it.req, grpc.UseCompressor(gzip.Name))
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

// retryable reports whether an RPC that failed with err may succeed when
// repeated, and how long the backend asked to wait first, if it did.
func retryable(err error) (bool, time.Duration) {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted,
		codes.OutOfRange, codes.Unavailable, codes.DataLoss:
	default:
		return false, 0
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return true, ri.GetRetryDelay().AsDuration()
		}
	}
	return true, 0
}

// jitter returns a random duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
