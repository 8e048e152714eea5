package python

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"unsafe"

	"github.com/stackline-dev/stackline/internal/elffile"
	"github.com/stackline-dev/stackline/interpreter"
	"github.com/stackline-dev/stackline/interpreter/namecache"
	progs "github.com/stackline-dev/stackline/support/ebpf"
)

// Runtime finds CPython 3.8-3.13 interpreters: a python3.X executable that
// holds the interpreter, or libpython3.X.so.
type Runtime struct {
	// Budget bounds the bytes all processes' caches of code objects hold
	// together; nil: DefaultGlobalCacheBytes for each interpreter file
	// found.
	Budget *namecache.Budget
	// ProcessCacheBytes bounds one process's cache
	// (DefaultProcessCacheBytes when 0).
	ProcessCacheBytes int64
}

// Name implements interpreter.Runtime.
func (Runtime) Name() string { return "cpython" }

// fileName matches the interpreter files: python3.11, libpython3.11.so.1.0,
// and the debug (python3.11d) and free-threaded (python3.13t) builds, whose
// layouts differ.
var fileName = regexp.MustCompile(`^(?:lib)?python3\.(\d+)([dt]*)(?:$|\.so)`)

// Errors of Detect.
var (
	// ErrUnsupportedVersion: a CPython whose struct layouts stackline
	// does not know.
	ErrUnsupportedVersion = errors.New("unsupported CPython version")
	// ErrNoSymbols: the file lacks _PyRuntime or _PyEval_EvalFrameDefault
	// (a stripped build without dynamic symbols).
	ErrNoSymbols = errors.New("CPython symbols not found")
)

// Symbols the unwinder needs.
const (
	symRuntime  = "_PyRuntime"
	symEval     = "_PyEval_EvalFrameDefault"
	symEvalCold = "_PyEval_EvalFrameDefault.cold"
)

// Detect implements interpreter.Runtime. A python3.X executable linked
// against libpython3.X.so defines neither symbol and is not an
// interpreter file: the library is.
func (rt Runtime) Detect(f interpreter.File) (interpreter.Loader, error) {
	m := fileName.FindStringSubmatch(filepath.Base(f.Path))
	if m == nil {
		return nil, nil
	}
	minor, err := strconv.Atoi(m[1])
	if err != nil {
		return nil, nil
	}
	if m[2] != "" {
		return nil, fmt.Errorf("cpython: %s: %w: debug and free-threaded builds (ABI flags %q)", f.Path, ErrUnsupportedVersion, m[2])
	}
	file, err := f.ELF()
	if err != nil {
		return nil, fmt.Errorf("cpython: %s: %w", f.Path, err)
	}
	l, err := newLoader(file, minor)
	if err == nil {
		l.budget, l.cacheBytes = rt.Budget, rt.ProcessCacheBytes
		if l.budget == nil {
			l.budget = namecache.NewBudget(DefaultGlobalCacheBytes)
		}
		if l.cacheBytes == 0 {
			l.cacheBytes = DefaultProcessCacheBytes
		}
	}
	if err != nil {
		if errors.Is(err, ErrNoSymbols) && minor >= 8 {
			// An executable linked against libpython: not the
			// interpreter file.
			return nil, nil
		}
		return nil, fmt.Errorf("cpython: %s: %w", f.Path, err)
	}
	return l, nil
}

// loader is one CPython interpreter file.
type loader struct {
	minor   int
	offsets Offsets
	// Virtual addresses in the file.
	runtime uint64
	eval    [2]interpreter.Range
	loads   []elf.ProgHeader
	// The processes' caches of code objects: each bounded by
	// cacheBytes, all by budget.
	budget     *namecache.Budget
	cacheBytes int64
}

// newLoader reads the symbols the unwinder needs from f, in place
// (elffile.File.Symbols: only the few symbols wanted are decoded).
func newLoader(f *elffile.File, minor int) (*loader, error) {
	ef := f.ELF
	if ef.Machine != elf.EM_X86_64 || ef.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("%w: %v %v", ErrUnsupportedVersion, ef.Machine, ef.Class)
	}
	var want = map[string]*elf.Symbol{symRuntime: nil, symEval: nil, symEvalCold: nil}
	find := func(syms []elf.Symbol) {
		for i := range syms {
			s := &syms[i]
			if p, ok := want[s.Name]; ok && p == nil && s.Section != elf.SHN_UNDEF && s.Value != 0 {
				want[s.Name] = s
			}
		}
	}
	names := []string{symRuntime, symEval, symEvalCold}
	if syms, err := f.Symbols(elf.SHT_DYNSYM, names...); err == nil {
		find(syms)
	}
	if want[symEvalCold] == nil || want[symRuntime] == nil || want[symEval] == nil {
		if syms, err := f.Symbols(elf.SHT_SYMTAB, names...); err == nil {
			find(syms)
		}
	}
	if want[symRuntime] == nil || want[symEval] == nil {
		return nil, ErrNoSymbols
	}
	off, ok := OffsetsFor(minor)
	if !ok {
		return nil, fmt.Errorf("%w: 3.%d", ErrUnsupportedVersion, minor)
	}
	l := &loader{minor: minor, offsets: off, runtime: want[symRuntime].Value}
	ev := want[symEval]
	l.eval[0] = interpreter.Range{Start: ev.Value, End: ev.Value + max(ev.Size, 1)}
	if c := want[symEvalCold]; c != nil {
		l.eval[1] = interpreter.Range{Start: c.Value, End: c.Value + max(c.Size, 1)}
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			l.loads = append(l.loads, p.ProgHeader)
		}
	}
	return l, nil
}

