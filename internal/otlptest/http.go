package otlptest

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

// ProfilesPath is where HTTPReceiver serves the profiles signal, as the
// OpenTelemetry Collector's OTLP receiver does.
const ProfilesPath = "/v1development/profiles"

// HTTPReply is how an HTTPReceiver answers one request.
type HTTPReply struct {
	// Status is the HTTP status; 0 means 200. A request answered with
	// another status than 2xx is not recorded.
	Status int
	// RetryAfter, if not empty, is sent as the Retry-After header.
	RetryAfter string
	// Response is the body of a successful answer (partial success);
	// nil sends an empty response message.
	Response *collectorpb.ExportProfilesServiceResponse
	// Message is the google.rpc.Status message of a failed answer.
	Message string
}

// HTTPRequest is a request an HTTPReceiver accepted.
type HTTPRequest struct {
	Request *collectorpb.ExportProfilesServiceRequest
	// Header holds the request's HTTP headers.
	Header http.Header
	// WireBytes is the size of the body as sent (compressed or not).
	WireBytes int
}

// HTTPReceiver is an OTLP/HTTP profiles receiver: it decodes binary
// protobuf requests posted to ProfilesPath, gzip-compressed or not. Its
// methods are safe for concurrent use.
type HTTPReceiver struct {
	srv  *http.Server
	ln   net.Listener
	url  string
	done chan struct{}

	mu       sync.Mutex
	requests []HTTPRequest
	attempts int
	reply    func(*collectorpb.ExportProfilesServiceRequest) HTTPReply
}

// StartHTTP listens on addr ("127.0.0.1:0" for any free port) and serves
// until Stop: plaintext HTTP when cfg is nil, HTTPS with cfg otherwise.
func StartHTTP(addr string, cfg *tls.Config) (*HTTPReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &HTTPReceiver{ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc(ProfilesPath, r.handle)
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if cfg != nil {
		scheme = "https"
		r.srv.TLSConfig = cfg
		ln = tls.NewListener(ln, cfg)
	}
	r.url = scheme + "://" + r.ln.Addr().String()
	go func() {
		defer close(r.done)
		r.srv.Serve(ln) // ends with Stop
	}()
	return r, nil
}

// URL is the receiver's base URL, scheme://host:port, without the path.
func (r *HTTPReceiver) URL() string { return r.url }

// Addr is the host:port the receiver listens on.
func (r *HTTPReceiver) Addr() string { return r.ln.Addr().String() }

// Stop closes the listener and every connection at once.
func (r *HTTPReceiver) Stop() {
	r.srv.Close()
	<-r.done
}

// SetReply makes the receiver answer each decoded request with f's reply.
// Nil f accepts every request again.
func (r *HTTPReceiver) SetReply(f func(*collectorpb.ExportProfilesServiceRequest) HTTPReply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reply = f
}

// Requests returns the requests accepted so far, in order.
func (r *HTTPReceiver) Requests() []HTTPRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]HTTPRequest(nil), r.requests...)
}

// Attempts is the number of requests received, accepted or not.
func (r *HTTPReceiver) Attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.attempts
}

func (r *HTTPReceiver) handle(w http.ResponseWriter, hr *http.Request) {
	r.mu.Lock()
	r.attempts++
	reply := r.reply
	r.mu.Unlock()
	if hr.Method != http.MethodPost {
		http.Error(w, "only POST", http.StatusMethodNotAllowed)
		return
	}
	if ct := hr.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, fmt.Sprintf("content type %q: want application/x-protobuf", ct), http.StatusUnsupportedMediaType)
		return
	}
	wire, err := io.ReadAll(hr.Body)
	if err != nil {
		writeStatus(w, http.StatusBadRequest, err.Error())
		return
	}
	body := wire
	switch enc := hr.Header.Get("Content-Encoding"); enc {
	case "", "identity", "none":
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(wire))
		if err == nil {
			body, err = io.ReadAll(zr)
		}
		if err != nil {
			writeStatus(w, http.StatusBadRequest, "gzip: "+err.Error())
			return
		}
	default:
		writeStatus(w, http.StatusBadRequest, "unsupported content encoding "+enc)
		return
	}
	req := &collectorpb.ExportProfilesServiceRequest{}
	if err := proto.Unmarshal(body, req); err != nil {
		writeStatus(w, http.StatusBadRequest, "decode: "+err.Error())
		return
	}
	var rep HTTPReply
	if reply != nil {
		rep = reply(req)
	}
	if rep.RetryAfter != "" {
		w.Header().Set("Retry-After", rep.RetryAfter)
	}
	if rep.Status != 0 && (rep.Status < 200 || rep.Status > 299) {
		writeStatus(w, rep.Status, rep.Message)
		return
	}
	resp := rep.Response
	if resp == nil {
		resp = &collectorpb.ExportProfilesServiceResponse{}
	}
	out, err := proto.Marshal(resp)
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, err.Error())
		return
	}
	r.mu.Lock()
	r.requests = append(r.requests, HTTPRequest{Request: req, Header: hr.Header.Clone(), WireBytes: len(wire)})
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	if rep.Status != 0 {
		w.WriteHeader(rep.Status)
	}
	w.Write(out)
}

// writeStatus answers with code and a google.rpc.Status body, as OTLP/HTTP
// receivers do.
func writeStatus(w http.ResponseWriter, code int, msg string) {
	out, err := proto.Marshal(&spb.Status{Message: msg})
	if err != nil {
		http.Error(w, msg, code)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(code)
	w.Write(out)
}
