package procmaps

import (
	"os"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

const sample = `55d0c6a00000-55d0c6a02000 r--p 00000000 fe:01 1234  /usr/bin/cat
55d0c6a02000-55d0c6a07000 r-xp 00002000 fe:01 1234  /usr/bin/cat
7f1e2a000000-7f1e2a021000 rw-p 00000000 00:00 0 
7f1e2a200000-7f1e2a378000 r-xp 00026000 103:02 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd1c3f0000-7ffd1c3f2000 r-xp 00000000 00:00 0                          [vdso]
7f00-7f10 r-xp 00000000 00:00 77 /tmp/has space (deleted)
`

func TestParse(t *testing.T) {
	var got []Mapping
	err := Parse(strings.NewReader(sample), func(p [4]byte) bool { return p[2] == 'x' }, func(m Mapping) { got = append(got, m) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d executable mappings, want 4: %+v", len(got), got)
	}
	libc := got[1]
	if libc.Start != 0x7f1e2a200000 || libc.End != 0x7f1e2a378000 || libc.Offset != 0x26000 ||
		libc.Major != 0x103 || libc.Minor != 2 || libc.Inode != 99 || libc.Path != "/usr/lib/x86_64-linux-gnu/libc.so.6" {
		t.Errorf("libc mapping: %+v", libc)
	}
	if !libc.IsFile() || got[2].IsFile() || got[2].Path != "[vdso]" {
		t.Errorf("IsFile wrong: %+v %+v", libc, got[2])
	}
	if got[3].Path != "/tmp/has space (deleted)" {
		t.Errorf("path with spaces: %q", got[3].Path)
	}
}

func TestParseErrors(t *testing.T) {
	for _, line := range []string{
		"zz-10 r-xp 0 00:00 0",
		"10 r-xp 0 00:00 0",
		"10-20 r-x 0 00:00 0",
		"20-10 r-xp 0 00:00 0",
		"10-20 r-xp 0 0000 0",
		"10-20 r-xp 0 00:00 x",
		"10-20 r-xp 11111111111111111 00:00 0",
	} {
		err := Parse(strings.NewReader(line), nil, func(Mapping) {})
		if err == nil {
			t.Errorf("%q: no error", line)
		}
	}
}

func TestParseSelf(t *testing.T) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	n := 0
	if err := Parse(f, nil, func(m Mapping) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("only %d mappings in /proc/self/maps", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("0-0 ---- 0 0:0 0"))
	f.Add([]byte("10-20 r-xp 0 00:00 0 /a\n\n20-30 r-xp 0 00:00 0 /b c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got []Mapping
		err := Parse(strings.NewReader(string(data)), nil, func(m Mapping) {
			if m.End < m.Start {
				t.Fatalf("end below start: %+v", m)
			}
			got = append(got, m)
		})
		// Read a few bytes at a time into a buffer that starts tiny,
		// the parse finds the same: lines across reads and the buffer
		// growing do not change it.
		var small []Mapping
		errSmall := parse(iotest.HalfReader(strings.NewReader(string(data))), make([]byte, 3), nil, func(m Mapping) { small = append(small, m) })
		if (err == nil) != (errSmall == nil) || !slices.Equal(got, small) {
			t.Fatalf("one buffer: %v %+v; small reads: %v %+v", err, got, errSmall, small)
		}
	})
}

// TestParseLongLine: a line longer than any maps line can be is an error,
// not a buffer without bound.
func TestParseLongLine(t *testing.T) {
	line := "10-20 r-xp 0 00:00 1 /" + strings.Repeat("a", maxLine) + "\n"
	if err := Parse(strings.NewReader(line), nil, func(Mapping) {}); err == nil {
		t.Fatal("no error for a line of more than maxLine bytes")
	}
	line = "10-20 r-xp 0 00:00 1 /" + strings.Repeat("a", 8000) + "\n"
	var got []Mapping
	if err := Parse(strings.NewReader(line+line), nil, func(m Mapping) { got = append(got, m) }); err != nil || len(got) != 2 || len(got[1].Path) != 8001 {
		t.Fatalf("two lines of 8 KB: %v, %d mappings", err, len(got))
	}
}

func TestTrimDeleted(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/prog (deleted)": "/usr/bin/prog",
		"/usr/bin/prog":           "/usr/bin/prog",
		"/tmp/a (deleted) b":      "/tmp/a (deleted) b",
		"":                        "",
	} {
		if got := TrimDeleted(in); got != want {
			t.Errorf("TrimDeleted(%q) = %q, want %q", in, got, want)
		}
	}
}
