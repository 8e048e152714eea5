package v8

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/stackline-dev/stackline/internal/elffile"
)

// Prefix of V8's postmortem constants: every v8dbg_NAME symbol is an int
// holding one constant (a field offset, an instance type, a frame type
// marker, a tag or mask).
const constPrefix = "v8dbg_"

// Symbols of V8's version, ints in the file's initialised data.
const (
	symVersionMajor = "_ZN2v88internal7Version6major_E"
	symVersionMinor = "_ZN2v88internal7Version6minor_E"
	symVersionBuild = "_ZN2v88internal7Version6build_E"
	symVersionPatch = "_ZN2v88internal7Version6patch_E"
	// symIsolateGroup is IsolateGroup::default_isolate_group_, a pointer
	// to the process's isolate group, which holds the JSDispatchTable of
	// V8 builds with leaptiering (node 24).
	symIsolateGroup = "_ZN2v88internal12IsolateGroup22default_isolate_group_E"
	// symBytecodeSizes is Bytecodes::kBytecodeSizes, the size of each
	// bytecode with its operands, at operand scales 1, 2 and 4.
	symBytecodeSizes = "_ZN2v88internal11interpreter9Bytecodes14kBytecodeSizesE"
	// builtinPrefix names the embedded builtins' code in .symtab.
	builtinPrefix = "Builtins_"
)

// Bounds on what reading constants accepts.
const (
	// maxConstants bounds the v8dbg_* symbols read from one file (node
	// has about 530).
	maxConstants = 4096
	// maxConstantsText bounds a constants dump parsed by ParseConstants.
	maxConstantsText = 1 << 20
)

// ErrNotV8 says a file holds no V8: none of its symbols is a v8dbg_*
// constant.
var ErrNotV8 = errors.New("no V8 postmortem constants (v8dbg_*)")

// Version is a V8 version, major.minor.build.patch.
type Version struct {
	Major, Minor, Build, Patch int
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d.%d", v.Major, v.Minor, v.Build, v.Patch)
}

// AtLeast reports whether v is major.minor or later.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

// Constants are one V8 build's postmortem constants, by name without the
// v8dbg_ prefix, with the version and the addresses (virtual addresses
// in the file) of the few symbols the host reads at run time.
type Constants struct {
	Version Version
	Values  map[string]int64
	// IsolateGroup is the address of IsolateGroup::default_isolate_group_,
	// 0 when the file has none (V8 before leaptiering).
	IsolateGroup uint64
	// BytecodeSizes is Bytecodes::kBytecodeSizes: three rows (operand
	// scale 1, 2, 4) of one size a bytecode; nil when the file lacks it.
	BytecodeSizes []byte
	// Builtins is the range of the embedded builtins' code (the
	// Builtins_* symbols of .symtab), empty when the file has no .symtab.
	Builtins [2]uint64
}

// maxBytecodeSizes bounds the bytecode size table (3 x about 200).
const maxBytecodeSizes = 3 * 1024

// The symbols ReadConstants reads: functions whose names start with one
// of funcPrefixes (the builtins), and data symbols (of any other type)
// whose names start with one of dataPrefixes (the constants, version,
// isolate group, bytecode sizes: variables, in every V8). Looking for
// the C++ names among the data symbols only spares the comparison of
// each of a large program's functions (node's 150,000) with them, which
// was most of the cost of Detect.
var (
	funcPrefixes = []string{builtinPrefix}
	dataPrefixes = []string{
		constPrefix,
		symVersionMajor, symVersionMinor, symVersionBuild, symVersionPatch,
		symIsolateGroup, symBytecodeSizes,
	}
)

