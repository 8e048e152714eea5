package gopclntab

// Values iterates over a pc-value table: runs of addresses [Start, End)
// that share one Value. Tables are encoded as the runtime's pcvalue reads
// them: pairs of a zig-zag value delta (from -1) and a pc delta in units of
// the table's quantum, ending at a zero value delta after the first pair.
//
//	for it := t.Values(f.Entry, f.PCSP); it.Next(); {
//		use(it.Start(), it.End(), it.Value())
//	}
type Values struct {
	// The encoded table is p[i:]: Next moves an index rather than
	// rewriting a pointer, which is cheaper while the GC runs.
	p          string
	i          int
	pc         uint64
	quantum    uint64
	val        int32
	first      bool
	start, end uint64
}

// Values returns an iterator over the pc-value table at off (such as a
// Func's PCSP) of the function at entry. An offset of 0 or out of range
// gives no runs.
func (t *Table) Values(entry uint64, off uint32) Values {
	if off == 0 || uint64(off) >= uint64(len(t.pctab)) {
		return Values{}
	}
	return Values{p: t.pctab, i: int(off), pc: entry, quantum: t.quantum, val: -1, first: true}
}

// Next advances to the next run and reports whether there is one. Each run
// consumes at least two bytes of the table, so iteration always ends.
func (it *Values) Next() bool {
	uv, n := uvarint(it.p, it.i)
	if n == 0 || uv == 0 && !it.first {
		it.i = len(it.p)
		return false
	}
	it.i += n
	pcd, n := uvarint(it.p, it.i)
	if n == 0 {
		it.i = len(it.p)
		return false
	}
	it.i += n
	it.first = false
	it.val += int32(-(uv & 1) ^ (uv >> 1))
	it.start = it.pc
	it.pc += uint64(pcd) * it.quantum
	it.end = it.pc
	return true
}

// Value returns the value of the current run.
func (it *Values) Value() int32 { return it.val }

// Start returns the first address of the current run.
func (it *Values) Start() uint64 { return it.start }

// End returns the address just past the current run.
func (it *Values) End() uint64 { return it.end }

// PCValue returns the value of the pc-value table at off for pc, as the
// runtime's pcvalue does; -1 when the table has no value there.
func (t *Table) PCValue(entry uint64, off uint32, pc uint64) int32 {
	for it := t.Values(entry, off); it.Next(); {
		if pc < it.End() {
			return it.Value()
		}
	}
	return -1
}

// MaxValue returns the largest value of the pc-value table at off, -1 for
// an empty table.
func (t *Table) MaxValue(off uint32) int32 {
	best := int32(-1)
	for it := t.Values(0, off); it.Next(); {
		best = max(best, it.Value())
	}
	return best
}

// uvarint decodes a uint32 varint from s at off; n is 0 when there is
// none.
func uvarint(s string, off int) (v uint32, n int) {
	for i := 0; off+i < len(s) && i < 5; i++ {
		b := s[off+i]
		v |= uint32(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}
