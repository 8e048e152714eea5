package hotspot

import (
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stackline-dev/stackline/internal/testenv"
	"github.com/stackline-dev/stackline/interpreter"
)

// vmReader reads a VM's objects with the offsets its Layout states, for
// dumping fixtures. Every read failure fails the test.
type vmReader struct {
	t   *testing.T
	mem interpreter.Memory
	l   *Layout
}

func (r *vmReader) bytes(addr uint64, n int) []byte {
	r.t.Helper()
	b := make([]byte, n)
	if err := r.mem.ReadAt(b, addr); err != nil {
		r.t.Fatalf("reading %d bytes at %#x: %v", n, addr, err)
	}
	return b
}

func (r *vmReader) u64(addr uint64) uint64 { return binary.LittleEndian.Uint64(r.bytes(addr, 8)) }
func (r *vmReader) u32(addr uint64) uint32 { return binary.LittleEndian.Uint32(r.bytes(addr, 4)) }
func (r *vmReader) u16(addr uint64) uint16 { return binary.LittleEndian.Uint16(r.bytes(addr, 2)) }

// field returns the offset of typ::name, looking up superclasses.
func (r *vmReader) field(typ, name string) uint64 {
	r.t.Helper()
	off, ok := r.l.FieldOrSuper(typ, name)
	if !ok {
		r.t.Fatalf("the VM states no %s::%s", typ, name)
	}
	return off
}

func (r *vmReader) size(typ string) uint64 {
	r.t.Helper()
	s, ok := r.l.Size(typ)
	if !ok {
		r.t.Fatalf("the VM states no size of %s", typ)
	}
	return s
}

// symbol reads a Symbol's text.
func (r *vmReader) symbol(addr uint64) string {
	n := r.u16(addr + r.field("Symbol", "_length"))
	return string(r.bytes(addr+r.field("Symbol", "_body"), int(n)))
}

// method reads a Method's class, name and signature and its line table.
func (r *vmReader) method(addr uint64) methodFixture {
	cm := r.u64(addr + r.field("Method", "_constMethod"))
	cp := r.u64(cm + r.field("ConstMethod", "_constants"))
	holder := r.u64(cp + r.field("ConstantPool", "_pool_holder"))
	entry := func(i uint16) string {
		return r.symbol(r.u64(cp + r.size("ConstantPool") + 8*uint64(i)))
	}
	m := methodFixture{
		Class:     r.symbol(r.u64(holder + r.field("Klass", "_name"))),
		Name:      entry(r.u16(cm + r.field("ConstMethod", "_name_index"))),
		Signature: entry(r.u16(cm + r.field("ConstMethod", "_signature_index"))),
	}
	codeSize := r.u16(cm + r.field("ConstMethod", "_code_size"))
	m.ConstMethod, m.ConstMethodHeader = cm, r.bytes(cm, int(r.size("ConstMethod")))
	// Generated methods (a lambda's hidden class) have no line table.
	flags, ok := r.l.Field("ConstMethod", "_flags._flags")
	if !ok {
		flags = r.field("ConstMethod", "_flags")
	}
	bit, ok := r.l.Int("ConstMethodFlags::_misc_has_linenumber_table")
	if !ok {
		bit, ok = r.l.Int("ConstMethod::_has_linenumber_table")
	}
	if !ok {
		r.t.Fatal("the VM states no line number table flag")
	}
	if r.u16(cm+flags)&uint16(bit) == 0 {
		return m
	}
	table := cm + r.size("ConstMethod") + uint64(codeSize)
	m.LineTableAddr = table
	enc := EncodingFor(r.l.Version())
	for n := 64; ; n *= 2 {
		if n > 1<<16 {
			r.t.Fatalf("%s: no line table end in %d bytes", m.key(), n)
		}
		b := r.bytes(table, n)
		if _, used, err := DecodeLineTable(b, enc); err == nil {
			m.LineTable = b[:used]
			return m
		}
	}
}

// nmethodData returns an nmethod's method, PcDesc table, scope data and
// metadata array, wherever its JDK keeps them.
func (r *vmReader) nmethodData(nm uint64) (method uint64, pcs, scopes []byte, metadata []uint64, sec NMethodSections) {
	r.t.Helper()
	method = r.u64(nm + r.field("nmethod", "_method"))
	i32 := func(name string) uint64 { return uint64(int32(r.u32(nm + r.field("nmethod", name)))) }
	var pcsBegin, pcsEnd, scopesBegin, scopesEnd, metaBegin, metaEnd uint64
	if imm, ok := r.l.Field("nmethod", "_immutable_data"); ok {
		// JDK 25: PcDescs and scopes in the immutable data, metadata
		// after the relocations in the mutable data.
		base := r.u64(nm + imm)
		pcsBegin, pcsEnd = base+i32("_scopes_pcs_offset"), base+i32("_scopes_data_offset")
		scopesBegin, scopesEnd = pcsEnd, base+i32("_immutable_data_size")
		mut := r.u64(nm + r.field("nmethod", "_mutable_data"))
		reloc := uint64(r.u32(nm + r.field("nmethod", "_relocation_size")))
		metaBegin, metaEnd = mut+reloc, mut+uint64(r.u32(nm+r.field("nmethod", "_mutable_data_size")))
	} else {
		// JDK 17, 21: everything in the nmethod, scopes data at a
		// pointer, then PcDescs up to the dependencies.
		scopesBegin = r.u64(nm + r.field("nmethod", "_scopes_data_begin"))
		pcsBegin, pcsEnd = nm+i32("_scopes_pcs_offset"), nm+i32("_dependencies_offset")
		scopesEnd = pcsBegin
		metaBegin, metaEnd = nm+i32("_metadata_offset"), scopesBegin
	}
	if pcsEnd < pcsBegin || pcsEnd-pcsBegin > 1<<20 || scopesEnd < scopesBegin || scopesEnd-scopesBegin > 1<<20 || metaEnd < metaBegin || metaEnd-metaBegin > 1<<16 {
		r.t.Fatalf("nmethod %#x: PcDescs %#x-%#x, scopes %#x-%#x, metadata %#x-%#x", nm, pcsBegin, pcsEnd, scopesBegin, scopesEnd, metaBegin, metaEnd)
	}
	sec = NMethodSections{
		Method:    method,
		CompileID: int32(r.u32(nm + r.field("nmethod", "_compile_id"))),
		FrameSize: int32(r.u32(nm + r.field("nmethod", "_frame_size"))),
		PcDescs:   Span{pcsBegin, pcsEnd},
		Scopes:    Span{scopesBegin, scopesEnd},
		Metadata:  Span{metaBegin, metaEnd},
	}
	if off, ok := r.l.FieldOrSuper("nmethod", "_code_begin"); ok {
		sec.CodeBegin = r.u64(nm + off)
	} else {
		sec.CodeBegin = nm + uint64(int32(r.u32(nm+r.field("nmethod", "_code_offset"))))
	}
	pcs = r.bytes(pcsBegin, int(pcsEnd-pcsBegin))
	scopes = r.bytes(scopesBegin, int(scopesEnd-scopesBegin))
	for a := metaBegin; a+8 <= metaEnd; a += 8 {
		metadata = append(metadata, r.u64(a))
	}
	return method, pcs, scopes, metadata, sec
}

