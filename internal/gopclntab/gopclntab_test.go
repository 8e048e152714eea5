package gopclntab_test

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/gopclntab"
	"github.com/stackline-dev/stackline/internal/gopclntab/gopclntabtest"
)

var testFuncs = []gopclntabtest.Func{
	{Name: "main.leaf", PCSP: gopclntabtest.Runs(0, 16), PCLn: gopclntabtest.Runs(10, 8, 11, 8)},
	{Name: "main.framed", PCSP: gopclntabtest.Runs(0, 5, 8, 3, 40, 20, 8, 1, 0, 3)},
	{Name: "runtime.goexit", FuncID: 7, Flag: gopclntab.FlagTopFrame | gopclntab.FlagAsm, PCSP: gopclntabtest.Runs(0, 8)},
}

func TestLayouts(t *testing.T) {
	for _, magic := range []uint32{gopclntab.Magic116, gopclntab.Magic118, gopclntab.Magic120} {
		data := gopclntabtest.Build(magic, 0x401000, testFuncs)
		tab, err := gopclntab.Parse(data, binary.LittleEndian)
		if err != nil {
			t.Fatalf("%#x: %v", magic, err)
		}
		if tab.Magic() != magic || tab.PtrSize() != 8 || tab.NumFuncs() != 3 || tab.Size() != len(data) {
			t.Errorf("%#x: magic %#x, pointers of %d bytes, %d functions", magic, tab.Magic(), tab.PtrSize(), tab.NumFuncs())
		}
		if lo, hi := tab.TextRange(); lo != 0x401000 || hi != 0x401000+16+32+8 {
			t.Errorf("%#x: text %#x-%#x", magic, lo, hi)
		}
		entry := uint64(0x401000)
		for i, want := range testFuncs {
			f, ok := tab.Func(i)
			if !ok || f.Entry != entry || tab.Entry(i) != entry || tab.Name(f.NameOff) != want.Name || f.FuncID != want.FuncID {
				t.Fatalf("%#x: function %d: %+v %q", magic, i, f, tab.Name(f.NameOff))
			}
			if f.Flag != want.Flag {
				t.Errorf("%#x: %s: flags %b", magic, want.Name, f.Flag)
			}
			var runs []gopclntabtest.Run
			pc := entry
			for it := tab.Values(f.Entry, f.PCSP); it.Next(); {
				if it.Start() != pc {
					t.Fatalf("%#x: %s: run at %#x, want %#x", magic, want.Name, it.Start(), pc)
				}
				runs = append(runs, gopclntabtest.Run{Value: it.Value(), Len: it.End() - it.Start()})
				pc = it.End()
			}
			if !reflect.DeepEqual(runs, want.PCSP) {
				t.Errorf("%#x: %s: pcsp %v, want %v", magic, want.Name, runs, want.PCSP)
			}
			if got, ok := tab.Find(pc - 1); !ok || got != i {
				t.Errorf("%#x: Find(%#x) = %d, %v", magic, pc-1, got, ok)
			}
			entry = pc
		}
		f, _ := tab.Func(0)
		if v := tab.PCValue(f.Entry, f.PCLn, f.Entry+9); v != 11 {
			t.Errorf("%#x: line at +9: %d", magic, v)
		}
		if v := tab.PCValue(f.Entry, f.PCLn, f.Entry+16); v != -1 {
			t.Errorf("%#x: line past the end: %d", magic, v)
		}
		f, _ = tab.Func(1)
		if v := tab.MaxValue(f.PCSP); v != 40 {
			t.Errorf("%#x: largest SP delta %d", magic, v)
		}
		if _, ok := tab.Func(3); ok {
			t.Errorf("%#x: a fourth function", magic)
		}
		if _, ok := tab.Find(entry); ok {
			t.Errorf("%#x: Find past the end", magic)
		}
	}
}

// TestRunningBinary reads the test binary's own table and compares it
// with what the runtime says.
func TestRunningBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	ef, err := elf.Open(exe)
	if err != nil {
		t.Skip(err)
	}
	defer ef.Close()
	sec := ef.Section(".gopclntab")
	data, err := sec.Data()
	if err != nil {
		t.Fatal(err)
	}
	tab, err := gopclntab.Parse(data, ef.ByteOrder)
	if err != nil {
		t.Fatal(err)
	}
	md, err := tab.FindModuledata(ef, sec.Addr)
	if err != nil {
		t.Fatal(err)
	}
	tab.ResolveText(ef, md)
	if md.Text == 0 || md.GoFunc == 0 || tab.Text() != md.Text {
		t.Errorf("moduledata %+v, text %#x", md, tab.Text())
	}

	pc, _, line, _ := runtime.Caller(0)
	rf := runtime.FuncForPC(pc)
	i, ok := tab.Find(uint64(pc))
	if !ok {
		t.Fatalf("Find(%#x) failed", pc)
	}
	f, _ := tab.Func(i)
	if tab.Name(f.NameOff) != rf.Name() || f.Entry != uint64(rf.Entry()) {
		t.Errorf("function %q at %#x, runtime says %q at %#x", tab.Name(f.NameOff), f.Entry, rf.Name(), rf.Entry())
	}
	if got := tab.PCValue(f.Entry, f.PCLn, uint64(pc)); int(got) != line {
		t.Errorf("line %d, runtime says %d", got, line)
	}
	file := tab.FileName(&f, tab.PCValue(f.Entry, f.PCFile, uint64(pc)))
	if !strings.HasSuffix(file, "gopclntab_test.go") {
		t.Errorf("file %q", file)
	}
	if tab.MaxValue(f.PCSP) <= 0 {
		t.Errorf("a test with no frame")
	}

	found := false
	for i := range tab.NumFuncs() {
		f, _ := tab.Func(i)
		if tab.Name(f.NameOff) == "runtime.goexit" {
			found = f.Flag&gopclntab.FlagTopFrame != 0 && f.Flag&gopclntab.FlagAsm != 0
		}
	}
	if !found {
		t.Error("runtime.goexit is not an assembly function at the top of its stacks")
	}
}

func TestMalformed(t *testing.T) {
	good := gopclntabtest.Build(gopclntab.Magic120, 0x1000, testFuncs)
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"short", good[:10]},
		{"magic", append([]byte{1, 2, 3, 4}, good[4:]...)},
		{"pointer size", append(append([]byte{}, good[:7]...), append([]byte{3}, good[8:]...)...)},
		{"truncated", good[:len(good)-140]},
		{"no room for one entry", func() []byte {
			b := slices.Clone(good)
			binary.LittleEndian.PutUint64(b[8:], 1<<40)                // functions
			binary.LittleEndian.PutUint64(b[8+7*8:], uint64(len(b)-4)) // function table offset
			return b
		}()},
	} {
		if _, err := gopclntab.Parse(c.data, binary.LittleEndian); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	// Records cut short are not decoded.
	tab, err := gopclntab.Parse(good[:len(good)-60], binary.LittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tab.Func(0); !ok {
		t.Error("first record lost")
	}
	if f, ok := tab.Func(2); ok {
		t.Errorf("record past the end: %+v", f)
	}
}
