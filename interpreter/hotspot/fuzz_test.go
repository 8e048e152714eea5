package hotspot

import (
	"testing"
)

// FuzzReadLayout reads VM tables from arbitrary memory: the image of a
// small valid set of tables (whose symbols stay where they are), mutated.
// ReadLayout returns a Layout or an error, never panics, and stays within
// its bounds.
func FuzzReadLayout(f *testing.F) {
	seed := smallImage()
	f.Add(seed.b)
	f.Add(make([]byte, len(seed.b)))
	f.Fuzz(func(t *testing.T, image []byte) {
		m := &tableImage{b: image, syms: seed.syms}
		c := &countingMemory{mem: m}
		l, err := ReadLayout(c, m.sym)
		if err == nil {
			fields, types, _ := l.Counts()
			if fields == 0 || types == 0 {
				t.Fatalf("a Layout of %d fields and %d types", fields, types)
			}
		}
	})
}
