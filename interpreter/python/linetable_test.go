package python

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/stackline-dev/stackline/internal/testenv"
)

// lineTableDumpScript compiles a source made to exercise the line tables
// (nested functions, loops, multi-line expressions, comprehensions,
// try/except/finally, a lambda, async code, a line longer than 255 bytes of
// code, a function past line 300, a jump of 200 lines inside a function) and
// the sources of three standard library modules. For every code object it
// prints the raw line table, co_firstlineno, the code size and the line of
// every 2-byte code unit, as CPython itself reports them: dis.findlinestarts
// propagated forward on 3.8 and 3.9, co_lines() on 3.10 and later (None for
// no line).
const lineTableDumpScript = `
import dis, json, sys, types

HEAD = '''import os

def outer(a, b,
          c=3):
    total = 0
    for i in range(a):
        if i % 2 == 0:
            total += (i *
                      b -
                      c)
        else:
            total -= i
    def inner(x):
        return [y * x
                for y in range(total)
                if y > x]
    try:
        r = inner(b)
    except (ValueError,
            KeyError) as e:
        r = None
    finally:
        total += 1
    f = lambda q: (q +
                   1)
    return r, f(total), {k: v for k, v in zip("ab", [1, 2])}

class K:
    def m(self):
        while True:
            break
        return self
'''
LONG = "    y = " + " + ".join("x%d" % (i % 7) for i in range(150)) + "\n"
FAR = '''
def far(x0, x1=1, x2=2, x3=3, x4=4, x5=5, x6=6):
''' + LONG + "\n" * 200 + '''    z = {"a": x0,
         "b": [x1,
               x2]}
    return (y,
            z)

async def coro(n):
    async with n as m:
        await m
    return [await m for _ in range(n)]

def gen():
    yield from range(3)
    yield 4
'''
SRC = HEAD + "\n" * 300 + FAR

def walk(co, out):
    n = len(co.co_code) // 2
    lines = [None] * n
    covered = 0
    if sys.version_info < (3, 10):
        table = co.co_lnotab
        starts = dict(dis.findlinestarts(co))
        cur = None
        for i in range(n):
            if 2 * i in starts:
                cur = starts[2 * i]
            lines[i] = cur
            covered += cur is not None
    else:
        table = co.co_linetable
        for start, end, line in co.co_lines():
            for off in range(start, end, 2):
                if off // 2 < n:
                    lines[off // 2] = line
                    covered += 1
    out.append({"name": co.co_name, "first": co.co_firstlineno,
                "table": table.hex(), "codelen": len(co.co_code),
                "covered": covered, "lines": lines})
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            walk(c, out)

out = []
walk(compile(SRC, "<linetable-test>", "exec"), out)
import argparse, dis as dismod, tokenize
for m in (argparse, dismod, tokenize):
    with open(m.__file__, encoding="utf-8") as fh:
        walk(compile(fh.read(), m.__file__, "exec"), out)
json.dump({"minor": sys.version_info[1], "codes": out}, sys.stdout)
`

// pyCodeLines is what lineTableDumpScript prints for one code object.
type pyCodeLines struct {
	Name    string `json:"name"`
	First   int    `json:"first"`
	Table   string `json:"table"`
	CodeLen int    `json:"codelen"`
	Covered int    `json:"covered"`
	Lines   []*int `json:"lines"` // per 2-byte code unit; nil for no line
}

// pyLineDump is the output of lineTableDumpScript.
type pyLineDump struct {
	Minor int           `json:"minor"`
	Codes []pyCodeLines `json:"codes"`
}

var (
	lineDumpMu    sync.Mutex
	lineDumpCache = map[string]*pyLineDump{}
)

