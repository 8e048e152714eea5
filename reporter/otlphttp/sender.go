// Package otlphttp sends OTLP profile requests to a backend over HTTP
// (OTLP/HTTP, binary protobuf): it is the OTLP/HTTP transport of an
// [otlpexport.Exporter].
package otlphttp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/profiles/v1development"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/stackline-dev/stackline/reporter/deflate"
	"github.com/stackline-dev/stackline/reporter/otlpexport"
)

// ProfilesPath is the path of the profiles signal on an OTLP/HTTP receiver
// (the OpenTelemetry Collector's OTLP receiver serves it there), appended to
// a base URL.
const ProfilesPath = "/v1development/profiles"

// contentType is the media type of binary protobuf requests and responses.
const contentType = "application/x-protobuf"

// maxResponseBytes bounds how much of a response body is read.
const maxResponseBytes = 1 << 20

// Config configures a [Sender].
type Config struct {
	// URL is the full URL requests are posted to, path included, with
	// scheme http (plaintext) or https.
	URL string
	// TLS is the TLS configuration for https; nil verifies the backend
	// against the system's root certificates. It is not used for http.
	TLS *tls.Config
	// Headers are sent with every request, for example for
	// authentication.
	Headers map[string]string
	// NoCompression sends request bodies uncompressed instead of gzipped.
	NoCompression bool
	// UserAgent is sent with every request; empty means "stackline".
	UserAgent string
}

// Sender posts OTLP/HTTP export requests. It implements
// [otlpexport.Sender].
type Sender struct {
	url       string
	client    *http.Client
	transport *http.Transport
	header    http.Header
	gzip      bool

	// zmu guards zw, the one encoder every request is compressed with
	// (about 400 KB of tables, made on the first request).
	zmu sync.Mutex
	zw  *deflate.Encoder
}

// New returns a Sender for cfg. It does not connect until the first
// request.
func New(cfg Config) (*Sender, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("otlphttp: URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("otlphttp: URL %q: scheme must be http or https", cfg.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("otlphttp: URL %q: no host", cfg.URL)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "stackline"
	}
	header := http.Header{}
	for k, v := range cfg.Headers {
		header.Set(k, v)
	}
	header.Set("Content-Type", contentType)
	header.Set("User-Agent", cfg.UserAgent)
	// Exactly one value: a receiver refuses a repeated key.
	header.Set(otlpexport.DevelopmentVersionKey, otlpexport.DevelopmentVersion)
	if !cfg.NoCompression {
		header.Set("Content-Encoding", "gzip")
	}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.TLS != nil {
		tr.TLSClientConfig = cfg.TLS.Clone()
	} else {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tr.ForceAttemptHTTP2 = true
	return &Sender{
		url:       u.String(),
		client:    &http.Client{Transport: tr},
		transport: tr,
		header:    header,
		gzip:      !cfg.NoCompression,
	}, nil
}

// compress returns body gzipped, into a buffer of its own: the request
// may still be read after Send returns.
func (s *Sender) compress(body []byte) ([]byte, error) {
	s.zmu.Lock()
	defer s.zmu.Unlock()
	if s.zw == nil {
		s.zw = deflate.NewEncoder()
	}
	return s.zw.AppendGzip(make([]byte, 0, len(body)/3), body)
}

// Send posts req once. Failures the OTLP/HTTP specification calls
// retryable (429, 502, 503, 504, and failures to connect or to get an
// answer) are wrapped with [otlpexport.Retryable], with the delay of the
// Retry-After header if there is one; other statuses mean the backend
// refused the request for good.
func (s *Sender) Send(ctx context.Context, req *collectorpb.ExportProfilesServiceRequest) (*collectorpb.ExportProfilesServiceResponse, error) {
	body, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("otlphttp: encode request: %w", err)
	}
	if s.gzip {
		if body, err = s.compress(body); err != nil {
			return nil, fmt.Errorf("otlphttp: compress request: %w", err)
		}
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("otlphttp: %w", err)
	}
	hreq.Header = s.header.Clone()

	resp, err := s.client.Do(hreq)
	if err != nil {
		return nil, otlpexport.Retryable(fmt.Errorf("otlphttp: %w", err), 0)
	}
	defer resp.Body.Close()
	data, readErr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if readErr != nil {
			// The request was accepted; only the partial success
			// detail is lost.
			return &collectorpb.ExportProfilesServiceResponse{}, nil
		}
		return decodeResponse(resp.Header.Get("Content-Type"), data)
	}

	err = fmt.Errorf("otlphttp: %s: %s", resp.Status, statusMessage(resp.Header.Get("Content-Type"), data))
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return nil, otlpexport.Retryable(err, retryAfter(resp.Header.Get("Retry-After"), time.Now()))
	}
	return nil, err
}

// Close closes idle connections.
func (s *Sender) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// decodeResponse decodes a successful response body, which carries the
// partial success, if any.
func decodeResponse(ctype string, data []byte) (*collectorpb.ExportProfilesServiceResponse, error) {
	resp := &collectorpb.ExportProfilesServiceResponse{}
	if len(data) == 0 || !isProtobuf(ctype) {
		return resp, nil
	}
	if err := proto.Unmarshal(data, resp); err != nil {
		// Accepted all the same: the backend took the request.
		return &collectorpb.ExportProfilesServiceResponse{}, nil
	}
	return resp, nil
}

// statusMessage returns the message of an error response: the
// google.rpc.Status the OTLP/HTTP specification asks for, or the start of
// a text body.
func statusMessage(ctype string, data []byte) string {
	if isProtobuf(ctype) {
		var st spb.Status
		if err := proto.Unmarshal(data, &st); err == nil && st.GetMessage() != "" {
			return st.GetMessage()
		}
	}
	msg := strings.TrimSpace(strings.ToValidUTF8(string(data), "?"))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = "no message"
	}
	return msg
}

func isProtobuf(ctype string) bool {
	mt, _, err := mime.ParseMediaType(ctype)
	return err == nil && mt == contentType
}

// retryAfter parses a Retry-After header value, delay-seconds or an
// HTTP-date, as the wait from now; zero when absent or malformed.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// errNoURL is returned by ProfilesURL for an empty base.
var errNoURL = errors.New("no URL")

// ProfilesURL returns the profiles URL under base, an OTLP/HTTP base URL
// such as http://collector:4318: ProfilesPath appended to its path.
func ProfilesURL(base string) (string, error) {
	if base == "" {
		return "", errNoURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + ProfilesPath
	if u.RawPath != "" {
		u.RawPath = strings.TrimSuffix(u.RawPath, "/") + ProfilesPath
	}
	return u.String(), nil
}