// codelistLine is a line of jcmd's Compiler.codelist: compile id, level,
// state, method, [nmethod, code begin - code end].
var codelistLine = regexp.MustCompile(`^(\d+) (\d) (\d+) (\S+) \[(0x[0-9a-f]+), (0x[0-9a-f]+) - `)

// codelist returns the C2 (level 4) compilations of the chain's methods
// as jcmd's Compiler.codelist lists them, once Outer.a is among them
// (waiting up to a minute for C2 on a busy machine).
func codelist(t *testing.T, pid int) [][]string {
	t.Helper()
	_, jcmd := testenv.JavaTools(t)
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := exec.Command(jcmd, strconv.Itoa(pid), "Compiler.codelist").CombinedOutput()
		if err != nil {
			t.Fatalf("jcmd Compiler.codelist: %v\n%s", err, out)
		}
		var got [][]string
		outer := false
		for _, line := range strings.Split(string(out), "\n") {
			m := codelistLine.FindStringSubmatch(line)
			if m == nil || m[2] != "4" || !strings.HasPrefix(m[4], "Outer.") && !strings.HasPrefix(m[4], "Middle.") && !strings.HasPrefix(m[4], "Inner.") {
				continue
			}
			got = append(got, m)
			outer = outer || strings.HasPrefix(m[4], "Outer.a")
		}
		if outer {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("no C2 compilation of Outer.a after a minute:\n%s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// collectCode reads the JVM's C2 compilations of the chain, field by
// field with the offsets l states, into a codeFixture.
func collectCode(t *testing.T, j *chainJVM, l *Layout) codeFixture {
	t.Helper()
	r := &vmReader{t: t, mem: interpreter.ProcessMemory(j.pid), l: l}
	enc := EncodingFor(l.Version())
	f := codeFixture{JDK: j.jdk.Name, Version: l.Version(), Encoding: enc.String(), Methods: map[string]methodFixture{}}
	for _, m := range codelist(t, j.pid) {
		nm, _ := strconv.ParseUint(m[5], 0, 64)
		id, _ := strconv.Atoi(m[1])
		codeBegin, _ := strconv.ParseUint(m[6], 0, 64)
		method, pcs, scopes, metadata, sec := r.nmethodData(nm)
		own := r.method(method)
		f.Methods[own.key()] = own
		nf := nmethodFixture{
			Method: own.key(), CompileID: id, PcDescs: pcs, Scopes: scopes, Metadata: make([]string, len(metadata)),
			Addr: nm, Header: r.bytes(nm, int(r.size("nmethod"))), Sections: sec, CodeBegin: codeBegin,
		}
		// Name the metadata the scopes use: those are Methods.
		for i := 0; i+16 <= len(pcs); i += 16 {
			ss, err := DecodeScopes(scopes, int(int32(binary.LittleEndian.Uint32(pcs[i+4:]))), enc)
			if err != nil {
				t.Fatalf("%s: PcDesc %d: %v", own.key(), i/16, err)
			}
			for _, s := range ss {
				if s.MethodIndex > len(metadata) {
					t.Fatalf("%s: metadata index %d of %d", own.key(), s.MethodIndex, len(metadata))
				}
				if nf.Metadata[s.MethodIndex-1] == "" {
					mf := r.method(metadata[s.MethodIndex-1])
					f.Methods[mf.key()] = mf
					nf.Metadata[s.MethodIndex-1] = mf.key()
				}
			}
		}
		f.NMethods = append(f.NMethods, nf)
		t.Logf("%s: nmethod %#x (compile %d): %d PcDescs, %d bytes of scopes, %d metadata", own.key(), nm, id, len(pcs)/16, len(scopes), len(metadata))
	}
	return f
}

// dumpCode writes testdata/code-<jdk>.json.gz from the JVM's C2
// compilations of the chain.
func dumpCode(t *testing.T, j *chainJVM, l *Layout) {
	f := collectCode(t, j, l)
	if err := writeGzipJSON(filepath.Join("testdata", "code-"+j.jdk.Name+".json.gz"), &f); err != nil {
		t.Fatal(err)
	}
}
