package kallsyms

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"
)

// procModule is one line of /proc/modules.
type procModule struct {
	name string
	size uint64
	base uint64 // 0 when hidden
}

// parseProcModules reads a module list in the format of /proc/modules:
//
//	nf_tables 372736 4 nft_chain_nat, Live 0xffffffffc0a00000 (E)
//
// The fields are the name, the size in bytes, the reference count, the
// modules that use it, the state, the load address of the module's text and
// optional taint flags. Malformed lines, and repeated names, are skipped
// and counted. The result is sorted by name.
func parseProcModules(r io.Reader) ([]procModule, int, error) {
	var mods []procModule
	skipped := 0
	seen := make(map[string]bool)
	overlong, err := forEachLine(r, func(line []byte) {
		m, ok := parseProcModule(line)
		if !ok {
			if len(bytes.TrimSpace(line)) > 0 {
				skipped++
			}
			return
		}
		if seen[m.name] {
			skipped++
			return
		}
		seen[m.name] = true
		mods = append(mods, m)
	})
	skipped += overlong
	if err != nil {
		return nil, skipped, fmt.Errorf("read modules: %w", err)
	}
	slices.SortFunc(mods, func(a, b procModule) int { return strings.Compare(a.name, b.name) })
	return mods, skipped, nil
}

func parseProcModule(line []byte) (procModule, bool) {
	var f [7][]byte
	n, ok := fields(line, f[:])
	if !ok || n < 6 {
		return procModule{}, false
	}
	name := string(f[0])
	if !validModuleName(name) {
		return procModule{}, false
	}
	size, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return procModule{}, false
	}
	base, ok := parseAddress(f[5])
	if !ok || base+size < base {
		return procModule{}, false
	}
	if n == 7 && (f[6][0] != '(' || f[6][len(f[6])-1] != ')') {
		return procModule{}, false
	}
	return procModule{name: name, size: size, base: base}, true
}

// parseAddress parses "0x" followed by 1 to 16 hex digits.
func parseAddress(b []byte) (uint64, bool) {
	if len(b) < 3 || b[0] != '0' || (b[1] != 'x' && b[1] != 'X') {
		return 0, false
	}
	return parseHex(b[2:])
}

