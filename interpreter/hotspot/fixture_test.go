package hotspot

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// codeFixture is compiled code and method data dumped from a live JVM
// running testdata/java/Chain.java (TestDumpFixtures), stored in
// testdata/code-jdkNN.json.gz.
type codeFixture struct {
	JDK      string `json:"jdk"`
	Version  int    `json:"version"`
	Encoding string `json:"encoding"`
	// NMethods are C2 (level 4) compilations of the chain's methods.
	NMethods []nmethodFixture `json:"nmethods"`
	// Methods are the methods the nmethods' scopes name, by key
	// ("Inner.c(I)J").
	Methods map[string]methodFixture `json:"methods"`
}

type nmethodFixture struct {
	// Method is the key of the compiled method.
	Method    string `json:"method"`
	CompileID int    `json:"compile_id"`
	// PcDescs and Scopes are the nmethod's PcDesc table and scope data,
	// as read from scopes_pcs_begin and scopes_data_begin.
	PcDescs []byte `json:"pc_descs"`
	Scopes  []byte `json:"scopes"`
	// Metadata names the methods among metadata_begin()[i]: the key of
	// the method at i, "" for other metadata.
	Metadata []string `json:"metadata"`
	// Addr and Header are the nmethod's address and its first
	// sizeof(nmethod) bytes; Sections where the dump found its data,
	// reading the fields one by one.
	Addr     uint64          `json:"addr"`
	Header   []byte          `json:"header"`
	Sections NMethodSections `json:"sections"`
	// CodeBegin is the code's start as jcmd Compiler.codelist states it.
	CodeBegin uint64 `json:"code_begin"`
}

type methodFixture struct {
	Class     string `json:"class"`
	Name      string `json:"name"`
	Signature string `json:"signature"`
	// LineTable is the compressed line number table after the method's
	// bytecodes, terminator included; empty for a method without one.
	LineTable []byte `json:"line_table"`
	// ConstMethod and ConstMethodHeader are the address and the first
	// sizeof(ConstMethod) bytes of its ConstMethod, LineTableAddr where
	// the dump found the line table (0: none).
	ConstMethod       uint64 `json:"const_method"`
	ConstMethodHeader []byte `json:"const_method_header"`
	LineTableAddr     uint64 `json:"line_table_addr"`
}

func (m methodFixture) key() string { return m.Class + "." + m.Name + m.Signature }

func readCodeFixture(t *testing.T, jdk string) codeFixture {
	t.Helper()
	var f codeFixture
	if err := readGzipJSON(filepath.Join("testdata", "code-"+jdk+".json.gz"), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f codeFixture) encoding(t *testing.T) Encoding {
	for _, e := range []Encoding{EncodingJDK17, EncodingUnsigned5} {
		if e.String() == f.Encoding {
			return e
		}
	}
	t.Fatalf("%s: encoding %q", f.JDK, f.Encoding)
	return 0
}

// chainLines returns the line of each "// @name" marker in Chain.java,
// and the line ranges of the methods a, b and c (from their declaration
// to the closing brace).
func chainLines(t *testing.T) (marks map[string]int, bodies map[string][2]int) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "java", "Chain.java"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	marks, bodies = map[string]int{}, map[string][2]int{}
	sc := bufio.NewScanner(f)
	open := ""
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if _, m, ok := strings.Cut(line, "// @"); ok {
			marks[m] = n
		}
		for _, name := range []string{"a", "b", "c"} {
			if strings.Contains(line, "static long "+name+"(int n)") {
				open = name
				bodies[name] = [2]int{n, 0}
			}
		}
		if open != "" && line == "    }" {
			r := bodies[open]
			bodies[open] = [2]int{r[0], n}
			open = ""
		}
	}
	for _, m := range []string{"a-call", "b-call", "c-loop", "c-call", "lambda", "a-lambda"} {
		if marks[m] == 0 {
			t.Fatalf("Chain.java has no // @%s", m)
		}
	}
	return marks, bodies
}