// Attach implements interpreter.Loader.
func (l *loader) Attach(pid uint32, m interpreter.Mapping, mem interpreter.Memory) (interpreter.Instance, error) {
	bias, ok := l.bias(m)
	if !ok {
		return nil, fmt.Errorf("cpython: pid %d: mapping at file offset %#x is outside the file's segments", pid, m.Offset)
	}
	inst := &instance{loader: l, mem: mem, codes: namecache.New[codeKey, *code](l.budget, l.cacheBytes)}
	u := &inst.unwind
	u.Kind = interpreter.KindPython
	for i, r := range l.eval {
		if r.End > r.Start {
			u.Handoff[i] = interpreter.Range{Start: r.Start + bias, End: r.End + bias}
		}
	}
	u.Data[0] = l.runtime + bias
	cfg := l.config()
	if _, err := binary.Encode(u.Config[:], binary.LittleEndian, &cfg); err != nil {
		return nil, fmt.Errorf("cpython: encode offsets: %w", err)
	}
	return inst, nil
}

// bias returns what to add to the file's virtual addresses to get the
// process's, from where the process maps the code.
func (l *loader) bias(m interpreter.Mapping) (uint64, bool) {
	for _, p := range l.loads {
		if m.Offset >= p.Off && m.Offset < p.Off+p.Filesz {
			return m.Start - (p.Vaddr + (m.Offset - p.Off)), true
		}
	}
	return 0, false
}

// struct py_offsets fits in interp_proc.config.
var _ [interpreter.ConfigBytes - unsafe.Sizeof(progs.StacklinePyOffsets{})]byte

// The eBPF unwinder's FRAME_OWNED_BY_CSTACK is CPython's (FrameOwnedByCStack,
// checked against CPython's debug info): this does not compile otherwise.
var _ = [1]struct{}{}[FrameOwnedByCStack-progs.StacklinePyConstantsPY_FRAME_OWNED_BY_CSTACK]

// config returns struct py_offsets (support/ebpf/python.h), the offsets
// the eBPF unwinder reads, with 0 for the fields the version lacks.
func (l *loader) config() progs.StacklinePyOffsets {
	o := &l.offsets
	// The frame model and the two layout switches follow from which
	// fields the version has.
	model := progs.StacklinePyFrameModelPY_FRAMES_SHIM
	switch {
	case o.FrameOwner == NoField:
		model = progs.StacklinePyFrameModelPY_FRAMES_PER_CALL
	case o.FrameIsEntry != NoField:
		model = progs.StacklinePyFrameModelPY_FRAMES_IS_ENTRY
	}
	field := func(v uint32) uint32 {
		if v == NoField {
			return 0
		}
		return v
	}
	return progs.StacklinePyOffsets{
		FrameModel:              uint32(model),
		InstrIsPointer:          b2u(o.CodeCodeAdaptive != NoField),
		FrameViaCframe:          b2u(o.CFrameCurrentFrame != NoField),
		RuntimeInterpretersMain: field(o.RuntimeInterpretersMain),
		InterpThreadsHead:       field(o.InterpThreadsHead),
		TstateNext:              field(o.TStateNext),
		TstateThreadId:          field(o.TStateThreadID),
		TstateFrame:             field(o.TStateFrame),
		CframeCurrentFrame:      field(o.CFrameCurrentFrame),
		FrameBack:               field(o.FrameBack),
		FrameCode:               field(o.FrameCode),
		FrameInstr:              field(o.FrameInstr),
		FrameIsEntry:            field(o.FrameIsEntry),
		FrameOwner:              field(o.FrameOwner),
		CodeFirstlineno:         field(o.CodeFirstLineno),
		CodeName:                field(o.CodeName),
	}
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// fingerprint is the eBPF unwinder's fingerprint of a code object (see
// python_step): its name's address and first line folded to 32 bits.
func fingerprint(name uint64, firstLineno int32) uint32 {
	return uint32(name) ^ uint32(name>>32) ^ uint32(firstLineno)*0x9e3779b1
}

// frameAddr derives a frame's address in its source file's pseudo-mapping:
// one per function and line (FNV-1a of the qualified name, first line and
// line).
func frameAddr(qualname string, firstLineno int32, line int64) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(qualname); i++ {
		h = (h ^ uint64(qualname[i])) * prime
	}
	for _, v := range [2]uint64{uint64(uint32(firstLineno)), uint64(line)} {
		for i := 0; i < 8; i++ {
			h = (h ^ (v & 0xff)) * prime
			v >>= 8
		}
	}
	return h
}

// The bits of PyASCIIObject.state read, the same in 3.8-3.13: interned
// (2 bits), kind (3), compact (1), ascii (1).
func unicodeKind(state uint32) uint32  { return state >> 2 & 7 }
func unicodeCompact(state uint32) bool { return state>>5&1 != 0 }
func unicodeASCII(state uint32) bool   { return state>>6&1 != 0 }
