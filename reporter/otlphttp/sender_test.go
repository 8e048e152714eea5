package otlphttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	profilespb "go.opentelemetry.io/proto/otlp/profiles/v1development"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/internal/otlptest"
	"github.com/stackline-dev/stackline/reporter/otlpexport"
)

func request(name string) *collectorpb.ExportProfilesServiceRequest {
	return &collectorpb.ExportProfilesServiceRequest{
		Dictionary: &profilespb.ProfilesDictionary{StringTable: []string{"", name, strings.Repeat("x", 2000)}},
	}
}

func startReceiver(t *testing.T, cfg *otlptest.Certs, requireClient bool) *otlptest.HTTPReceiver {
	t.Helper()
	var r *otlptest.HTTPReceiver
	var err error
	if cfg == nil {
		r, err = otlptest.StartHTTP("127.0.0.1:0", nil)
	} else {
		r, err = otlptest.StartHTTP("127.0.0.1:0", cfg.ServerTLS(requireClient))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

func newSender(t *testing.T, cfg Config) *Sender {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func send(s *Sender, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.Send(ctx, request(name))
	return err
}

// TestPlaintextRequest checks what goes on the wire: a POST to the profiles
// path, protobuf, gzip or not, the configured headers and the user agent.
func TestPlaintextRequest(t *testing.T) {
	for _, noCompression := range []bool{false, true} {
		r := startReceiver(t, nil, false)
		s := newSender(t, Config{
			URL:           r.URL() + ProfilesPath,
			Headers:       map[string]string{"authorization": "Bearer x"},
			NoCompression: noCompression,
			UserAgent:     "stackline/test",
		})
		if err := send(s, "r0"); err != nil {
			t.Fatalf("Send: %v", err)
		}
		reqs := r.Requests()
		if len(reqs) != 1 {
			t.Fatalf("received %d requests", len(reqs))
		}
		got := reqs[0]
		if !proto.Equal(got.Request, request("r0")) {
			t.Errorf("request decoded differently")
		}
		h := got.Header
		if h.Get("Authorization") != "Bearer x" || h.Get("User-Agent") != "stackline/test" || h.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("headers %v", h)
		}
		size := proto.Size(request("r0"))
		if noCompression {
			if enc := h.Get("Content-Encoding"); enc != "" {
				t.Errorf("Content-Encoding %q without compression", enc)
			}
			if got.WireBytes != size {
				t.Errorf("%d bytes on the wire, want %d", got.WireBytes, size)
			}
		} else {
			if enc := h.Get("Content-Encoding"); enc != "gzip" {
				t.Errorf("Content-Encoding %q, want gzip", enc)
			}
			if got.WireBytes >= size/2 {
				t.Errorf("%d bytes on the wire for %d bytes: not compressed", got.WireBytes, size)
			}
		}
	}
}

// TestStatusRetryable: 429, 502, 503 and 504 are retryable with the
// Retry-After delay; other failures are not, and carry the status message.
func TestStatusRetryable(t *testing.T) {
	r := startReceiver(t, nil, false)
	s := newSender(t, Config{URL: r.URL() + ProfilesPath})
	for _, c := range []struct {
		status     int
		retryAfter string
		retryable  bool
		after      time.Duration
	}{
		{http.StatusTooManyRequests, "7", true, 7 * time.Second},
		{http.StatusBadGateway, "", true, 0},
		{http.StatusServiceUnavailable, "2", true, 2 * time.Second},
		{http.StatusGatewayTimeout, "soon", true, 0},
		{http.StatusBadRequest, "", false, 0},
		{http.StatusUnauthorized, "", false, 0},
		{http.StatusRequestEntityTooLarge, "", false, 0},
		{http.StatusInternalServerError, "", false, 0},
	} {
		r.SetReply(func(*collectorpb.ExportProfilesServiceRequest) otlptest.HTTPReply {
			return otlptest.HTTPReply{Status: c.status, RetryAfter: c.retryAfter, Message: "told to fail"}
		})
		err := send(s, "r")
		if err == nil {
			t.Errorf("%d: Send succeeded", c.status)
			continue
		}
		var re *otlpexport.RetryableError
		if got := errors.As(err, &re); got != c.retryable {
			t.Errorf("%d: retryable %v, want %v (%v)", c.status, got, c.retryable, err)
		} else if got && re.After != c.after {
			t.Errorf("%d: retry after %v, want %v", c.status, re.After, c.after)
		}
		if !strings.Contains(err.Error(), "told to fail") {
			t.Errorf("%d: error %q does not carry the status message", c.status, err)
		}
	}
	// A 404 (wrong path) is not retryable and says what the server said.
	s404 := newSender(t, Config{URL: r.URL() + "/v1/profiles"})
	err := send(s404, "r")
	var re *otlpexport.RetryableError
	if err == nil || errors.As(err, &re) || !strings.Contains(err.Error(), "404") {
		t.Errorf("wrong path: %v, want a non-retryable 404", err)
	}
}

func TestPartialSuccess(t *testing.T) {
	r := startReceiver(t, nil, false)
	r.SetReply(func(*collectorpb.ExportProfilesServiceRequest) otlptest.HTTPReply {
		return otlptest.HTTPReply{Response: &collectorpb.ExportProfilesServiceResponse{
			PartialSuccess: &collectorpb.ExportProfilesPartialSuccess{RejectedProfiles: 3, ErrorMessage: "bad"},
		}}
	})
	s := newSender(t, Config{URL: r.URL() + ProfilesPath})
	resp, err := s.Send(context.Background(), request("r"))
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.GetPartialSuccess(); ps.GetRejectedProfiles() != 3 || ps.GetErrorMessage() != "bad" {
		t.Errorf("partial success %v", ps)
	}
}

// TestMutualTLS: with the CA and a client certificate the request goes
// through; without the client certificate, or without the CA, it fails.
func TestMutualTLS(t *testing.T) {
	certs, err := otlptest.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := startReceiver(t, certs, true)
	url := r.URL() + ProfilesPath
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("URL %s", url)
	}

	full, err := otlpexport.LoadTLS(otlpexport.TLSFiles{CA: certs.CAFile, Cert: certs.ClientCertFile, Key: certs.ClientKeyFile})
	if err != nil {
		t.Fatal(err)
	}
	s := newSender(t, Config{URL: url, TLS: full, Headers: map[string]string{"authorization": "Bearer x"}})
	if err := send(s, "r0"); err != nil {
		t.Fatalf("Send with mTLS: %v", err)
	}
	if reqs := r.Requests(); len(reqs) != 1 || reqs[0].Header.Get("Authorization") != "Bearer x" {
		t.Fatalf("received %d requests", len(reqs))
	}

	caOnly, err := otlpexport.LoadTLS(otlpexport.TLSFiles{CA: certs.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	err = send(newSender(t, Config{URL: url, TLS: caOnly}), "r1")
	t.Logf("without a client certificate: %v", err)
	if err == nil {
		t.Error("Send without a client certificate succeeded")
	}

	err = send(newSender(t, Config{URL: url}), "r2") // system roots
	t.Logf("without the CA: %v", err)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Send without the CA = %v, want a certificate error", err)
	}
	if n := len(r.Requests()); n != 1 {
		t.Errorf("%d requests accepted, want 1", n)
	}
}

func TestHTTPSAgainstPlaintext(t *testing.T) {
	r := startReceiver(t, nil, false)
	err := send(newSender(t, Config{URL: strings.Replace(r.URL(), "http://", "https://", 1) + ProfilesPath}), "r")
	t.Logf("https to a plaintext server: %v", err)
	var re *otlpexport.RetryableError
	if err == nil || !errors.As(err, &re) {
		t.Errorf("Send = %v, want a retryable error", err)
	}
}

func TestNewRejects(t *testing.T) {
	for _, u := range []string{"", "collector:4318", "ftp://x/y", "http:///path", "http://[::1"} {
		if _, err := New(Config{URL: u}); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"120":                           2 * time.Minute,
		" 3 ":                           3 * time.Second,
		"-1":                            0,
		"1.5":                           0,
		"Fri, 02 Jan 2026 03:04:35 GMT": 30 * time.Second,
		"Fri, 02 Jan 2026 03:00:00 GMT": 0,
		"garbage":                       0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestProfilesURL(t *testing.T) {
	for base, want := range map[string]string{
		"http://c:4318":         "http://c:4318/v1development/profiles",
		"http://c:4318/":        "http://c:4318/v1development/profiles",
		"https://gw/otlp":       "https://gw/otlp/v1development/profiles",
		"https://gw/otlp/":      "https://gw/otlp/v1development/profiles",
		"https://gw/a%2Fb/?x=1": "https://gw/a%2Fb/v1development/profiles?x=1",
	} {
		got, err := ProfilesURL(base)
		if err != nil || got != want {
			t.Errorf("ProfilesURL(%q) = %q, %v, want %q", base, got, err, want)
		}
	}
}

// TestGzipWriterReused: requests sent one after another and at once from
// several goroutines, all compressed with the sender's one gzip writer,
// each arrive whole.
func TestGzipWriterReused(t *testing.T) {
	r := startReceiver(t, nil, false)
	s := newSender(t, Config{URL: r.URL() + ProfilesPath})
	const senders, each = 4, 5
	errs := make(chan error, senders*each)
	for g := range senders {
		go func() {
			for i := range each {
				errs <- send(s, fmt.Sprintf("r%d-%d", g, i))
			}
		}()
	}
	for range senders * each {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, got := range r.Requests() {
		if got.Header.Get("Content-Encoding") != "gzip" {
			t.Fatal("request not gzipped")
		}
		name := got.Request.Dictionary.StringTable[1]
		if !proto.Equal(got.Request, request(name)) {
			t.Fatalf("request %s decoded differently", name)
		}
		seen[name] = true
	}
	if len(seen) != senders*each {
		t.Fatalf("%d distinct requests arrived, want %d", len(seen), senders*each)
	}
}
