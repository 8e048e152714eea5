package kallsyms

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// parseNames parses names listed at increasing addresses, 0x10 apart, and
// returns the table's kernel image part.
func parseNames(t *testing.T, names []string) *symtab {
	t.Helper()
	var b strings.Builder
	for i, n := range names {
		fmt.Fprintf(&b, "%x t %s\n", 0xffffffff81000000+uint64(i)*0x10, n)
	}
	tab, err := Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return tab.vmlinux
}

// checkNames checks that every symbol of s has the name listed, looking
// them up in order and then backwards (so that no decoding leans on the
// one before).
func checkNames(t *testing.T, s *symtab, names []string) {
	t.Helper()
	if s.len() != len(names) {
		t.Fatalf("%d symbols, want %d", s.len(), len(names))
	}
	for _, order := range []int{1, -1} {
		// An empty cache, so that every name is decoded.
		s.names.recent = nil
		for k := range names {
			i := k
			if order < 0 {
				i = len(names) - 1 - k
			}
			if got := s.name(i); got != names[i] {
				t.Fatalf("name(%d) = %q, want %q", i, got, names[i])
			}
		}
	}
}

// TestPaddingNames checks the names of the kernel's padding symbols,
// __pfx_NAME just before NAME, which are coded as a flag: at the end of a
// block (where the next name is in the next block), in chains, and next
// to names that only look like them.
func TestPaddingNames(t *testing.T) {
	var names []string
	for i := range 3 * nameBlock {
		f := fmt.Sprintf("ext4_func_%d", i)
		switch i % 7 {
		case 0, 3:
			names = append(names, pfxPrefix+f, f)
		case 1:
			// A chain: padding of a padding symbol.
			names = append(names, pfxPrefix+pfxPrefix+f, pfxPrefix+f, f)
		case 2:
			// Not the next symbol's padding.
			names = append(names, pfxPrefix+f+"x", f)
		case 4:
			names = append(names, pfxPrefix, f)
		default:
			names = append(names, f)
		}
	}
	s := parseNames(t, names)
	checkNames(t, s, names)
	// The flag stands for the name: the coded names are much shorter
	// than the listed ones.
	total := 0
	for _, n := range names {
		total += len(n)
	}
	if len(s.data) > total/2 {
		t.Errorf("%d bytes of coded names for %d listed", len(s.data), total)
	}
}

// FuzzNames parses the names of a list (one a line) at increasing
// addresses and checks that each is looked up as listed.
func FuzzNames(f *testing.F) {
	f.Add([]byte("a\nab\nabc\nb\n"))
	f.Add([]byte("__pfx_foo\nfoo\n__pfx___pfx_bar\n__pfx_bar\nbar\n__pfx_\nx\n"))
	f.Add([]byte(strings.Repeat("__pfx_do_sys_open\ndo_sys_open\nvfs_read\nvfs_readv\n", 40)))
	f.Fuzz(func(t *testing.T, data []byte) {
		var names []string
		for line := range bytes.Lines(data) {
			n := string(bytes.TrimSuffix(line, []byte("\n")))
			if n == "" || strings.ContainsAny(n, " \t\r\n") || len(n) > 4096 {
				continue
			}
			names = append(names, n)
		}
		if len(names) == 0 {
			return
		}
		checkNames(t, parseNames(t, names), names)
	})
}

// TestHostNames checks the name of every symbol of the host's kernel
// image against /proc/kallsyms, when its addresses are visible: it must
// be one of the text symbols listed at its address.
func TestHostNames(t *testing.T) {
	tab := loadReal(t)
	text, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[uint64][]string{}
	for line := range strings.Lines(string(text)) {
		f := strings.Fields(line)
		if len(f) != 3 || (f[1] != "t" && f[1] != "T") {
			continue
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		listed[addr] = append(listed[addr], f[2])
	}
	s := tab.vmlinux
	padding := 0
	for i := range s.len() {
		name := s.name(i) // never looked up before: decoded
		if !slices.Contains(listed[s.addr(i)], name) {
			t.Fatalf("name(%d) = %q, listed at %#x: %q", i, name, s.addr(i), listed[s.addr(i)])
		}
		if strings.HasPrefix(name, pfxPrefix) {
			padding++
		}
	}
	t.Logf("%d names, %d of them padding, in %d bytes", s.len(), padding, len(s.data))
}
