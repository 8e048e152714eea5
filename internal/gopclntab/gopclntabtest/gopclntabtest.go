// Package gopclntabtest builds small .gopclntab sections in each layout
// package gopclntab reads, for tests.
package gopclntabtest

import (
	"encoding/binary"

	"github.com/stackline-dev/stackline/internal/gopclntab"
)

// Run is a run of a pc-value table: Len bytes with the value Value.
type Run struct {
	Value int32
	Len   uint64
}

// Runs returns the runs of pairs of a value and a length.
func Runs(valueLen ...int64) []Run {
	runs := make([]Run, 0, len(valueLen)/2)
	for i := 0; i+1 < len(valueLen); i += 2 {
		runs = append(runs, Run{Value: int32(valueLen[i]), Len: uint64(valueLen[i+1])})
	}
	return runs
}

// Func describes one function. Functions are laid out one after the
// other from the text address, each as long as its PCSP runs.
type Func struct {
	Name   string
	FuncID uint8
	// Flag is the function's flags; 0 in a Go 1.16 table, where the byte
	// is padding (Go 1.17 uses the same layout and sets it).
	Flag gopclntab.FuncFlag
	// PCSP is the function's stack pointer delta table; PCLn, if not nil,
	// its line table, whose runs must add up to the same length. Runs next
	// to each other must differ in value.
	PCSP, PCLn []Run
}

// Build returns a little-endian .gopclntab for 64-bit pointers and a
// quantum of 1 in the layout of magic, with the functions starting at
// text. File names, compilation units and funcdata are empty.
func Build(magic uint32, text uint64, funcs []Func) []byte {
	le := binary.LittleEndian
	var names, pctab []byte
	pctab = append(pctab, 0) // offset 0 means none
	nameOffs := make([]uint32, len(funcs))
	pcsp := make([]uint32, len(funcs))
	pcln := make([]uint32, len(funcs))
	sizes := make([]uint64, len(funcs))
	for i, f := range funcs {
		nameOffs[i] = uint32(len(names))
		names = append(append(names, f.Name...), 0)
		pcsp[i] = uint32(len(pctab))
		pctab, sizes[i] = appendPCValue(pctab, f.PCSP)
		if f.PCLn != nil {
			pcln[i] = uint32(len(pctab))
			pctab, _ = appendPCValue(pctab, f.PCLn)
		}
	}

	// The function table: entries, then the records.
	old := magic == gopclntab.Magic116
	entSize := 8
	if old {
		entSize = 16
	}
	recSize := 44 // Go 1.20: entryOff, nameOff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset, startLine, funcID, flag, pad, nfuncdata
	switch magic {
	case gopclntab.Magic118:
		recSize = 40
	case gopclntab.Magic116:
		recSize = 8 + 36
	}
	functab := make([]byte, (len(funcs)+1)*entSize+len(funcs)*recSize)
	entry := text
	for i, f := range funcs {
		recOff := (len(funcs)+1)*entSize + i*recSize
		e, rec := functab[i*entSize:], functab[recOff:recOff+recSize]
		base := 4
		if old {
			le.PutUint64(e, entry)
			le.PutUint64(e[8:], uint64(recOff))
			le.PutUint64(rec, entry)
			base = 8
		} else {
			le.PutUint32(e, uint32(entry-text))
			le.PutUint32(e[4:], uint32(recOff))
			le.PutUint32(rec, uint32(entry-text))
		}
		le.PutUint32(rec[base:], nameOffs[i])
		le.PutUint32(rec[base+12:], pcsp[i])
		le.PutUint32(rec[base+20:], pcln[i])
		rec[recSize-4] = f.FuncID
		rec[recSize-3] = byte(f.Flag)
		entry += sizes[i]
	}
	if old {
		le.PutUint64(functab[len(funcs)*entSize:], entry)
	} else {
		le.PutUint32(functab[len(funcs)*entSize:], uint32(entry-text))
	}

	words := []uint64{uint64(len(funcs)), 0, text}
	if old {
		words = words[:2]
	}
	hdrSize := 8 + 8*(len(words)+5)
	off := uint64(hdrSize)
	words = append(words, off, off+uint64(len(names)), off+uint64(len(names)), off+uint64(len(names)), off+uint64(len(names)+len(pctab)))
	out := le.AppendUint32(nil, magic)
	out = append(out, 0, 0, 1, 8)
	for _, w := range words {
		out = le.AppendUint64(out, w)
	}
	out = append(out, names...)
	out = append(out, pctab...)
	return append(out, functab...)
}

// appendPCValue appends the runs encoded as a pc-value table and returns
// the table and the length the runs cover.
func appendPCValue(b []byte, runs []Run) ([]byte, uint64) {
	prev := int32(-1)
	var n uint64
	for _, r := range runs {
		d := r.Value - prev
		b = binary.AppendUvarint(b, uint64(uint32(d<<1)^uint32(d>>31)))
		b = binary.AppendUvarint(b, r.Len)
		prev = r.Value
		n += r.Len
	}
	return append(b, 0), n
}
