package flamegraph

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"

	"github.com/stackline-dev/stackline/reporter/localfile"
	"github.com/stackline-dev/stackline/reporter/semconv"
)

//go:embed assets
var assets embed.FS

// Limits of the server.
const (
	// maxSubscribers bounds the pages that follow updates at once.
	maxSubscribers = 64
	// maxListed bounds the processes and threads a view lists for its
	// filters (the heaviest first).
	maxListed = 500
	// maxFocus bounds the frames of a focus.
	maxFocus = 1024
	// maxViews bounds the views built at once: each takes memory in
	// proportion to its stacks; more requests wait their turn.
	maxViews = 2
)

// Options configures a [Server].
type Options struct {
	// History is how long an interval is kept (--http-history).
	History time.Duration
	// MaxStacks bounds the distinct stacks kept (--http-max-stacks).
	MaxStacks int
	// Address is the address the server listens on. When it is a
	// loopback address (or "localhost"), requests that name any other
	// host are refused, so that a web page elsewhere cannot reach the
	// server through a DNS name that resolves to loopback.
	Address string
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server is the live flame graph: it takes the reporter's exports (it is
// a reporter.Exporter) and serves the page and its data. Create it with
// [New]; register its handlers on a mux with [Server.Register].
type Server struct {
	store    *Store
	log      *slog.Logger
	loopback bool
	views    chan struct{} // a token for each view being built

	mu     sync.Mutex
	subs   map[chan struct{}]struct{}
	closed bool
}

// New returns a server with an empty store.
func New(opts Options) (*Server, error) {
	store, err := NewStore(opts.History, opts.MaxStacks)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{store: store, log: log, subs: make(map[chan struct{}]struct{}), views: make(chan struct{}, maxViews)}
	if opts.Address != "" {
		host, _, err := net.SplitHostPort(opts.Address)
		if err != nil {
			return nil, fmt.Errorf("flamegraph: address %q: %w", opts.Address, err)
		}
		s.loopback = isLoopbackHost(host)
	}
	return s, nil
}

// Store returns the server's store.
func (s *Server) Store() *Store { return s.store }

// Export folds req into the store and tells the pages that follow
// updates. It never blocks on a page.
func (s *Server) Export(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("flamegraph: %w", err)
	}
	f, err := localfile.Fold(req)
	if err != nil {
		return fmt.Errorf("flamegraph: %w", err)
	}
	s.add(f)
	return nil
}

// add adds f to the store and tells the pages that follow updates.
func (s *Server) add(f *localfile.Folded) {
	if len(f.Stacks) == 0 {
		return
	}
	s.store.Add(f)
	s.mu.Lock()
	for c := range s.subs {
		select {
		case c <- struct{}{}:
		default: // a notice is pending already
		}
	}
	s.mu.Unlock()
}

// Close ends the update streams of the pages that follow them, so that an
// http.Server serving them can shut down. Export still works after it.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.subs {
		close(c)
		delete(s.subs, c)
	}
}

// Register adds the page and its data to mux, GET (and HEAD) only:
//
//	/                   the page
//	/flamegraph.js      its script
//	/flamegraph.css     its style
//	/api/flamegraph     the flame graph of a view, as JSON
//	/api/flamegraph.pb.gz  the stacks of a view as a gzipped pprof profile
//	/api/events         a server-sent event "interval" as each interval is added
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", s.guard(s.asset("assets/index.html", "text/html; charset=utf-8")))
	mux.Handle("GET /flamegraph.js", s.guard(s.asset("assets/flamegraph.js", "text/javascript; charset=utf-8")))
	mux.Handle("GET /flamegraph.css", s.guard(s.asset("assets/flamegraph.css", "text/css; charset=utf-8")))
	mux.Handle("GET /api/flamegraph", s.guard(http.HandlerFunc(s.serveGraph)))
	mux.Handle("GET /api/flamegraph.pb.gz", s.guard(http.HandlerFunc(s.servePprof)))
	mux.Handle("GET /api/events", s.guard(http.HandlerFunc(s.serveEvents)))
}

// guard refuses requests for other hosts when the server listens on
// loopback, and sets the headers every answer carries: no cross-origin
// use, no framing, no sniffing.
func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.loopback {
			host := r.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if !isLoopbackHost(host) {
				http.Error(w, "this server answers to loopback host names only", http.StatusMisdirectedRequest)
				return
			}
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// isLoopbackHost reports whether host (without port) is "localhost", a
// name under ".localhost", or a loopback IP address.
func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) asset(name, contentType string) http.Handler {
	data, err := assets.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("flamegraph: embedded asset %s: %v", name, err)) // the embed directive holds it
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	})
}

