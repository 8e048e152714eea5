package flamegraph

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzQuery feeds query strings to the view parser and, when it accepts
// them, builds the view and its pprof: nothing may panic, the graph is
// valid JSON and its nodes are depth first.
func FuzzQuery(f *testing.F) {
	for _, seed := range []string{
		"", "window=60", "window=900&process=app&pid=1&thread=main", "type=off_cpu",
		"focus=app&focus=main&focus=work", "window=-1", "pid=0", "window=99999999999",
		"focus=%00&focus=%ff", "process=app&thread=", "window=60&window=300",
	} {
		f.Add(seed)
	}
	srv, err := New(Options{History: time.Hour, MaxStacks: 1000})
	if err != nil {
		f.Fatal(err)
	}
	srv.add(folded(0,
		stackOf("app", 1, "main", 3, "main@app.c:10", "work@app.c:20", "read/kernel"),
		stackOf("app", 2, "worker", 2, "main@app.c:10", "work@app.c:21"),
		stackOf("db", 3, "", 1, "main.main@db.go:7/go")))
	f.Fuzz(func(t *testing.T, raw string) {
		if _, err := url.ParseQuery(raw); err != nil {
			return
		}
		q, err := parseQuery(&http.Request{URL: &url.URL{Path: "/api/flamegraph", RawQuery: raw}})
		if err != nil {
			if err.Error() == "" {
				t.Error("an error without a message")
			}
			return
		}
		b, err := srv.Graph(q)
		if err != nil {
			t.Fatal(err)
		}
		var g decodedGraph
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatalf("graph is not JSON: %v", err)
		}
		n := g.Nodes
		if len(n.Fn) == 0 || n.Depth[0] != 0 {
			t.Fatal("no root")
		}
		for i := 1; i < len(n.Fn); i++ {
			if n.Depth[i] < 1 || n.Depth[i] > n.Depth[i-1]+1 {
				t.Fatalf("node %d at depth %d after depth %d", i, n.Depth[i], n.Depth[i-1])
			}
		}
		var sb strings.Builder
		srv.store.mu.Lock()
		err = srv.store.writePprof(&sb, srv.store.selectStacks(q))
		srv.store.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	})
}