var fixtureJDKs = []string{"jdk17", "jdk21", "jdk25"}

// hiddenLambda is how JavaName names the method of Outer's lambda: the
// VM's name of the hidden class (JDK 17 numbers lambdas, "Outer$$Lambda$14";
// 21 and 25 do not) with its address after a '+' or '/'.
var hiddenLambda = regexp.MustCompile(`^Outer\$\$Lambda(\$\d+)?[+/]0x[0-9a-f]+\.applyAsLong\(int\)$`)

// TestLineTableFixtures decodes the line tables of the chain's methods as
// each JDK stored them and checks them against Chain.java.
func TestLineTableFixtures(t *testing.T) {
	for _, jdk := range fixtureJDKs {
		t.Run(jdk, func(t *testing.T) { checkLineTables(t, layoutFixture(t, jdk), readCodeFixture(t, jdk)) })
	}
}

func checkLineTables(t *testing.T, l *Layout, f codeFixture) {
	marks, bodies := chainLines(t)
	enc := f.encoding(t)
	for key, want := range map[string]struct {
		body string
		mark string
	}{
		"Outer.a(I)J":  {"a", "a-call"},
		"Middle.b(I)J": {"b", "b-call"},
		"Inner.c(I)J":  {"c", "c-loop"},
	} {
		m, ok := f.Methods[key]
		if !ok {
			t.Errorf("no method %s", key)
			continue
		}
		lt, n, err := DecodeLineTable(m.LineTable, enc)
		if err != nil || n != len(m.LineTable) {
			t.Errorf("%s: %v (%d of %d bytes)", key, err, n, len(m.LineTable))
			continue
		}
		r := bodies[want.body]
		hasMark := false
		for _, e := range lt {
			if int(e.Line) <= r[0] || int(e.Line) >= r[1] {
				t.Errorf("%s: entry %v outside the body, lines %d-%d", key, e, r[0], r[1])
			}
			hasMark = hasMark || int(e.Line) == marks[want.mark]
		}
		if !hasMark {
			t.Errorf("%s: %v has no entry for line %d (// @%s)", key, lt, marks[want.mark], want.mark)
		}
		if got := lt.Line(0); got != r[0]+1 {
			t.Errorf("%s: Line(0) = %d, want %d (the first statement)", key, got, r[0]+1)
		}
	}
}

// TestScopeFixtures decodes every PcDesc's scopes of the C2-compiled chain
// as each JDK stored them, names them from the dumped metadata and line
// tables, and finds Inner.c inlined into Middle.b inlined into Outer.a at
// the call lines of Chain.java.
func TestScopeFixtures(t *testing.T) {
	for _, jdk := range fixtureJDKs {
		t.Run(jdk, func(t *testing.T) { checkScopes(t, layoutFixture(t, jdk), readCodeFixture(t, jdk)) })
	}
}

