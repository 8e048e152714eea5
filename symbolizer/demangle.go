package symbolizer

import (
	"fmt"
	"strings"

	"github.com/ianlancetaylor/demangle"
)

// DemangleMode says how C++ and Rust symbol names are turned into the
// names people read.
type DemangleMode int

// Demangle modes. The zero value is DemangleSimple.
const (
	// DemangleSimple demangles names without function parameters and
	// template arguments, and drops the hash of legacy Rust names:
	// "ns::Klass::method", "core::fmt::write". Go functions of generic
	// code are named as the Go runtime prints them, with their type
	// arguments as "[...]": "slices.SortFunc[...]".
	DemangleSimple DemangleMode = iota
	// DemangleNone keeps names as the binary spells them (Go's generic
	// functions with the shapes the compiler instantiated them for,
	// "slices.SortFunc[go.shape.[]int,go.shape.int]").
	DemangleNone
	// DemangleFull demangles names completely, with parameters, template
	// arguments and the hash of legacy Rust names; Go names are kept as
	// the binary spells them.
	DemangleFull
)

// ParseDemangleMode parses "none", "simple" or "full".
func ParseDemangleMode(s string) (DemangleMode, error) {
	switch s {
	case "none":
		return DemangleNone, nil
	case "simple":
		return DemangleSimple, nil
	case "full":
		return DemangleFull, nil
	}
	return 0, fmt.Errorf("symbolizer: unknown demangle mode %q (want none, simple or full)", s)
}

// String returns the name ParseDemangleMode accepts for m.
func (m DemangleMode) String() string {
	switch m {
	case DemangleNone:
		return "none"
	case DemangleSimple:
		return "simple"
	case DemangleFull:
		return "full"
	}
	return fmt.Sprintf("DemangleMode(%d)", int(m))
}

func (m DemangleMode) valid() bool {
	return m == DemangleNone || m == DemangleSimple || m == DemangleFull
}

// maxDemangledLength bounds demangled names to 2^14 bytes, so a hostile
// name cannot make the demangler build a huge string.
const maxDemangledLength = 14

// demangleName returns the readable form of a symbol name, or name itself
// when it is not a C++ or Rust mangled name or cannot be demangled.
func demangleName(name string, mode DemangleMode) string {
	if mode == DemangleNone || !(strings.HasPrefix(name, "_Z") || strings.HasPrefix(name, "_R")) {
		return name
	}
	var opts []demangle.Option
	if mode == DemangleSimple {
		opts = []demangle.Option{
			demangle.NoParams, demangle.NoTemplateParams, demangle.NoEnclosingParams,
			demangle.NoClones, demangle.MaxLength(maxDemangledLength),
		}
	} else {
		opts = []demangle.Option{demangle.MaxLength(maxDemangledLength)}
	}
	out, ok := safeDemangle(name, opts)
	if !ok || out == "" {
		return name
	}
	if mode == DemangleFull {
		// The demangler always drops the hash of legacy Rust names; in
		// full mode put it back, as rustc-demangle does.
		if hash, ok := legacyRustHash(name); ok && !strings.HasSuffix(out, "::"+hash) {
			out += "::" + hash
		}
	}
	return out
}

// safeDemangle calls the demangler, turning a panic (which it only raises
// on internal errors) into a failure, since names come from untrusted
// files.
func safeDemangle(name string, opts []demangle.Option) (out string, ok bool) {
	defer func() {
		if recover() != nil {
			out, ok = "", false
		}
	}()
	out, err := demangle.ToString(name, opts...)
	return out, err == nil
}

// legacyRustHash returns the "h0123456789abcdef" hash of a legacy Rust
// mangled name: _ZN...17h<16 hex digits>E, optionally followed by a
// suffix starting with ".".
func legacyRustHash(name string) (string, bool) {
	if !strings.HasPrefix(name, "_ZN") {
		return "", false
	}
	if i := strings.LastIndex(name, "E."); i > 0 {
		name = name[:i+1]
	}
	const tail = len("17h0123456789abcdefE")
	if len(name) < 3+tail || !strings.HasSuffix(name, "E") || name[len(name)-tail:len(name)-tail+3] != "17h" {
		return "", false
	}
	hash := name[len(name)-tail+2 : len(name)-1]
	for _, c := range hash[1:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
	}
	return hash, true
}

// goNameForPrint returns a Go function's name as the Go runtime prints it
// (in tracebacks, runtime.Frame and its own pprof profiles): the type
// arguments of a generic function, which the compiler spells as the
// shapes it instantiated the code for ("go.shape.interface { Close()
// error; ... }", hundreds of bytes), become "[...]". Everything from the
// first '[' to the last ']' goes, as the runtime's funcNameForPrint does,
// so a method of a generic type and a closure inside a generic function
// keep what follows: "pkg.(*Cache[...]).Do", "pkg.Map[...].func1".
func goNameForPrint(name string) string {
	i := strings.IndexByte(name, '[')
	if i < 0 {
		return name
	}
	j := strings.LastIndexByte(name, ']')
	if j <= i {
		return name
	}
	return name[:i] + "[...]" + name[j+1:]
}