// parseQuery reads a view from the request's query parameters: window
// (seconds), type, process, pid, thread and focus (repeated, process
// first).
func parseQuery(r *http.Request) (Query, error) {
	v := r.URL.Query()
	var q Query
	if w := v.Get("window"); w != "" {
		secs, err := strconv.ParseUint(w, 10, 32)
		if err != nil || secs == 0 {
			return q, fmt.Errorf("window %q: want a positive number of seconds", w)
		}
		q.Window = time.Duration(secs) * time.Second
	}
	if p := v.Get("pid"); p != "" {
		pid, err := strconv.ParseInt(p, 10, 64)
		if err != nil || pid <= 0 {
			return q, fmt.Errorf("pid %q: want a process ID", p)
		}
		q.PID = pid
	}
	q.Type, q.Process, q.Thread = v.Get("type"), v.Get("process"), v.Get("thread")
	q.Focus = v["focus"]
	if len(q.Focus) > maxFocus {
		return q, fmt.Errorf("focus: %d frames, at most %d", len(q.Focus), maxFocus)
	}
	return q, nil
}

// graphJSON is the answer of /api/flamegraph.
type graphJSON struct {
	// Type and Unit are the view's sample type; Types those held.
	Type  string     `json:"type"`
	Unit  string     `json:"unit"`
	Types []typeJSON `json:"types"`
	// Window and History are in seconds.
	Window  float64 `json:"window"`
	History float64 `json:"history"`
	// Start and End bound the view's intervals, in Unix milliseconds.
	Start     int64 `json:"start"`
	End       int64 `json:"end"`
	Intervals int   `json:"intervals"`
	// Version changes with each interval added.
	Version uint64 `json:"version"`
	// Stacks is the number of distinct stacks in the view; Dropped the
	// value of stacks left out to stay within --http-max-stacks.
	Stacks  int   `json:"stacks"`
	Dropped int64 `json:"dropped"`
	// Functions: names, files and kinds, indexed by Nodes.Fn.
	Names []string `json:"names"`
	Files []string `json:"files"`
	Kinds []string `json:"kinds"`
	// Kind indexes Kinds for each function.
	Kind []int `json:"kind"`
	// Nodes, in depth-first order, column by column, are written after
	// the fields above by writeGraph: "nodes": {"fn": [...], "line":
	// [...], "depth": [...], "total": [...], "self": [...]}.
	nodes *tree
	// Processes and Threads list what the filters offer, heaviest first.
	Processes []processJSON `json:"processes"`
	Threads   []threadJSON  `json:"threads"`
}

type typeJSON struct {
	Type string `json:"type"`
	Unit string `json:"unit"`
}

type processJSON struct {
	Name  string `json:"name"`
	PID   int64  `json:"pid"`
	Value int64  `json:"value"`
}

type threadJSON struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
}