func checkScopes(t *testing.T, l *Layout, f codeFixture) {
	marks, bodies := chainLines(t)
	enc := f.encoding(t)
	if EncodingFor(f.Version) != enc {
		t.Errorf("EncodingFor(%d) = %v, the VM's is %v", f.Version, EncodingFor(f.Version), enc)
	}
	lines := map[string]LineTable{}
	for key, m := range f.Methods {
		if key != m.key() {
			t.Errorf("method %s is keyed %s", m.key(), key)
		}
		if m.LineTableAddr == 0 {
			continue // no line table: Line answers 0
		}
		lt, _, err := DecodeLineTable(m.LineTable, enc)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		lines[key] = lt
	}
	found, calls, lambdaCalls := 0, 0, 0
	for _, nm := range f.NMethods {
		if nm.Method != "Outer.a(I)J" {
			continue
		}
		n := len(nm.PcDescs) / 16
		if n < 3 {
			t.Fatalf("%s: %d PcDescs", nm.Method, n)
		}
		for i := 0; i < n; i++ {
			pc := int32(uint32(nm.PcDescs[16*i]) | uint32(nm.PcDescs[16*i+1])<<8 | uint32(nm.PcDescs[16*i+2])<<16 | uint32(nm.PcDescs[16*i+3])<<24)
			if pc < 0 {
				continue // the sentinel
			}
			d, ok := FindPcDesc(nm.PcDescs, pcDesc16, uint32(pc))
			if !ok || d.PCOffset != pc {
				t.Fatalf("FindPcDesc(%d) = %+v, %v", pc, d, ok)
			}
			scopes, err := DecodeScopes(nm.Scopes, int(d.ScopeDecodeOffset), enc)
			if err != nil {
				t.Fatalf("PcDesc %d (%+v): %v", i, d, err)
			}
			var chain []string
			var at []int
			for _, s := range scopes {
				if s.MethodIndex > len(nm.Metadata) || nm.Metadata[s.MethodIndex-1] == "" {
					t.Fatalf("PcDesc %d: scope %+v names no method of %d metadata", i, s, len(nm.Metadata))
				}
				key := nm.Metadata[s.MethodIndex-1]
				m := f.Methods[key]
				chain = append(chain, JavaName(m.Class, m.Name, m.Signature))
				at = append(at, lines[key].Line(s.BCI))
			}
			if len(scopes) > 0 && chain[len(chain)-1] != "Outer.a(int)" {
				t.Errorf("PcDesc %d: outermost scope %s, want Outer.a(int)", i, chain[len(chain)-1])
			}
			if len(chain) == 3 && chain[0] == "Outer.lambda$static$0(int)" && hiddenLambda.MatchString(chain[1]) {
				// The lambda's call of Leaf.work: the generated
				// applyAsLong has no line.
				lambdaCalls++
				if at[0] != marks["lambda"] || at[1] != 0 || at[2] != marks["a-lambda"] {
					t.Errorf("PcDesc %d: %v at lines %v, want %d, 0, %d", i, chain, at, marks["lambda"], marks["a-lambda"])
				}
			}
			if strings.Join(chain, " < ") != "Inner.c(int) < Middle.b(int) < Outer.a(int)" {
				continue
			}
			found++
			if at[1] != marks["b-call"] || at[2] != marks["a-call"] {
				t.Errorf("PcDesc %d: %v at lines %v, want b at %d and a at %d", i, chain, at, marks["b-call"], marks["a-call"])
			}
			if c := bodies["c"]; at[0] <= c[0] || at[0] >= c[1] {
				t.Errorf("PcDesc %d: Inner.c at line %d, outside its body %v", i, at[0], c)
			}
			if d.PCOffset == pc && at[0] == marks["c-call"] {
				calls++
			}
		}
	}
	if found == 0 {
		t.Error("no PcDesc of Outer.a has Inner.c inlined into Middle.b inlined into Outer.a")
	}
	if calls == 0 {
		t.Errorf("no PcDesc of the call to Leaf.work at line %d (// @c-call)", marks["c-call"])
	}
	if lambdaCalls == 0 {
		t.Error("no PcDesc of the lambda's call of Leaf.work inlined into Outer.a")
	}
	// The lambda's hidden class is named as the VM names it.
	lambdas := 0
	for _, nm := range f.NMethods {
		for _, key := range nm.Metadata {
			m := f.Methods[key]
			if !strings.Contains(m.Class, "$$Lambda") {
				continue
			}
			lambdas++
			if name := JavaName(m.Class, m.Name, m.Signature); !hiddenLambda.MatchString(name) {
				t.Errorf("hidden class method %q named %q", key, name)
			}
		}
	}
	if lambdas == 0 {
		t.Error("no lambda among the inlined methods")
	}
	t.Logf("%d PcDescs with the whole chain inlined, %d at the call of Leaf.work, %d at the lambda's", found, calls, lambdaCalls)
}