// ReadConstants reads the v8dbg_* constants and the version of the V8 in
// ef, from the dynamic symbol table and from .symtab (node 24.11 and
// later keep them in .symtab only). The values are read from the file's
// initialised data; a constant in .bss is 0. Constants, version, isolate
// group and bytecode sizes are read from data symbols (any type but
// STT_FUNC), the range of the builtins from functions.
func ReadConstants(ef *elf.File) (*Constants, error) {
	return readConstants(ef, func(typ elf.SectionType) ([]elf.Symbol, error) {
		return elffile.SymbolsByKind(ef, typ, funcPrefixes, dataPrefixes)
	})
}

// symbolReader returns the symbols of a file's table of type typ that
// readConstants reads (funcPrefixes, dataPrefixes).
type symbolReader func(typ elf.SectionType) ([]elf.Symbol, error)

// readConstants is ReadConstants with the symbols read by symbols.
func readConstants(ef *elf.File, symbols symbolReader) (*Constants, error) {
	c := &Constants{Values: map[string]int64{}}
	version := map[string]*int{
		symVersionMajor: &c.Version.Major, symVersionMinor: &c.Version.Minor,
		symVersionBuild: &c.Version.Build, symVersionPatch: &c.Version.Patch,
	}
	found := map[string]bool{}
	var errs []error
	read := func(syms []elf.Symbol) {
		for i := range syms {
			s := &syms[i]
			if s.Section == elf.SHN_UNDEF || s.Value == 0 {
				continue
			}
			name, isConst := strings.CutPrefix(s.Name, constPrefix)
			_, isVersion := version[s.Name]
			if s.Name == symIsolateGroup {
				c.IsolateGroup = s.Value
				continue
			}
			if s.Name == symBytecodeSizes && c.BytecodeSizes == nil {
				b, err := readBytes(ef, s)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
				}
				c.BytecodeSizes = b
				continue
			}
			if strings.HasPrefix(s.Name, builtinPrefix) && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
				if c.Builtins[0] == 0 || s.Value < c.Builtins[0] {
					c.Builtins[0] = s.Value
				}
				c.Builtins[1] = max(c.Builtins[1], s.Value+s.Size)
				continue
			}
			if !isConst && !isVersion || found[s.Name] {
				continue
			}
			if len(c.Values) >= maxConstants {
				errs = append(errs, fmt.Errorf("more than %d v8dbg_* symbols", maxConstants))
				return
			}
			v, err := readInt(ef, s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
				continue
			}
			found[s.Name] = true
			if isVersion {
				*version[s.Name] = int(v)
			} else {
				c.Values[name] = v
			}
		}
	}
	// Only the symbols read above are decoded: node's tables hold
	// hundreds of thousands (debug/elf's File.Symbols allocates tens of
	// megabytes for them). .symtab, when the file has one, holds every
	// symbol .dynsym does: .dynsym is read only when .symtab lacks the
	// constants or the version (a stripped file has no .symtab at all).
	if syms, err := symbols(elf.SHT_SYMTAB); err == nil {
		read(syms)
	}
	if len(c.Values) == 0 || len(found) < len(c.Values)+len(version) {
		if syms, err := symbols(elf.SHT_DYNSYM); err == nil {
			read(syms)
		}
	}
	if len(c.Values) == 0 {
		return nil, ErrNotV8
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var missing []string
	for name := range version {
		if !found[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("V8 version symbols missing: %s", strings.Join(missing, ", "))
	}
	return c, nil
}

// readInt reads the int (4 bytes; 8 for an 8-byte symbol) at the symbol's
// address from the section holding it.
func readInt(ef *elf.File, s *elf.Symbol) (int64, error) {
	size := s.Size
	if size != 8 {
		size = 4
	}
	for _, sec := range ef.Sections {
		if sec.Flags&elf.SHF_ALLOC == 0 || s.Value < sec.Addr || s.Value+size > sec.Addr+sec.Size {
			continue
		}
		if sec.Type == elf.SHT_NOBITS {
			return 0, nil
		}
		var b [8]byte
		if _, err := sec.ReadAt(b[:size], int64(s.Value-sec.Addr)); err != nil {
			return 0, fmt.Errorf("reading %#x in %s: %w", s.Value, sec.Name, err)
		}
		if size == 8 {
			return int64(binary.LittleEndian.Uint64(b[:])), nil
		}
		return int64(int32(binary.LittleEndian.Uint32(b[:]))), nil
	}
	return 0, fmt.Errorf("address %#x is in no section", s.Value)
}

// readBytes reads a symbol's bytes (the bytecode size table).
func readBytes(ef *elf.File, s *elf.Symbol) ([]byte, error) {
	if s.Size == 0 || s.Size > maxBytecodeSizes || s.Size%3 != 0 {
		return nil, fmt.Errorf("table of %d bytes", s.Size)
	}
	for _, sec := range ef.Sections {
		if sec.Flags&elf.SHF_ALLOC == 0 || sec.Type == elf.SHT_NOBITS || s.Value < sec.Addr || s.Value+s.Size > sec.Addr+sec.Size {
			continue
		}
		b := make([]byte, s.Size)
		if _, err := sec.ReadAt(b, int64(s.Value-sec.Addr)); err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("address %#x is in no section with data", s.Value)
}

// Dump writes c as text, one "name value" a line, sorted, the version
// and isolate group first: the form ParseConstants reads (testdata holds
// one dump per node major).
func (c *Constants) Dump(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "version %s\n", c.Version)
	fmt.Fprintf(bw, "isolate_group %#x\n", c.IsolateGroup)
	fmt.Fprintf(bw, "builtins %#x-%#x\n", c.Builtins[0], c.Builtins[1])
	fmt.Fprintf(bw, "bytecode_sizes %x\n", c.BytecodeSizes)
	names := make([]string, 0, len(c.Values))
	for n := range c.Values {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(bw, "%s %d\n", n, c.Values[n])
	}
	return bw.Flush()
}

// ParseConstants reads a dump written by Dump.
func ParseConstants(text []byte) (*Constants, error) {
	if len(text) > maxConstantsText {
		return nil, fmt.Errorf("constants dump of %d bytes, over %d", len(text), maxConstantsText)
	}
	c := &Constants{Values: map[string]int64{}}
	sawVersion := false
	for i, line := range bytes.Split(text, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"name value\", have %q", i+1, line)
		}
		switch f[0] {
		case "version":
			v, err := parseVersion(f[1])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			c.Version, sawVersion = v, true
		case "builtins":
			lo, hi, ok := strings.Cut(f[1], "-")
			a, err1 := strconv.ParseUint(lo, 0, 64)
			b, err2 := strconv.ParseUint(hi, 0, 64)
			if !ok || err1 != nil || err2 != nil || b < a {
				return nil, fmt.Errorf("line %d: bad builtins range %q", i+1, f[1])
			}
			c.Builtins = [2]uint64{a, b}
		case "bytecode_sizes":
			b, err := hex.DecodeString(f[1])
			if err != nil || len(b) > maxBytecodeSizes || len(b)%3 != 0 {
				return nil, fmt.Errorf("line %d: bad bytecode sizes", i+1)
			}
			c.BytecodeSizes = b
		case "isolate_group":
			v, err := strconv.ParseUint(f[1], 0, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			c.IsolateGroup = v
		default:
			v, err := strconv.ParseInt(f[1], 0, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			if len(c.Values) >= maxConstants {
				return nil, fmt.Errorf("more than %d constants", maxConstants)
			}
			c.Values[f[0]] = v
		}
	}
	if !sawVersion {
		return nil, errors.New("constants dump without a version line")
	}
	return c, nil
}

func parseVersion(s string) (Version, error) {
	var v Version
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return v, fmt.Errorf("version %q: want major.minor.build.patch", s)
	}
	dst := []*int{&v.Major, &v.Minor, &v.Build, &v.Patch}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 1<<16 {
			return v, fmt.Errorf("version %q: bad part %q", s, p)
		}
		*dst[i] = n
	}
	return v, nil
}
