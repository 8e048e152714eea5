package tracer

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/tracer/nativeunwind"
)

// TestEncodeTable packs rows the way a build worker does: each row as
// encodeRow packs it, rules the eBPF unwinder cannot express counted, a
// file offset beyond 4 GiB refused, and a table without rows none.
func TestEncodeTable(t *testing.T) {
	maps := newMemMaps()
	rows := []nativeunwind.Row{
		{Addr: 0x1000, CFA: nativeunwind.CFASP, CFAOffset: 8, RAOffset: -8},
		{Addr: 0x1004, CFA: nativeunwind.CFAFP, CFAOffset: 16, FPOffset: -16, RAOffset: -8},
		{Addr: 0x1010, CFA: nativeunwind.CFASP, CFAOffset: 8, RAOffset: -16}, // not expressible
		{Addr: 0x1020, CFA: nativeunwind.CFAInvalid},
	}
	tab, n, src, invalid, err := encodeTable(builtBuilder{newTable(t, rows, nativeunwind.SourceEHFrame)},
		maps, 1, nil, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(rows) || src != nativeunwind.SourceEHFrame || invalid != 1 {
		t.Errorf("%d rows from %v, %d invalid; want %d from .eh_frame, 1 invalid", n, src, invalid, len(rows))
	}
	got := tab.(memTable)
	for i, r := range rows {
		if want, _ := encodeRow(r); got[i] != want {
			t.Errorf("row %d packed as %#x, want %#x", i, got[i], want)
		}
	}

	far := append([]nativeunwind.Row{}, rows[:2]...)
	far = append(far, nativeunwind.Row{Addr: 1 << 32, CFA: nativeunwind.CFAEndOfStack})
	if tab, _, _, _, err := encodeTable(builtBuilder{newTable(t, far, 0)}, maps, 1, nil, nil, 1<<20); err == nil || tab != nil {
		t.Errorf("a row at 4 GiB: table %v, error %v; want an error", tab, err)
	}
	if tab, _, _, _, err := encodeTable(builtBuilder{&nativeunwind.Table{}}, maps, 1, nil, nil, 1<<20); !errors.Is(err, nativeunwind.ErrNoCFI) || tab != nil {
		t.Errorf("no rows: table %v, error %v; want %v", tab, err, nativeunwind.ErrNoCFI)
	}
}

// bpfMapMappings counts this process's mappings of eBPF maps.
func bpfMapMappings(t *testing.T) int {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasSuffix(sc.Text(), "anon_inode:bpf-map") {
			n++
		}
	}
	return n
}

// TestTableInMappedArray loads the table of this test binary the way the
// tracer does, into a mmapable inner map entered in the object's
// unwind_tables (so the kernel takes it as the inner map template allows),
// and checks that the kernel holds every row as packed after the mapping
// and the tracer's descriptor are gone, that it charges the page-rounded
// array, and that deleting the table frees the map: nothing in this
// process holds it.
func TestTableInMappedArray(t *testing.T) {
	testenv.RequireBPF(t)
	maps, outer := tableMaps(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	built := buildFileTable(t, exe)
	mapped := bpfMapMappings(t)

	const key = 0x5717
	tab, n, _, _, err := encodeTable(builtBuilder{built}, maps, key, nil, nil, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if n != built.Len() || n < 1000 {
		t.Fatalf("%d rows loaded of %d built; want all, and a Go test binary to have thousands", n, built.Len())
	}
	if m := bpfMapMappings(t); m != mapped {
		t.Errorf("%d mappings of eBPF maps after the table was filled, %d before: the table's stays mapped", m, mapped)
	}
	page := uint64(os.Getpagesize())
	rounded := (uint64(n)*rowBytes + page - 1) / page * page
	if size := tab.size(); size < rounded || size > rounded+2*page {
		t.Errorf("the kernel charges %d bytes for %d rows: want %d (page-rounded) plus at most two pages", size, n, rounded)
	}
	t.Logf("%d rows, %d bytes charged (%d bytes of rows)", n, tab.size(), uint64(n)*rowBytes)
	if err := maps.putTable(key, tab); err != nil {
		t.Fatalf("the kernel refused the table as an inner map of unwind_tables: %v", err)
	}
	tab.close()

	var id ebpf.MapID
	if err := outer.Lookup(uint64(key), &id); err != nil {
		t.Fatal(err)
	}
	inner, err := ebpf.NewMapFromID(id)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]uint32, n)
	vals := make([]uint64, n)
	var cursor ebpf.MapBatchCursor
	got, err := inner.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatal(err)
	}
	if got != n || inner.MaxEntries() != uint32(n) {
		t.Fatalf("read %d rows of an array of %d, want %d", got, inner.MaxEntries(), n)
	}
	for i := range built.Len() {
		if want, _ := encodeRow(built.Row(i)); keys[i] != uint32(i) || vals[i] != want {
			t.Fatalf("row %d is %#x (key %d) in the kernel, want %#x", i, vals[i], keys[i], want)
		}
	}
	inner.Close()

	if err := maps.deleteTable(key); err != nil {
		t.Fatal(err)
	}
	// The kernel frees a map once nothing refers to it, after a grace
	// period.
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := ebpf.NewMapFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err == nil {
			m.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("the table's map %d is still there 5 s after it was deleted (%v)", id, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTableFillFails checks that a table whose rows cannot be packed is
// not made, and its map not kept.
func TestTableFillFails(t *testing.T) {
	testenv.RequireBPF(t)
	maps, _ := tableMaps(t)
	rows := []nativeunwind.Row{{Addr: 0x1000, CFA: nativeunwind.CFAEndOfStack}, {Addr: 1 << 33, CFA: nativeunwind.CFAEndOfStack}}
	before := openBPFMaps(t)
	tab, _, _, _, err := encodeTable(builtBuilder{newTable(t, rows, 0)}, maps, 1, nil, nil, 1<<20)
	if err == nil || tab != nil || !strings.Contains(err.Error(), "beyond 4 GiB") {
		t.Fatalf("table %v, error %v; want the row beyond 4 GiB refused", tab, err)
	}
	if after := openBPFMaps(t); after != before {
		t.Errorf("%d eBPF maps open after the failed table, %d before", after, before)
	}
}

// openBPFMaps counts this process's open descriptors of eBPF maps.
func openBPFMaps(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "anon_inode:bpf-map" {
			n++
		}
	}
	return n
}