// validModuleName reports whether name can be a module's name, and so a
// directory under /sys/module. Module names are at most 55 bytes of
// letters, digits, '_' and '-'.
func validModuleName(name string) bool {
	if name == "" || len(name) > 55 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// isPseudoModule reports whether a kallsyms module name stands for kernel
// code that is not a module: BPF programs and trampolines ([bpf]) and the
// kernel's own generated code ([__builtin__ftrace], [__builtin__kprobes]).
// Each of their symbols is a code unit of its own.
func isPseudoModule(name string) bool {
	return name == "bpf" || strings.HasPrefix(name, "__builtin__")
}

// modInfo describes one code unit of the module part: a loaded module, or
// one symbol of a pseudo-module.
type modInfo struct {
	name    string
	buildID string
	key     string
	base    uint64
	// end is the end of the module's range as /proc/modules gives it, 0
	// when unknown.
	end    uint64
	pseudo bool
}

// modPart holds the symbols of modules and pseudo-modules as kallsyms
// lists them; syms.mods indexes infos.
type modPart struct {
	syms  *symtab
	infos []modInfo
	// procMods is the /proc/modules list the part was built with.
	procMods []procModule
	modules  int // infos that are modules rather than pseudo-module symbols
}

func (p *modPart) lookup(addr uint64) (Symbol, bool) {
	if p == nil {
		return Symbol{}, false
	}
	i, off, ok := p.syms.find(addr)
	if !ok {
		return Symbol{}, false
	}
	info := &p.infos[p.syms.mods[i]]
	// A symbol inside the module's core range does not extend past it.
	if start := p.syms.addr(i); info.end != 0 && start >= info.base && start < info.end && addr >= info.end {
		return Symbol{}, false
	}
	return Symbol{
		Name:          p.syms.name(i),
		Offset:        off,
		Module:        info.name,
		ModuleBuildID: info.buildID,
		ModuleKey:     info.key,
		ModuleBase:    info.base,
	}, true
}

func (p *modPart) bytes() int {
	if p == nil {
		return 0
	}
	n := int(unsafe.Sizeof(*p)) + p.syms.bytes() + cap(p.infos)*int(unsafe.Sizeof(modInfo{})) +
		cap(p.procMods)*int(unsafe.Sizeof(procModule{}))
	for _, m := range p.infos {
		n += len(m.key) // names and build IDs are mostly shared
	}
	return n
}

// loadKey identifies one load of a module.
type loadKey struct {
	name string
	base uint64
}

// modSource is what building a module part may read from: the sys root,
// and the build IDs of the module loads that an earlier part already knew.
type modSource struct {
	sysRoot  string // "" for tables made by Parse
	buildIDs map[loadKey]string
}

// buildModPart turns the module symbols that b collected into a modPart,
// with the module ranges of procMods (nil when unknown).
func (src *modSource) buildModPart(b *builder, procMods []procModule) *modPart {
	syms := b.modules.finish(true)
	p := &modPart{syms: syms, procMods: procMods}
	byName := make(map[string]int, len(procMods)) // infos index of each module
	addModule := func(name string, base, size uint64) int {
		info := modInfo{name: name, base: base}
		if size != 0 {
			info.end = base + size
		}
		info.buildID = src.buildID(name, base)
		if info.buildID != "" {
			info.key = name + "/" + info.buildID
		} else {
			info.key = name + "@" + strconv.FormatUint(base, 16)
		}
		p.infos = append(p.infos, info)
		p.modules++
		byName[name] = len(p.infos) - 1
		return len(p.infos) - 1
	}
	for _, m := range procMods {
		base := m.base
		if base == 0 {
			base = src.sectionBase(m.name)
		}
		if base == 0 {
			// Hidden; the module's lowest symbol stands in below.
			continue
		}
		addModule(m.name, base, m.size)
	}
	listed := make(map[string]procModule, len(procMods))
	for _, m := range procMods {
		listed[m.name] = m
	}
	for i := range syms.len() {
		name := b.modNames[syms.mods[i]]
		lm, isListed := listed[name]
		if isPseudoModule(name) && !isListed {
			sym := syms.name(i)
			p.infos = append(p.infos, modInfo{name: name, key: name + ":" + sym, base: syms.addr(i), pseudo: true})
			syms.mods[i] = uint32(len(p.infos) - 1)
			continue
		}
		idx, ok := byName[name]
		if !ok {
			// A module that /proc/modules does not list, or whose address
			// it hides: its lowest symbol, which comes first, is its base.
			idx = addModule(name, syms.addr(i), lm.size)
		}
		syms.mods[i] = uint32(idx)
	}
	return p
}

// buildID returns the build ID of a module load, from the earlier part or
// from SysRoot/module/NAME/notes/.note.gnu.build-id.
func (src *modSource) buildID(name string, base uint64) string {
	if id, ok := src.buildIDs[loadKey{name, base}]; ok {
		return id
	}
	if src.sysRoot == "" || !validModuleName(name) {
		return ""
	}
	notes, err := os.ReadFile(filepath.Join(src.sysRoot, "module", name, "notes", ".note.gnu.build-id"))
	if err != nil {
		return ""
	}
	return BuildIDFromNotes(notes)
}

// sectionBase returns the address of a module's .text section from
// SysRoot/module/NAME/sections/.text, or 0.
func (src *modSource) sectionBase(name string) uint64 {
	if src.sysRoot == "" || !validModuleName(name) {
		return 0
	}
	data, err := os.ReadFile(filepath.Join(src.sysRoot, "module", name, "sections", ".text"))
	if err != nil {
		return 0
	}
	base, _ := parseAddress(bytes.TrimSpace(data))
	return base
}

// readProcModules reads ProcRoot/modules. A kernel without module support
// has no such file; that is no error and yields no modules.
func readProcModules(procRoot string) ([]procModule, int, error) {
	f, err := os.Open(filepath.Join(procRoot, "modules"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("kallsyms: %w", err)
	}
	defer f.Close()
	mods, skipped, err := parseProcModules(f)
	if err != nil {
		return nil, skipped, fmt.Errorf("kallsyms: %s: %w", f.Name(), err)
	}
	return mods, skipped, nil
}

// sameModules reports whether two sorted module lists are equal.
func sameModules(a, b []procModule) bool {
	return slices.EqualFunc(a, b, func(x, y procModule) bool { return x == y })
}

// compareModules orders modules by base address.
func compareModules(a, b Module) int { return cmp.Compare(a.Base, b.Base) }
