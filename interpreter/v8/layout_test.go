package v8

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
)

// fixture reads testdata/name.consts.
func fixture(t testing.TB, name string) *Constants {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".consts"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConstants(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return c
}

// fixtureLayout builds the layout of testdata/name.consts.
func fixtureLayout(t testing.TB, name string) *Layout {
	t.Helper()
	lay, err := NewLayout(fixture(t, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return lay
}

// TestLayouts checks the layout of each node major's constants (dumped
// from the binaries into testdata) against the offsets found in live
// objects of node 20, 22 and 24 (%DebugPrint addresses, memory read field
// by field); node 18's from V8 10.2's layout (its libnode cannot run
// here, see testenv.NodeMajors).
func TestLayouts(t *testing.T) {
	type want struct {
		version                                   string
		code, dispatch                            uint32
		leaptiering                               bool
		deopt, positions, start, flags, size      uint32
		inlineBody                                uint32
		bytecodePositions, bytecodeData           uint32
		sfiName, sfiData, sfiScript               uint32
		scopeFirstVars                            uint32
		deoptSFI                                  uint32
		wrapped                                   bool
		optimizedFrames                           []string
		builtins, bytecodeSizes, jsFunctionsRange bool
	}
	for name, w := range map[string]want{
		"node18": {version: "10.2.154.26", code: 48, deopt: 16, positions: 24, size: 40, flags: 48, inlineBody: 128,
			bytecodePositions: 32, bytecodeData: 56, sfiName: 16, sfiData: 8, sfiScript: 32, scopeFirstVars: 3, deoptSFI: 6,
			optimizedFrames: []string{"OptimizedFrame"}, bytecodeSizes: true},
		"node20": {version: "11.3.244.8", code: 48, deopt: 16, positions: 24, start: 40, flags: 48, size: 56,
			bytecodePositions: 32, bytecodeData: 54, sfiName: 16, sfiData: 8, sfiScript: 32, scopeFirstVars: 3, deoptSFI: 6,
			optimizedFrames: []string{"MaglevFrame", "TurbofanFrame"}, builtins: true, bytecodeSizes: true},
		"node22": {version: "12.4.254.21", code: 24, deopt: 8, positions: 16, start: 40, flags: 48, size: 52,
			bytecodePositions: 24, bytecodeData: 64, sfiName: 16, sfiData: 8, sfiScript: 32, scopeFirstVars: 3, deoptSFI: 6,
			optimizedFrames: []string{"MaglevFrame", "TurbofanFrame"}, builtins: true, bytecodeSizes: true, jsFunctionsRange: true},
		"node24": {version: "13.6.233.17", dispatch: 24, leaptiering: true, deopt: 8, positions: 16, start: 40, flags: 52, size: 56,
			bytecodePositions: 24, bytecodeData: 64, sfiName: 24, sfiData: 8, sfiScript: 40, scopeFirstVars: 5, deoptSFI: 7, wrapped: true,
			optimizedFrames: []string{"MaglevFrame", "TurbofanJSFrame"}, builtins: true, bytecodeSizes: true, jsFunctionsRange: true},
	} {
		t.Run(name, func(t *testing.T) {
			l := fixtureLayout(t, name)
			got := want{
				version: l.Version.String(), code: l.JSFunctionCode, dispatch: l.JSFunctionDispatch, leaptiering: l.Leaptiering,
				deopt: l.CodeDeoptData, positions: l.CodePositions, start: l.CodeInstructionStart, flags: l.CodeFlags,
				size: l.CodeInstructionSize, inlineBody: l.CodeInlineBody,
				bytecodePositions: l.BytecodeArrayPositions, bytecodeData: l.BytecodeArrayData,
				sfiName: l.SFINameOrScopeInfo, sfiData: l.SFIFunctionData, sfiScript: l.SFIScript,
				scopeFirstVars: l.ScopeInfo.FirstVars, deoptSFI: l.Deopt.SharedFunctionInfo, wrapped: l.Deopt.WrappedSFI,
				optimizedFrames:  w.optimizedFrames,
				builtins:         l.Builtins[1] > l.Builtins[0],
				bytecodeSizes:    len(l.BytecodeSizes) > 0,
				jsFunctionsRange: l.Types.LastJSFunction > l.Types.FirstJSFunction && w.jsFunctionsRange,
			}
			for _, f := range w.optimizedFrames {
				if _, ok := l.Frame.Types[f]; !ok {
					t.Errorf("no frame type %s among %v", f, l.Frame.Types)
				}
			}
			if got.version != w.version || got.code != w.code || got.dispatch != w.dispatch || got.leaptiering != w.leaptiering ||
				got.deopt != w.deopt || got.positions != w.positions || got.start != w.start || got.flags != w.flags ||
				got.size != w.size || got.inlineBody != w.inlineBody || got.bytecodePositions != w.bytecodePositions ||
				got.bytecodeData != w.bytecodeData || got.sfiName != w.sfiName || got.sfiData != w.sfiData ||
				got.sfiScript != w.sfiScript || got.scopeFirstVars != w.scopeFirstVars || got.deoptSFI != w.deoptSFI ||
				got.wrapped != w.wrapped || got.builtins != w.builtins || got.bytecodeSizes != w.bytecodeSizes ||
				got.jsFunctionsRange != w.jsFunctionsRange {
				t.Errorf("layout\n got %+v\nwant %+v", got, w)
			}
			// The frame slots the eBPF walker reads, the same in
			// every version.
			if f := l.Frame; f.Context != -8 || f.Function != -16 || f.BytecodeArray != -32 || f.BytecodeOffset != -40 {
				t.Errorf("frame slots %+v", f)
			}
			if l.SmiShift != 32 || l.HeapObjectTag != 1 || l.HeapObjectTagMask != 3 {
				t.Errorf("tagging: Smi shift %d, heap object tag %d mask %d", l.SmiShift, l.HeapObjectTag, l.HeapObjectTagMask)
			}
		})
	}
}

// TestLayoutMissingConstants: a build without constants the layout
// needs fails with an error naming every one of them.
func TestLayoutMissingConstants(t *testing.T) {
	c := fixture(t, "node22")
	for _, n := range []string{"HeapObjectTag", "class_JSFunction__shared__SharedFunctionInfo", "frametype_ExitFrame",
		"class_Code__instruction_start__Address"} {
		delete(c.Values, n)
	}
	_, err := NewLayout(c)
	if !errors.Is(err, ErrMissingConstants) {
		t.Fatalf("error %v, want ErrMissingConstants", err)
	}
	for _, n := range []string{"HeapObjectTag", "class_JSFunction__shared__SharedFunctionInfo", "frametype_ExitFrame",
		"class_Code__instruction_start__Address"} {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
}

// TestLayoutUnsupported: versions outside 10.2-13.6 and compressed
// pointers are refused.
func TestLayoutUnsupported(t *testing.T) {
	for _, v := range []Version{{Major: 9, Minor: 4}, {Major: 10, Minor: 1}, {Major: 13, Minor: 7}, {Major: 14}} {
		c := fixture(t, "node24")
		c.Version = v
		if _, err := NewLayout(c); !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("V8 %s: error %v, want ErrUnsupportedVersion", v, err)
		}
	}
	c := fixture(t, "node22")
	c.Values["TaggedSize"] = 4
	if _, err := NewLayout(c); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("pointer compression: error %v, want ErrUnsupportedVersion", err)
	}
}

// TestConstantsDumpRoundTrip: a dump parses back to the same constants.
func TestConstantsDumpRoundTrip(t *testing.T) {
	for _, name := range []string{"node18", "node20", "node22", "node24"} {
		c := fixture(t, name)
		var b bytes.Buffer
		if err := c.Dump(&b); err != nil {
			t.Fatal(err)
		}
		d, err := ParseConstants(b.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != c.Version || d.IsolateGroup != c.IsolateGroup || d.Builtins != c.Builtins ||
			!bytes.Equal(d.BytecodeSizes, c.BytecodeSizes) || len(d.Values) != len(c.Values) {
			t.Errorf("%s: round trip differs", name)
		}
		for k, v := range c.Values {
			if d.Values[k] != v {
				t.Errorf("%s: %s = %d, want %d", name, k, d.Values[k], v)
			}
		}
	}
}

// TestReadConstantsInstalled reads the constants of each installed node
// (from .dynsym and .symtab) and checks them against testdata when the
// versions agree.
func TestReadConstantsInstalled(t *testing.T) {
	for _, n := range testenv.Nodes(t) {
		t.Run(n.Name, func(t *testing.T) {
			ef, err := elf.Open(n.V8File)
			if err != nil {
				t.Fatal(err)
			}
			defer ef.Close()
			c, err := ReadConstants(ef)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Values) < 400 {
				t.Errorf("%d constants, want the ~450-530 node has", len(c.Values))
			}
			if _, err := NewLayout(c); err != nil {
				t.Fatal(err)
			}
			want := fixture(t, n.Name)
			if c.Version != want.Version {
				t.Logf("installed V8 %s, testdata %s: not compared", c.Version, want.Version)
				return
			}
			if len(c.Values) != len(want.Values) || c.IsolateGroup != want.IsolateGroup || c.Builtins != want.Builtins {
				t.Errorf("constants differ from testdata")
			}
			for k, v := range want.Values {
				if c.Values[k] != v {
					t.Errorf("%s = %d, testdata %d", k, c.Values[k], v)
				}
			}
		})
	}
}

// TestDetect: V8 is recognised by its symbols whatever the file is
// called; a file without V8 is not V8.
func TestDetect(t *testing.T) {
	nodes := testenv.Nodes(t)
	dir := t.TempDir()
	renamed := filepath.Join(dir, "my-renamed-app")
	if err := os.Symlink(nodes[0].V8File, renamed); err != nil {
		t.Fatal(err)
	}
	open := func(path string) interpreter.File {
		return interpreter.File{Path: path, ELF: func() (*elffile.File, error) {
			f, err := elffile.Open(elffile.Source{Open: func() (*os.File, error) { return os.Open(path) }})
			if err == nil {
				t.Cleanup(func() { f.Close() })
			}
			return f, err
		}}
	}
	l, err := Detect(open(renamed))
	if err != nil || l == nil {
		t.Fatalf("renamed node: %v, %v", l, err)
	}
	if l.Layout().Version.Major < 10 {
		t.Errorf("version %s", l.Layout().Version)
	}
	// Detect reads the symbols in place; NewLoader reads them through
	// debug/elf's section readers: the same layout.
	ef, err := elf.Open(nodes[0].V8File)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	read, err := NewLoader(ef)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(l.Layout(), read.Layout()) {
		t.Errorf("Detect's layout differs from NewLoader's")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if l, err := Detect(open(self)); l != nil || err != nil {
		t.Errorf("the test binary: %v, %v; want not V8", l, err)
	}
}
