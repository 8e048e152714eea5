package nativeunwind

import (
	"bufio"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// readelfFDE is one FDE as readelf --debug-dump=frames-interp shows it.
type readelfFDE struct {
	lo, hi uint64
	signal bool
	cols   []string   // column names after LOC
	rows   [][]string // LOC and the columns
}

// readelfFrames runs readelf on path and parses the .eh_frame tables.
func readelfFrames(t *testing.T, path string) []readelfFDE {
	t.Helper()
	if _, err := exec.LookPath("readelf"); err != nil {
		testenv.Missing(t, "readelf not found")
	}
	// -wN: not the separate debug file, whose .eh_frame is empty.
	out := run(t, "", "readelf", "-wN", "--debug-dump=frames-interp", path)
	type cieInfo struct {
		signal bool
		cols   []string
		rows   [][]string
	}
	cies := map[string]*cieInfo{}
	var fdes []readelfFDE
	var cur *cieInfo     // the CIE being read
	var fde *readelfFDE  // or the FDE
	var cols *[]string   // where column names go
	var rows *[][]string // where rows go
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := fields(sc.Text())
		switch {
		case len(f) >= 4 && f[3] == "CIE":
			cur = &cieInfo{signal: strings.Contains(f[4], "S")}
			cies[f[0]] = cur
			fde = nil
			cols, rows = &cur.cols, &cur.rows
		case len(f) >= 6 && f[3] == "FDE":
			c := cies[strings.TrimPrefix(f[4], "cie=")]
			if c == nil {
				t.Fatalf("FDE with unknown CIE: %q", sc.Text())
			}
			lo, hi, _ := strings.Cut(strings.TrimPrefix(f[5], "pc="), "..")
			fdes = append(fdes, readelfFDE{lo: parseHex(t, lo), hi: parseHex(t, hi), signal: c.signal, cols: c.cols, rows: c.rows})
			fde = &fdes[len(fdes)-1]
			cols, rows = &fde.cols, nil
		case len(f) > 0 && f[0] == "LOC":
			*cols = f[1:]
		case len(f) > 1 && cols != nil && isHex(f[0]):
			if fde != nil && rows == nil {
				fde.rows = nil // its own rows replace the CIE's
				rows = &fde.rows
			}
			*rows = append(*rows, f)
		}
	}
	for i := range fdes {
		if len(fdes[i].rows) > 0 && fdes[i].rows[0][0] != fmt.Sprintf("%016x", fdes[i].lo) {
			// The CIE's rows: they start at the FDE's start.
			r := append([]string{fmt.Sprintf("%016x", fdes[i].lo)}, fdes[i].rows[0][1:]...)
			fdes[i].rows = [][]string{r}
		}
	}
	return fdes
}

// fields splits a readelf line into fields, keeping "r9 (r9)" as one.
func fields(line string) []string {
	var out []string
	for _, f := range strings.Fields(line) {
		if strings.HasPrefix(f, "(") && len(out) > 0 {
			out[len(out)-1] += " " + f
			continue
		}
		out = append(out, f)
	}
	return out
}

func isHex(s string) bool {
	_, err := strconv.ParseUint(s, 16, 64)
	return err == nil && len(s) == 16
}

func parseHex(t *testing.T, s string) uint64 {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// expectRow translates one readelf row as Build documents; exp is true
// when the CFA is an expression (CFAPLT or CFAInvalid).
func expectRow(cols, row []string, signal bool) (want Row, exp bool) {
	if signal {
		return Row{CFA: CFASignal}, false
	}
	col := map[string]string{}
	for i, c := range cols {
		if i+1 < len(row) {
			col[c] = row[i+1]
		}
	}
	switch col["ra"] {
	case "c-8":
	case "u":
		return Row{CFA: CFAEndOfStack}, false
	default:
		return Row{CFA: CFAInvalid}, false
	}
	want.RAOffset = -8
	cfa := col["CFA"]
	switch {
	case cfa == "exp":
		return want, true
	case strings.HasPrefix(cfa, "rsp+"):
		want.CFA = CFASP
	case strings.HasPrefix(cfa, "rbp+"):
		want.CFA = CFAFP
	default:
		return Row{CFA: CFAInvalid}, false
	}
	n, _ := strconv.Atoi(cfa[4:])
	want.CFAOffset = int32(n)
	switch fp := col["rbp"]; {
	case fp == "" || fp == "s":
	case strings.HasPrefix(fp, "c"):
		n, _ := strconv.Atoi(fp[1:])
		want.FPOffset = int32(n)
	default: // unknown
		if want.CFA == CFAFP {
			return Row{CFA: CFAInvalid}, false
		}
	}
	return want, false
}

// TestReadelf checks every row of libc's and libpython's tables against
// readelf's interpretation of their .eh_frame.
func TestReadelf(t *testing.T) {
	ls, err := exec.LookPath("ls")
	if err != nil {
		testenv.Missing(t, "no ls: %v", err)
	}
	for _, path := range []func(testing.TB) string{testenv.Libc, testenv.SystemLibpython, func(testing.TB) string { return ls }} {
		path := path(t)
		t.Run(path, func(t *testing.T) {
			_, ef := openELF(t, path)
			tab := build(t, path, "")
			fdes := readelfFrames(t, path)
			starts := map[uint64]bool{}
			for _, f := range fdes {
				starts[f.lo] = true
			}
			checked, plt := 0, 0
			for _, f := range fdes {
				if f.lo == f.hi {
					continue
				}
				for i, row := range f.rows {
					loc := parseHex(t, row[0])
					if loc >= f.hi || i+1 < len(f.rows) && parseHex(t, f.rows[i+1][0]) == loc {
						continue
					}
					want, exp := expectRow(f.cols, row, f.signal)
					got := lookup(tab, fileOffset(t, ef, loc))
					if exp && got.CFA == CFAPLT {
						plt++
						continue
					}
					if exp {
						want = Row{CFA: CFAInvalid}
					}
					if rule(got) != want {
						t.Fatalf("FDE %#x..%#x at %#x: got %+v, want %+v (readelf: %q)", f.lo, f.hi, loc, rule(got), want, row)
					}
					checked++
				}
				if !starts[f.hi] && f.hi < ef.Section(".text").Addr+ef.Section(".text").Size {
					if got := lookup(tab, fileOffset(t, ef, f.hi)); got.CFA != CFAInvalid {
						t.Fatalf("FDE %#x..%#x: the rule goes on past its end: %+v", f.lo, f.hi, got)
					}
				}
			}
			t.Logf("%d FDEs, %d rows checked, %d PLT rows", len(fdes), checked, plt)
			if checked < len(fdes) || plt == 0 {
				t.Errorf("checked %d rows of %d FDEs, %d PLT rows; want more", checked, len(fdes), plt)
			}
		})
	}
}
