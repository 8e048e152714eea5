package nativeunwind

import (
	"errors"
	"slices"
	"testing"
)

// TestNewTable checks that a table keeps the rows it is given, each rule
// once (the gap and invalid rules a table always has, and five more here),
// and refuses file offsets it cannot pack.
func TestNewTable(t *testing.T) {
	rows := []Row{
		at(0x1000, sp(8, 0)), at(0x1001, sp(16, -16)), at(0x1004, fpr(16, -16)),
		at(0x1010, sp(8, 0)), at(0x1011, Row{CFA: CFASP, CFAOffset: 8, RAOffset: -16}),
		at(0x1020, eos), at(MaxAddr-1, invalid),
	}
	tab, err := NewTable(rows, SourceEHFrame)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != len(rows) || tab.Sources != SourceEHFrame || !slices.Equal(tab.Rows(), rows) {
		t.Fatalf("table of %d rows from %v: %+v, want %+v", tab.Len(), tab.Sources, tab.Rows(), rows)
	}
	for i, r := range rows {
		addr, ri := tab.At(i)
		if got := tab.Rules()[ri]; addr != r.Addr || got != rule(r) {
			t.Errorf("row %d: %#x, rule %+v; want %+v", i, addr, got, r)
		}
	}
	_, r0 := tab.At(0)
	_, r3 := tab.At(3)
	if r0 != r3 || len(tab.Rules()) != 2+5 {
		t.Errorf("rules %+v; rows 0 and 3 at %d and %d: want each rule once", tab.Rules(), r0, r3)
	}
	if _, err := NewTable([]Row{at(MaxAddr, invalid)}, 0); !errors.Is(err, ErrTooLarge) {
		t.Errorf("a row at MaxAddr: %v, want %v", err, ErrTooLarge)
	}
}

// TestRuleSet checks that interning gives each distinct rule one index,
// the same before and after the set grows.
func TestRuleSet(t *testing.T) {
	rs := newRuleSet()
	var first []uint32
	for pass := range 2 {
		for i := range 5000 {
			r := Row{CFA: CFAKind(i % 4), CFAOffset: int32(i), FPOffset: -int32(i % 7), RAOffset: -8, Addr: uint64(i)}
			idx, ok := rs.intern(r)
			if !ok {
				t.Fatal("set full")
			}
			if pass == 0 {
				first = append(first, idx)
			} else if idx != first[i] {
				t.Fatalf("rule %d: index %d, then %d", i, first[i], idx)
			}
			if got := rs.rules[idx]; got != rule(r) {
				t.Fatalf("rule %d: %+v at its index, want %+v", i, got, r)
			}
		}
	}
	if n := len(rs.rules); n != 5000+2 {
		t.Errorf("%d rules, want 5002", n)
	}
	if i, _ := rs.intern(Row{CFA: cfaGap}); i != ruleGap {
		t.Errorf("the gap rule at %d", i)
	}
	if i, _ := rs.intern(Row{Addr: 5, CFA: CFAInvalid}); i != ruleInvalid {
		t.Errorf("the invalid rule at %d", i)
	}
}