// dumpLineTables runs lineTableDumpScript with the interpreter at path and
// returns its output, caching it for the rest of the test binary's run.
func dumpLineTables(path string) (*pyLineDump, error) {
	lineDumpMu.Lock()
	defer lineDumpMu.Unlock()
	if d, ok := lineDumpCache[path]; ok {
		return d, nil
	}
	cmd := exec.Command(path, "-I", "-c", lineTableDumpScript)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %s", path, err, stderr.String())
	}
	d := new(pyLineDump)
	if err := json.Unmarshal(out, d); err != nil {
		return nil, fmt.Errorf("%s: decoding output: %v", path, err)
	}
	lineDumpCache[path] = d
	return d, nil
}

func TestLineTableRealPython(t *testing.T) {
	for _, py := range testenv.Pythons(t, 8, 13) {
		t.Run(py.Name, func(t *testing.T) {
			d, err := dumpLineTables(py.Path)
			if err != nil {
				t.Fatal(err)
			}
			if d.Minor != py.Minor {
				t.Fatalf("%s is 3.%d, want 3.%d", py.Path, d.Minor, py.Minor)
			}
			checked, mismatches, noLines := 0, 0, 0
			for _, c := range d.Codes {
				table, err := hex.DecodeString(c.Table)
				if err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				lt, err := ParseLineTable(d.Minor, table, c.First)
				if err != nil {
					t.Errorf("%s (first line %d, table %s): %v", c.Name, c.First, c.Table, err)
					continue
				}
				if c.Covered != len(c.Lines) {
					t.Errorf("%s: CPython gave lines for %d of %d code units", c.Name, c.Covered, len(c.Lines))
				}
				runs := 0
				for i, want := range c.Lines {
					off := uint32(2 * i)
					if i == 0 || !ltSameLine(want, c.Lines[i-1]) {
						runs++
					}
					for _, o := range []uint32{off, off + 1} {
						got, ok := lt.Line(o)
						if want == nil {
							noLines++
						}
						if ok != (want != nil) || (ok && got != *want) {
							mismatches++
							if mismatches <= 20 {
								t.Errorf("%s (first line %d, table %s): offset %d: got %d, %v; CPython says %s",
									c.Name, c.First, c.Table, o, got, ok, ltLineString(want))
							}
						}
					}
					checked++
				}
				// Past the end of the code: 3.8 and 3.9 keep the last line.
				var last *int
				if d.Minor <= 9 && len(c.Lines) > 0 {
					last = c.Lines[len(c.Lines)-1]
				}
				for _, o := range []uint32{uint32(c.CodeLen), uint32(c.CodeLen) + 1000, math.MaxUint32} {
					got, ok := lt.Line(o)
					if ok != (last != nil) || (ok && got != *last) {
						t.Errorf("%s: offset %d past the end (%d bytes): got %d, %v; want %s",
							c.Name, o, c.CodeLen, got, ok, ltLineString(last))
					}
				}
				// Merging: no more ranges than runs of equal lines, plus the
				// terminating range.
				if len(lt.ranges) > runs+1 {
					t.Errorf("%s: %d ranges for %d runs of lines", c.Name, len(lt.ranges), runs)
				}
			}
			if mismatches > 0 {
				t.Errorf("%d mismatching offsets", mismatches)
			}
			t.Logf("%s (3.%d): %d code objects, %d instruction offsets checked (%d with no line)",
				py.Path, d.Minor, len(d.Codes), checked, noLines/2)
		})
	}
}

