package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// Where Debian's chromium and chromium-driver put the browser and its
// driver.
const (
	chromiumPath     = "/usr/bin/chromium"
	chromedriverPath = "/usr/bin/chromedriver"
)

// elementKey is the W3C WebDriver's key of an element reference.
const elementKey = "element-6066-11e4-a52e-4f735466cecf"

// browser is a headless Chromium driven through chromedriver's W3C
// WebDriver HTTP API.
type browser struct {
	t       testing.TB
	base    string // the session's URL
	client  *http.Client
	timeout time.Duration
}

// startBrowser starts chromedriver and a headless Chromium session of a
// 1400x900 window; both stop when the test ends. Missing when either is
// not installed.
func startBrowser(t testing.TB) *browser {
	t.Helper()
	for _, p := range []string{chromiumPath, chromedriverPath} {
		if _, err := os.Stat(p); err != nil {
			testenv.Missing(t, "%s is not installed (apt-get install chromium chromium-driver)", p)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var logs bytes.Buffer
	cmd := exec.Command(chromedriverPath, "--port="+strconv.Itoa(port), "--allowed-ips=127.0.0.1")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("chromedriver: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	b := &browser{t: t, client: &http.Client{Timeout: 2 * time.Minute}, timeout: 30 * time.Second}
	driver := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var status struct {
			Ready bool `json:"ready"`
		}
		if err := b.call("GET", driver+"/status", nil, &status); err == nil && status.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver not ready after 20s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chromiumPath,
			"args": []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
				"--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,900",
				"--disable-dev-shm-usage", "--hide-scrollbars"},
		},
	}}}
	var session struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call("POST", driver+"/session", caps, &session); err != nil {
		t.Fatalf("new session: %v\n%s", err, logs.String())
	}
	b.base = driver + "/session/" + session.SessionID
	t.Cleanup(func() { b.call("DELETE", b.base, nil, nil) })
	return b
}

// call sends one WebDriver command and decodes the "value" of its answer
// into out.
func (b *browser) call(method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var answer struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(data, &answer); err != nil {
		return fmt.Errorf("%s %s: %s: %.200s", method, url, resp.Status, data)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		json.Unmarshal(answer.Value, &e)
		return fmt.Errorf("%s %s: %s: %s", method, url, e.Error, e.Message)
	}
	if out != nil {
		return json.Unmarshal(answer.Value, out)
	}
	return nil
}

// must runs a command of the session and fails the test when it fails.
func (b *browser) must(method, path string, body, out any) {
	b.t.Helper()
	if err := b.call(method, b.base+path, body, out); err != nil {
		b.t.Fatal(err)
	}
}

// element is a reference to an element of the page.
type element map[string]string

func (b *browser) navigate(url string) {
	b.t.Helper()
	b.must("POST", "/url", map[string]string{"url": url}, nil)
}

// find returns the first element css selects, failing the test after
// b.timeout without one.
func (b *browser) find(css string) element {
	b.t.Helper()
	var el element
	b.waitFor("an element "+css, func() bool {
		return b.call("POST", b.base+"/element", map[string]string{"using": "css selector", "value": css}, &el) == nil
	})
	return el
}

// exec runs script in the page (its arguments are arguments[0...]) and
// decodes what it returns into out.
func (b *browser) exec(out any, script string, args ...any) {
	b.t.Helper()
	if args == nil {
		args = []any{}
	}
	b.must("POST", "/execute/sync", map[string]any{"script": script, "args": args}, out)
}

// waitFor polls cond until it holds, failing the test after b.timeout.
func (b *browser) waitFor(what string, cond func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(b.timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.t.Fatalf("no %s after %v", what, b.timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitScript polls a script returning a boolean until it returns true.
func (b *browser) waitScript(what, script string, args ...any) {
	b.t.Helper()
	b.waitFor(what, func() bool {
		var ok bool
		b.exec(&ok, script, args...)
		return ok
	})
}

func (b *browser) click(el element) {
	b.t.Helper()
	b.must("POST", "/element/"+el[elementKey]+"/click", map[string]any{}, nil)
}

func (b *browser) sendKeys(el element, text string) {
	b.t.Helper()
	b.must("POST", "/element/"+el[elementKey]+"/value", map[string]string{"text": text}, nil)
}

func (b *browser) text(el element) string {
	b.t.Helper()
	var s string
	b.must("GET", "/element/"+el[elementKey]+"/text", nil, &s)
	return s
}

// hover moves the mouse to the middle of el.
func (b *browser) hover(el element) {
	b.t.Helper()
	b.must("POST", "/actions", map[string]any{"actions": []any{map[string]any{
		"type": "pointer", "id": "mouse", "parameters": map[string]string{"pointerType": "mouse"},
		"actions": []any{map[string]any{"type": "pointerMove", "duration": 0, "origin": el, "x": 0, "y": 0}},
	}}}, nil)
}

// screenshot returns a PNG of the window.
func (b *browser) screenshot() []byte {
	b.t.Helper()
	var s string
	b.must("GET", "/screenshot", nil, &s)
	png, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	return png
}