// Graph returns the flame graph of the view q as /api/flamegraph answers
// it, JSON-encoded.
func (s *Server) Graph(q Query) ([]byte, error) {
	var b bytes.Buffer
	if err := writeGraph(&b, s.view(q)); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// view builds the flame graph of the view q.
func (s *Server) view(q Query) *graphJSON {
	st := s.store
	st.mu.Lock()
	sel := st.selectStacks(q)
	t := st.buildTree(sel)
	g := graphJSON{
		Type:      sel.q.Type,
		Window:    sel.q.Window.Seconds(),
		History:   st.history.Seconds(),
		Intervals: sel.intervals,
		Version:   st.version,
		Stacks:    len(sel.values),
		Dropped:   sel.dropped,
		nodes:     t,
	}
	st.mu.Unlock()

	for _, ty := range sel.types {
		g.Types = append(g.Types, typeJSON{Type: ty.Type, Unit: ty.Unit})
		if ty.Type == g.Type {
			g.Unit = ty.Unit
		}
	}
	if !sel.start.IsZero() {
		g.Start, g.End = sel.start.UnixMilli(), sel.end.UnixMilli()
	}
	// Kinds are few: send each once.
	kinds := map[string]int{}
	g.Names = make([]string, len(t.funcs))
	g.Files = make([]string, len(t.funcs))
	g.Kind = make([]int, len(t.funcs))
	for i, f := range t.funcs {
		g.Names[i], g.Files[i] = f.name, f.file
		k, ok := kinds[f.kind]
		if !ok {
			k = len(g.Kinds)
			kinds[f.kind] = k
			g.Kinds = append(g.Kinds, f.kind)
		}
		g.Kind[i] = k
	}
	for p, v := range sel.processes {
		g.Processes = append(g.Processes, processJSON{Name: p.name, PID: p.pid, Value: v})
	}
	sortByValue(g.Processes, func(p processJSON) int64 { return p.Value }, func(a, b processJSON) int {
		return cmpString(a.Name, b.Name, a.PID, b.PID)
	})
	for name, v := range sel.threads {
		g.Threads = append(g.Threads, threadJSON{Name: name, Value: v})
	}
	sortByValue(g.Threads, func(t threadJSON) int64 { return t.Value }, func(a, b threadJSON) int {
		return cmpString(a.Name, b.Name, 0, 0)
	})
	g.Processes = g.Processes[:min(len(g.Processes), maxListed)]
	g.Threads = g.Threads[:min(len(g.Threads), maxListed)]
	return &g
}

// writeGraph writes g as JSON, its nodes column by column without
// holding the text in memory.
func writeGraph(w io.Writer, g *graphJSON) error {
	head, err := json.Marshal(g)
	if err != nil {
		return fmt.Errorf("flamegraph: encode: %w", err)
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.Write(head[:len(head)-1]) // without its closing brace
	t := g.nodes
	var num []byte
	sep := ""
	column := func(name string, n int, value func(int) int64) {
		bw.WriteString(sep + `"` + name + `":[`)
		sep = ","
		for i := range n {
			if i > 0 {
				bw.WriteByte(',')
			}
			num = strconv.AppendInt(num[:0], value(i), 10)
			bw.Write(num)
		}
		bw.WriteByte(']')
	}
	bw.WriteString(`,"nodes":{`)
	n := len(t.fn)
	column("fn", n, func(i int) int64 { return int64(t.fn[i]) })
	column("line", n, func(i int) int64 { return t.line[i] })
	column("depth", n, func(i int) int64 { return int64(t.depth[i]) })
	column("total", n, func(i int) int64 { return t.total[i] })
	column("self", n, func(i int) int64 { return t.self[i] })
	bw.WriteString("}}")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("flamegraph: write: %w", err)
	}
	return nil
}

func (s *Server) serveGraph(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// Held while the answer is written: the view's tree lives until then.
	if !s.acquire(r) {
		return
	}
	defer s.release()
	g := s.view(q)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	var out io.Writer = w
	if acceptsGzip(r) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Add("Vary", "Accept-Encoding")
		gz := gzipWriters.Get().(*gzip.Writer)
		gz.Reset(w)
		defer func() {
			gz.Close()
			gz.Reset(io.Discard) // let go of w
			gzipWriters.Put(gz)
		}()
		out = gz
	}
	if err := writeGraph(out, g); err != nil {
		s.log.Debug("flame graph", "error", err) // the page went away
	}
}

// gzipWriters are reused: each holds its compressor's tables, several
// hundred KB.
var gzipWriters = sync.Pool{New: func() any {
	gz, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // a valid level cannot fail
	return gz
}}

// acquire waits for a turn to build a view, false when the client went
// away first.
func (s *Server) acquire(r *http.Request) bool {
	select {
	case s.views <- struct{}{}:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (s *Server) release() { <-s.views }

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if enc, _, _ := strings.Cut(strings.TrimSpace(part), ";"); enc == "gzip" {
			return true
		}
	}
	return false
}

func (s *Server) servePprof(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !s.acquire(r) {
		return
	}
	var buf bytes.Buffer
	st := s.store
	st.mu.Lock()
	sel := st.selectStacks(q)
	err = st.writePprof(&buf, sel)
	typ := sel.q.Type
	st.mu.Unlock()
	s.release()
	if err != nil {
		s.log.Warn("flame graph pprof", "error", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// Named as the local files are: stackline-T.pb.gz for CPU samples,
	// stackline-T.offcpu.pb.gz for waits.
	name := "stackline-" + time.Now().UTC().Format("20060102T150405Z")
	if typ == semconv.SampleTypeOffCPU {
		name += ".offcpu"
	}
	name += ".pb.gz"
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}

// serveEvents streams a server-sent event "interval", whose data is the
// store's version, whenever an interval is added, until the client goes
// away or the server is closed.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	c := make(chan struct{}, 1)
	s.mu.Lock()
	if s.closed || len(s.subs) >= maxSubscribers {
		s.mu.Unlock()
		http.Error(w, "too many pages follow updates", http.StatusServiceUnavailable)
		return
	}
	s.subs[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, c) // gone already after Close
		s.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	send := func() error {
		if _, err := fmt.Fprintf(w, "event: interval\ndata: %d\n\n", s.store.Version()); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(); err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case _, ok := <-c:
			if !ok {
				return
			}
			if err := send(); err != nil {
				if !errors.Is(err, http.ErrNotSupported) {
					s.log.Debug("flame graph events", "error", err)
				}
				return
			}
		}
	}
}
