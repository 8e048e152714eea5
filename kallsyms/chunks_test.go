package kallsyms

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestManyChunks parses lists of more symbols than one chunk holds, in
// address order and shuffled, with aliases at shared addresses, and checks
// every address against the rule: one symbol per address, the first
// listed unless a later one is global and it is not.
func TestManyChunks(t *testing.T) {
	const n = 3*entryChunk + 123
	type sym struct {
		addr   uint64
		typ    byte
		name   string
		listed int
	}
	var syms []sym
	for i := range n {
		addr := 0xffffffff81000000 + uint64(i)*0x40
		syms = append(syms, sym{addr, 't', fmt.Sprintf("local_%d", i), len(syms)})
		switch i % 5 {
		case 0: // a global alias listed after a local: the global wins
			syms = append(syms, sym{addr, 'T', fmt.Sprintf("global_%d", i), len(syms)})
		case 1: // a second local alias: the first listed wins
			syms = append(syms, sym{addr, 't', fmt.Sprintf("other_%d", i), len(syms)})
		}
	}
	want := func(i int) string {
		if i%5 == 0 {
			return fmt.Sprintf("global_%d", i)
		}
		return fmt.Sprintf("local_%d", i)
	}
	text := func(order []sym) string {
		var b strings.Builder
		for _, s := range order {
			fmt.Fprintf(&b, "%x %c %s\n", s.addr, s.typ, s.name)
		}
		return b.String()
	}
	shuffled := append([]sym(nil), syms...)
	rand.New(rand.NewPCG(7, 8)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	// Shuffling must keep aliases in their listed order for the rule to
	// hold; restore it among equal addresses.
	byAddr := map[uint64][]sym{}
	for _, s := range syms {
		byAddr[s.addr] = append(byAddr[s.addr], s)
	}
	seen := map[uint64]int{}
	for i, s := range shuffled {
		shuffled[i] = byAddr[s.addr][seen[s.addr]]
		seen[s.addr]++
	}
	for name, order := range map[string][]sym{"sorted": syms, "shuffled": shuffled} {
		tab, err := Parse(strings.NewReader(text(order)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if tab.Len() != n {
			t.Errorf("%s: %d symbols, want %d", name, tab.Len(), n)
		}
		for i := range n {
			addr := 0xffffffff81000000 + uint64(i)*0x40
			got, ok := tab.Lookup(addr + 0x10)
			if !ok || got.Name != want(i) || got.Offset != 0x10 {
				t.Fatalf("%s: Lookup(%#x) = %+v, %v; want %s+0x10", name, addr+0x10, got, ok, want(i))
			}
		}
	}
}

// TestNamesConcurrent looks names up from several goroutines at once, in
// blocks that evict each other from the cache of inflated blocks, and
// checks every name; with -race it checks the cache's locking.
func TestNamesConcurrent(t *testing.T) {
	const n = 20*nameBlock + 17 // more names than the cache of recent ones holds
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%x t sym_%d_%s\n", 0xffffffff81000000+uint64(i)*0x40, i, strings.Repeat("x", i%50))
	}
	tab, err := Parse(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(tab.vmlinux.blockOffs) - 1; got != 21 {
		t.Fatalf("%d blocks of names, want 21", got)
	}
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 2000 {
				i := rng.IntN(n)
				addr := 0xffffffff81000000 + uint64(i)*0x40
				want := fmt.Sprintf("sym_%d_%s", i, strings.Repeat("x", i%50))
				if got, ok := tab.Lookup(addr + 1); !ok || got.Name != want {
					errs <- fmt.Errorf("Lookup(%#x) = %+v, %v; want %s", addr+1, got, ok, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// allAddrs returns the start of every symbol of s.
func (s *symtab) allAddrs() []uint64 {
	a := make([]uint64, s.len())
	for i := range a {
		a[i] = s.addr(i)
	}
	return a
}

// TestWideSymtab: symbols that span 4 GiB or more keep full addresses;
// narrower ones offsets from the first; both find every symbol, and
// addresses far past the last symbol find nothing.
func TestWideSymtab(t *testing.T) {
	for _, tc := range []struct {
		name   string
		addrs  []uint64
		narrow bool
	}{
		{"narrow", []uint64{0xffff800000000000, 0xffff800000000100, 0xffff800000000000 + math.MaxUint32}, true},
		{"wide", []uint64{0x1000, 0x2000, 0x1000 + math.MaxUint32 + 1}, false},
	} {
		var b strings.Builder
		for i, a := range tc.addrs {
			fmt.Fprintf(&b, "%x T f%d\n", a, i)
		}
		tab, err := Parse(strings.NewReader(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		if narrow := tab.vmlinux.addrs == nil; narrow != tc.narrow {
			t.Errorf("%s: offsets used %v, want %v", tc.name, narrow, tc.narrow)
		}
		for i, a := range tc.addrs {
			for _, d := range []uint64{0, 7} {
				if sym, ok := tab.Lookup(a + d); !ok || sym.Name != fmt.Sprintf("f%d", i) || sym.Offset != d {
					t.Errorf("%s: Lookup(%#x) = %+v, %v", tc.name, a+d, sym, ok)
				}
			}
		}
		last := tc.addrs[len(tc.addrs)-1]
		for _, a := range []uint64{tc.addrs[0] - 1, last + MaxSymbolSize, last + 1<<33} {
			if sym, ok := tab.Lookup(a); ok {
				t.Errorf("%s: Lookup(%#x) = %+v, want none", tc.name, a, sym)
			}
		}
	}
}