func ltSameLine(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func ltLineString(l *int) string {
	if l == nil {
		return "no line"
	}
	return fmt.Sprint(*l)
}

// locEntry encodes one location table entry of 3.11+: the header byte for
// code and units code units, then the payload bytes given.
func locEntry(code, units int, payload ...byte) []byte {
	return append([]byte{byte(0x80 | code<<3 | (units - 1))}, payload...)
}

// locVarint encodes v as a location table varint.
func locVarint(v uint32) []byte {
	var b []byte
	for v >= 64 {
		b = append(b, byte(64|v&63))
		v >>= 6
	}
	return append(b, byte(v))
}

// locSvarint encodes v as a location table signed varint.
func locSvarint(v int) []byte {
	if v < 0 {
		return locVarint(uint32(-v)<<1 | 1)
	}
	return locVarint(uint32(v) << 1)
}

func ltConcat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// ltWant is an expected result of Line: line -1 means no line.
type ltWant struct {
	off  uint32
	line int
}

func TestLineTableEdgeCases(t *testing.T) {
	const no = -1
	longForm := ltConcat(locSvarint(-3), locVarint(2), locVarint(300), locVarint(5000))
	tests := []struct {
		name  string
		minor int
		table []byte
		first int
		err   bool
		want  []ltWant
	}{
		{name: "3.8 empty", minor: 8, first: 7, want: []ltWant{{0, 7}, {1000, 7}, {math.MaxUint32, 7}}},
		{name: "3.8 odd length", minor: 8, table: []byte{2, 1, 2}, first: 1, err: true},
		{name: "3.8 deltas", minor: 9, table: []byte{0, 2, 4, 1, 6, 0xff, 255, 0, 3, 127, 0, 127}, first: 10,
			want: []ltWant{{0, 12}, {3, 12}, {4, 13}, {9, 13}, {10, 12}, {267, 12}, {268, 12 + 254}, {1 << 30, 266}}},
		{name: "3.8 negative line", minor: 8, table: []byte{2, 0x80, 2, 0x7f}, first: 1,
			want: []ltWant{{0, 1}, {2, no}, {3, no}, {4, 0}}},
		{name: "3.10 empty", minor: 10, first: 7, want: []ltWant{{0, no}, {2, no}}},
		{name: "3.10 odd length", minor: 10, table: []byte{2}, first: 1, err: true},
		{name: "3.10 no line", minor: 10, table: []byte{2, 1, 4, 0x80, 2, 1, 0, 5, 2, 0x80}, first: 10,
			want: []ltWant{{0, 11}, {1, 11}, {2, no}, {5, no}, {6, 12}, {8, no}, {10, no}}},
		{name: "3.10 line jumps", minor: 10, table: []byte{0, 127, 0, 127, 254, 10, 10, 0, 2, 0x81}, first: 1,
			want: []ltWant{{0, 265}, {253, 265}, {254, 265}, {263, 265}, {264, 138}, {265, 138}, {266, no}}},
		{name: "3.10 empty entries only", minor: 10, table: []byte{0, 1, 0, 0x80}, first: 1, want: []ltWant{{0, no}}},
		{name: "3.11 empty", minor: 11, first: 3, want: []ltWant{{0, no}}},
		{name: "3.11 all forms", minor: 12, first: 100, table: ltConcat(
			locEntry(13, 1, locSvarint(1)...), // line 101, 2 bytes
			locEntry(3, 2, 0x25),              // short form, line 101, 4 bytes
			locEntry(11, 1, 4, 9),             // one-line form, line 102
			locEntry(15, 3),                   // no location, 6 bytes
			locEntry(12, 8, 0, 1),             // line 104, 16 bytes
			locEntry(14, 1, longForm...),      // long form, line 101
			locEntry(10, 1, 1, 2),             // line 101
			locEntry(13, 2, locSvarint(-1)...),
		),
			want: []ltWant{{0, 101}, {5, 101}, {6, 102}, {8, no}, {13, no}, {14, 104}, {29, 104}, {30, 101},
				{32, 101}, {33, 101}, {34, 100}, {37, 100}, {38, no}, {math.MaxUint32, no}}},
		{name: "3.11 big line delta", minor: 13, first: 1, table: locEntry(13, 1, locSvarint(5000000)...),
			want: []ltWant{{0, 5000001}, {2, no}}},
		{name: "3.11 negative line", minor: 11, first: 1, table: ltConcat(
			locEntry(13, 1, locSvarint(-5)...), locEntry(13, 1, locSvarint(7)...)),
			want: []ltWant{{0, no}, {2, 3}}},
		{name: "3.11 missing header", minor: 11, table: []byte{0x05}, err: true},
		{name: "3.11 extra payload", minor: 11, table: []byte{0xf8, 0x00}, err: true},
		{name: "3.11 short form truncated", minor: 11, table: []byte{0x80}, err: true},
		{name: "3.11 short form header as payload", minor: 11, table: []byte{0x80, 0x80, 0x00}, err: true},
		{name: "3.11 one-line form truncated", minor: 11, table: []byte{0xd0, 0x01}, err: true},
		{name: "3.11 truncated varint", minor: 11, table: []byte{0xe8, 0x41}, err: true},
		{name: "3.11 varint into header", minor: 11, table: []byte{0xe8, 0x41, 0xf8}, err: true},
		{name: "3.11 long form truncated", minor: 11, table: ltConcat(locEntry(14, 1, 2, 0, 1)), err: true},
		{name: "3.11 varint too long", minor: 11, table: []byte{0xe8, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x00}, err: true},
		{name: "3.11 varint over 32 bits", minor: 11, table: []byte{0xe8, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x3f}, err: true},
		{name: "3.11 largest line", minor: 11, first: 0, table: locEntry(13, 1, locVarint(math.MaxUint32-1)...),
			want: []ltWant{{0, math.MaxInt32}}},
		{name: "3.11 line overflow", minor: 11, first: 1, table: locEntry(13, 1, locVarint(math.MaxUint32-1)...), err: true},
		{name: "3.11 line underflow", minor: 11, first: -10, table: locEntry(13, 1, locVarint(math.MaxUint32)...), err: true},
		{name: "first line out of range", minor: 11, first: 1 << 40, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lt, err := ParseLineTable(tc.minor, tc.table, tc.first)
			if tc.err {
				if err == nil {
					t.Fatalf("no error; ranges %v", lt.ranges)
				}
				if !errors.Is(err, ErrMalformedLineTable) {
					t.Fatalf("error %q does not wrap ErrMalformedLineTable", err)
				}
				if lt != nil {
					t.Fatalf("error %v with a table", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				got, ok := lt.Line(w.off)
				if w.line == no {
					if ok {
						t.Errorf("offset %d: got line %d, want none", w.off, got)
					}
				} else if !ok || got != w.line {
					t.Errorf("offset %d: got %d, %v; want %d", w.off, got, ok, w.line)
				}
			}
		})
	}

	t.Run("unsupported version", func(t *testing.T) {
		for _, minor := range []int{-1, 0, 7, 14, math.MaxInt} {
			lt, err := ParseLineTable(minor, []byte{2, 1}, 1)
			if err == nil || lt != nil || errors.Is(err, ErrMalformedLineTable) {
				t.Errorf("3.%d: got %v, %v; want a version error", minor, lt, err)
			}
		}
	})
	t.Run("nil table", func(t *testing.T) {
		var lt *LineTable
		if l, ok := lt.Line(0); ok {
			t.Errorf("nil LineTable has line %d", l)
		}
	})
	t.Run("too many ranges", func(t *testing.T) {
		table := make([]byte, 0, 2*(maxLineTableRanges+2))
		for i := 0; i < maxLineTableRanges/2+1; i++ {
			table = append(table, 2, 1, 2, 0xff)
		}
		if _, err := ParseLineTable(10, table, 1); !errors.Is(err, ErrMalformedLineTable) {
			t.Errorf("3.10: %d ranges: got %v", maxLineTableRanges+2, err)
		}
		if _, err := ParseLineTable(8, table, 1); !errors.Is(err, ErrMalformedLineTable) {
			t.Errorf("3.8: %d ranges: got %v", maxLineTableRanges+2, err)
		}
		// The same number of entries on one line merge into one range.
		for i := range table {
			if i%2 == 1 {
				table[i] = 0
			}
		}
		lt, err := ParseLineTable(10, table, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(lt.ranges) != 2 {
			t.Errorf("got %d ranges for one line, want 2", len(lt.ranges))
		}
	})
	t.Run("offset overflow", func(t *testing.T) {
		if testing.Short() {
			t.Skip("allocates 34 MB")
		}
		// 2^32 bytes of code in 254-byte steps, all on one line.
		n := math.MaxUint32/254 + 1
		table := make([]byte, 2*n)
		for i := 0; i < len(table); i += 2 {
			table[i] = 254
		}
		if _, err := ParseLineTable(10, table, 1); !errors.Is(err, ErrMalformedLineTable) {
			t.Errorf("%d bytes of code: got %v", uint64(n)*254, err)
		}
		lt, err := ParseLineTable(10, table[:len(table)-2], 1)
		if err != nil {
			t.Fatal(err)
		}
		if l, ok := lt.Line(math.MaxUint32 - 300); !ok || l != 1 {
			t.Errorf("offset near 4 GiB: got %d, %v", l, ok)
		}
	})
}

// ltRefSpan is one entry of a line table as CPython walks it: the code from
// start up to end has line, or no line when line is negative.
type ltRefSpan struct {
	start, end uint64
	line       int
}

// ltRefSpans walks a table entry by entry the way CPython's decoders do,
// without validation or merging; it is only meaningful for tables
// ParseLineTable accepts.
func ltRefSpans(minor int, table []byte, first int) []ltRefSpan {
	var spans []ltRefSpan
	line := first
	end := uint64(0)
	switch {
	case minor <= 9:
		// A line increment takes effect at the offset its pair reaches.
		for i := 0; i+1 < len(table); i += 2 {
			start := end
			end += uint64(table[i])
			spans = append(spans, ltRefSpan{start, end, line})
			line += int(int8(table[i+1]))
		}
		spans = append(spans, ltRefSpan{end, math.MaxUint64, line})
	case minor == 10:
		for i := 0; i+1 < len(table); i += 2 {
			start := end
			end += uint64(table[i])
			entryLine := -1
			if d := int8(table[i+1]); d != -128 {
				line += int(d)
				entryLine = line
			}
			spans = append(spans, ltRefSpan{start, end, entryLine})
		}
	default:
		for i := 0; i < len(table); {
			head := table[i]
			code := head >> 3 & 15
			start := end
			end += uint64(head&7+1) * 2
			switch code {
			case 13, 14:
				line += ltRefSvarint(table[i+1:])
			case 11, 12:
				line += int(code) - 10
			}
			entryLine := line
			if code == 15 {
				entryLine = -1
			}
			spans = append(spans, ltRefSpan{start, end, entryLine})
			// Skip to the next byte with bit 7 set, as CPython does.
			for i++; i < len(table) && table[i]&0x80 == 0; i++ {
			}
		}
	}
	return spans
}

func ltRefSvarint(b []byte) int {
	var u uint64
	for shift := 0; ; shift += 6 {
		u |= uint64(b[0]&63) << shift
		if b[0]&64 == 0 {
			break
		}
		b = b[1:]
	}
	if u&1 != 0 {
		return -int(u >> 1)
	}
	return int(u >> 1)
}

// Tables of argparse's ArgumentParser._parse_known_args as CPython 3.9.18,
// 3.10.13 and 3.12.1 compile it, for seeds and benchmarks.
var (
	parseKnownArgs39 = ltMustHex(
		"00020a010a0404010a01060112010c0112011a05040104010801100308010a01" +
			"08010e050a0108010602080104010c030a03060106021615164a080314140401" +
			"040106010a0204010a030c0202fe08040a0108040a010401060204040a010c01" +
			"0a0104030c030803120404010a010a01080110060c010aff04020afe040310fd" +
			"040408010cff080306010a0108ff06040a0108010a010a010a04060104ff0603" +
			"08011803",
	)
	parseKnownArgs310 = ltMustHex(
		"0a020a0104040a01060112010c011201180102fd040804010801100108030a01" +
			"08010c0102ff0a0608010601080204010c010a030603060116021615084e1403" +
			"0414040104010a01040208010c03020208fe0804080108040401020104020804" +
			"0c010a010401080308e6081d120304040a010a01080110010c060a0104ff0a02" +
			"04fe140308010c0104ff028006030a01080106ff0a0408010a010a01040104ff" +
			"0605040106ff0803140104800803",
	)
	parseKnownArgs312 = ltMustHex(
		"fffa8000e00b0fd70b25d10b25d00b31d81a1ed71a34d11a34b05bd31a41884b" +
			"f008001c1ed00818d81b1fd71b3ad11b3af200050938884bd81c27d71c36d11c" +
			"36884ddc232ca85bd72d47d12d47d32348f200030d38910f9001903cd81c2cd7" +
			"1c37d11c37b80cc062d31c499009d81019d71020d11020a01da872b001d02132" +
			"d41033d81019d71020d11020a01da871b031a975a876d02136d51037f107030d" +
			"38f005050938f014002123d0081dd82325d00820dc1b1fa00bd31b2cd00818dc" +
			"1d26d02737d31d38f200110939894d8841887af00600101a9854d20f21d81028" +
			"d7102fd1102fb003d41034d82232f200011139904ad8142cd71433d11433b043" +
			"d51438f103011139f00c002024d71f33d11f33b04ad31f3f900cd8131fd01327" +
			"d81e219147e02f3bd01429a821d1142cd81e219047d81028d7102fd1102fb007" +
			"d51038f023110939f028001f219f679967d0263ed31e3fd0081bf40600181b93" +
			"75880cdc2326a335d00820f70412094801f10012094801f72a4a010918f1004a" +
			"010918f05c0200171bd71632d11632d31634880bf70610091ff00010091ff028" +
			"0012148806d81617880bd90b20dc2629d02a3fd32640d10c23e02628d00c23d8" +
			"0e19d01d34d20e34f40600282be01d32f605032c29e01419d81318984bd21327" +
			"f205001116f203032c29f30003282ad00c24f00800101bd01e36d20f36d9283b" +
			"b84bd32848d01025f008001429a83bd21336d82237904bd8141ce02237904bf0" +
			"0800101bd02237d10f37d81a25a06bd0324ad01a4b9007d81016970d910d9867" +
			"d41026d81e36900bf106001b2ba83bd31a37884bf035000f1ad01d34d30e34f1" +
			"3a001629a81bd31535880af00600090f8f0d890d906ba02aa02bd0162ed4082f" +
			"f008001c1ed00818d8161a976d916df2000e0949018846d80f15985cd20f29d8" +
			"1319973f923fd81424d7142bd1142bd42c3cb856d32c44d51445f00c00191f9f" +
			"0e990ed11832dc1822a036a73ea13eb433d51837dc181fa009a836af3ba93bd5" +
			"1837d8181e9f0e990eac27b029b856bf5bb95bd32a49d21849dc181fa009a836" +
			"af3ba93bd82024a70fa10fb006b806bf0eb90ed32047f50301194901f01b0e09" +
			"4901f120000c1cd80c108f4a894a9471d01943d31744d8171b97799179d02131" +
			"d31732f103011833f400010d34f00800161ad71534d11534f2000c09368845d8" +
			"0f148f7e8b7ed81e23d71e32d11e32f2000a11369046d8171dd02139d21739d9" +
			"181df0050a1136f00e002c31d72b3fd12b3ff603021d3dd82127d82026a70ba1" +
			"0bb438d1203bf405001e2ea866d51d35f000021d3d9045f000021d3df406001b" +
			"1cd01c41d31a429043d81418974a914a9873a053a758a158a865a35fd11f34d5" +
			"1435f0190c0936f01e0010199826d00f20d00820f9f24d02032c29f9f27e0102" +
			"1d3d",
	)
)

func ltMustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func FuzzParseLineTable(f *testing.F) {
	for _, s := range []struct {
		minors []uint8
		table  []byte
		first  int
	}{
		{[]uint8{8, 9}, parseKnownArgs39, 1870},
		{[]uint8{10}, parseKnownArgs310, 1878},
		{[]uint8{11, 12, 13}, parseKnownArgs312, 1935},
		{[]uint8{8, 9, 10, 11, 12, 13}, nil, 1},
		{[]uint8{11}, []byte{0xe8, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x3f}, 1},
	} {
		for _, m := range s.minors {
			f.Add(m, s.table, s.first)
		}
	}
	for _, py := range testenv.InstalledPythons(8, 13) {
		d, err := dumpLineTables(py.Path)
		if err != nil {
			f.Fatal(err)
		}
		for _, c := range d.Codes {
			f.Add(uint8(d.Minor), ltMustHex(c.Table), c.First)
		}
	}

	f.Fuzz(func(t *testing.T, m uint8, table []byte, first int) {
		minor := 8 + int(m%6)
		lt, err := ParseLineTable(minor, table, first)
		if err != nil {
			if !errors.Is(err, ErrMalformedLineTable) {
				t.Fatalf("error %v does not wrap ErrMalformedLineTable", err)
			}
			if lt != nil {
				t.Fatalf("error %v with a table", err)
			}
			return
		}
		// Output size is bounded by the input: one range per entry at most
		// (2 bytes for 3.8 to 3.10, at least 1 byte for 3.11+), plus one.
		limit := len(table) + 1
		if minor <= 10 {
			limit = len(table)/2 + 1
		}
		if len(lt.ranges) > limit || len(lt.ranges) > maxLineTableRanges {
			t.Fatalf("%d ranges from %d bytes", len(lt.ranges), len(table))
		}
		for i := 1; i < len(lt.ranges); i++ {
			if lt.ranges[i].start <= lt.ranges[i-1].start || lt.ranges[i].line == lt.ranges[i-1].line {
				t.Fatalf("ranges %d and %d: %v, %v", i-1, i, lt.ranges[i-1], lt.ranges[i])
			}
		}
		// Compare with CPython's way at both ends of every entry; ranges
		// only start where entries do.
		var end uint64
		for _, sp := range ltRefSpans(minor, table, first) {
			if sp.start == sp.end {
				continue
			}
			for _, off := range []uint64{sp.start, sp.start + 1, sp.end - 1} {
				if off < sp.end && off <= math.MaxUint32 {
					ltCheckLine(t, lt, uint32(off), sp.line)
				}
			}
			end = sp.end
		}
		if end <= math.MaxUint32 {
			ltCheckLine(t, lt, uint32(end), -1)
		}
	})
}

// ltCheckLine fails t unless lt has line want at off; a negative want means
// no line.
func ltCheckLine(t *testing.T, lt *LineTable, off uint32, want int) {
	t.Helper()
	got, ok := lt.Line(off)
	if ok != (want >= 0) || (ok && got != want) {
		t.Fatalf("offset %d: got %d, %v; CPython's way gives %d", off, got, ok, want)
	}
}

func BenchmarkParseLineTable(b *testing.B) {
	for _, bc := range []struct {
		name  string
		minor int
		table []byte
		first int
	}{
		{"3.9", 9, parseKnownArgs39, 1870},
		{"3.10", 10, parseKnownArgs310, 1878},
		{"3.12", 12, parseKnownArgs312, 1935},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.table)))
			for b.Loop() {
				if _, err := ParseLineTable(bc.minor, bc.table, bc.first); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("Line", func(b *testing.B) {
		lt, err := ParseLineTable(12, parseKnownArgs312, 1935)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		off := uint32(0)
		for b.Loop() {
			lt.Line(off)
			off = (off + 34) % 1900
		}
	})
}
