package main

import (
	"bufio"
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/agent"
)

// readmeFlags returns the rows of README.md's flags table: each flag named
// in a row's first cell, with the default written for it in the second.
func readmeFlags(t *testing.T) map[string]string {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## Flags"
		case in && strings.HasPrefix(line, "| `--"):
			cells := strings.Split(line, "|")
			if len(cells) < 4 {
				t.Fatalf("README flags row with %d cells: %s", len(cells), line)
			}
			names := strings.Split(cells[1], ",")
			defaults := strings.Split(cells[2], ",")
			for i, n := range names {
				d := defaults[0]
				if len(defaults) == len(names) {
					d = defaults[i]
				}
				n = strings.TrimPrefix(strings.Trim(strings.TrimSpace(n), "`"), "--")
				rows[n] = strings.Trim(strings.TrimSpace(d), "`")
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestReadmeFlags: README's flags table lists exactly the flags stackline
// has, each with its real default where the default is a value (a
// description such as "hostname" stands for an empty default).
func TestReadmeFlags(t *testing.T) {
	rows := readmeFlags(t)
	fs := newFlagSet(&options{cfg: agent.DefaultConfig(), logLevel: "info"}, io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return // shown by -h, not a setting
		}
		doc, ok := rows[f.Name]
		if !ok {
			t.Errorf("--%s is not in README's flags table", f.Name)
			return
		}
		delete(rows, f.Name)
		def := f.DefValue
		switch {
		case def == "" || def == "[]":
			// A default described in words ("hostname", "—").
		case doc == def, strings.HasPrefix(doc, def+" "):
		default:
			t.Errorf("--%s: README says the default is %q, the code %q", f.Name, doc, def)
		}
	})
	for name := range rows {
		t.Errorf("README documents --%s, which stackline does not have", name)
	}
}