// TestNMethodSectionsFixtures computes where each dumped nmethod keeps its
// data from its header, and compares with where the dump found it field
// by field (whose contents TestScopeFixtures checks).
func TestNMethodSectionsFixtures(t *testing.T) {
	for _, jdk := range fixtureJDKs {
		t.Run(jdk, func(t *testing.T) { checkSections(t, layoutFixture(t, jdk), readCodeFixture(t, jdk)) })
	}
}

func checkSections(t *testing.T, l *Layout, f codeFixture) {
	n, err := NMethodLayoutOf(l)
	if err != nil {
		t.Fatal(err)
	}
	if n.Immutable != (f.JDK == "jdk25") {
		t.Errorf("Immutable = %v", n.Immutable)
	}
	for _, nm := range f.NMethods {
		got, err := n.Sections(nm.Addr, nm.Header)
		if err != nil {
			t.Errorf("%s: %v", nm.Method, err)
			continue
		}
		if got != nm.Sections {
			t.Errorf("%s: Sections = %+v, dumped %+v", nm.Method, got, nm.Sections)
		}
		if got.CodeBegin != nm.CodeBegin {
			t.Errorf("%s: code begins at %#x, jcmd said %#x", nm.Method, got.CodeBegin, nm.CodeBegin)
		}
		if got.CompileID != int32(nm.CompileID) {
			t.Errorf("%s: compile id %d, jcmd said %d", nm.Method, got.CompileID, nm.CompileID)
		}
		if got.PcDescs.Len() != uint64(len(nm.PcDescs)) {
			t.Errorf("%s: %d bytes of PcDescs, dumped %d", nm.Method, got.PcDescs.Len(), len(nm.PcDescs))
		}
		if got.FrameSize <= 0 || got.FrameSize > 1000 {
			t.Errorf("%s: frame size %d words", nm.Method, got.FrameSize)
		}
		// A header that is cut short, or whose offsets
		// run backwards, is refused.
		if _, err := n.Sections(nm.Addr, nm.Header[:n.Size-1]); err == nil {
			t.Errorf("%s: a short header gave sections", nm.Method)
		}
		bad := append([]byte(nil), nm.Header...)
		for i := range bad {
			bad[i] = 0xff
		}
		if _, err := n.Sections(nm.Addr, bad); err == nil {
			t.Errorf("%s: a header of 0xff bytes gave sections", nm.Method)
		}
	}
}

// TestConstMethodFixtures finds each dumped method's line table from its
// ConstMethod header.
func TestConstMethodFixtures(t *testing.T) {
	for _, jdk := range fixtureJDKs {
		t.Run(jdk, func(t *testing.T) { checkConstMethods(t, layoutFixture(t, jdk), readCodeFixture(t, jdk)) })
	}
}

func checkConstMethods(t *testing.T, l *Layout, f codeFixture) {
	c, err := ConstMethodLayoutOf(l)
	if err != nil {
		t.Fatal(err)
	}
	if c.HasLineTable != 1 {
		t.Errorf("HasLineTable = %#x, want 1", c.HasLineTable)
	}
	withTables, without := 0, 0
	for key, m := range f.Methods {
		got, ok := c.LineTableAt(m.ConstMethod, m.ConstMethodHeader)
		if m.LineTableAddr == 0 {
			// The lambda's generated method.
			without++
			if ok {
				t.Errorf("%s: LineTableAt = %#x for a method without a line table", key, got)
			}
			continue
		}
		withTables++
		if !ok || got != m.LineTableAddr {
			t.Errorf("%s: LineTableAt = %#x, %v; dumped %#x", key, got, ok, m.LineTableAddr)
		}
		noTable := append([]byte(nil), m.ConstMethodHeader...)
		noTable[c.Flags] &^= byte(c.HasLineTable)
		if _, ok := c.LineTableAt(m.ConstMethod, noTable); ok {
			t.Errorf("%s: a line table without the flag", key)
		}
	}
	// Chain's methods and the lambda's implementation have tables, the
	// lambda's hidden class's applyAsLong has none.
	if withTables < 4 || without < 1 {
		t.Errorf("%d methods with line tables, %d without; want at least 4 and 1", withTables, without)
	}
}
