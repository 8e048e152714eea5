package hotspot

import (
	"strings"
)

// maxArrayDims is the most array dimensions a descriptor may have (JVMS
// 4.3.2); JavaName writes no more.
const maxArrayDims = 255

// JavaName returns the readable name of a method: the class's binary name
// with dots, the method's name and its parameter types as Java source
// spells them, without packages and without the return type:
//
//	JavaName("java/util/HashMap", "get", "(Ljava/lang/Object;)Ljava/lang/Object;")
//	  == "java.util.HashMap.get(Object)"
//
// Arrays read "int[]", "String[][]"; parameters are separated by ", ". A
// hidden class keeps the "/0x…" suffix that makes its name unique
// ("Main$$Lambda/0x0000000801001000", "Main$$Lambda+0x…" stay as they are
// after the package); nested classes keep their '$'. A malformed
// descriptor gives what could be read followed by the rest as it is; an
// empty one gives just the class and method names.
func JavaName(class, method, signature string) string {
	var b strings.Builder
	b.Grow(len(class) + len(method) + len(signature))
	writeClassName(&b, class)
	b.WriteByte('.')
	b.WriteString(method)
	if signature == "" {
		return b.String()
	}
	writeParams(&b, signature)
	return b.String()
}

// writeClassName writes an internal class name ("java/util/Map$Entry")
// with dots for the package separators. A hidden class's name ends in a
// slash and a hexadecimal address ("pkg/Main$$Lambda/0x…"): that slash is
// kept, so the address does not read as a class.
func writeClassName(b *strings.Builder, class string) {
	name, suffix := class, ""
	if i := strings.LastIndexByte(class, '/'); i >= 0 && strings.HasPrefix(class[i+1:], "0x") {
		name, suffix = class[:i], class[i:]
	}
	b.WriteString(strings.ReplaceAll(name, "/", "."))
	b.WriteString(suffix)
}

// simpleName returns a class's name without its package; a hidden class
// keeps its address suffix.
func simpleName(class string) string {
	name, suffix := class, ""
	if i := strings.LastIndexByte(class, '/'); i >= 0 && strings.HasPrefix(class[i+1:], "0x") {
		name, suffix = class[:i], class[i:]
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return name + suffix
}

var primitives = [256]string{
	'B': "byte", 'C': "char", 'D': "double", 'F': "float",
	'I': "int", 'J': "long", 'S': "short", 'Z': "boolean", 'V': "void",
}

// writeParams writes "(T1, T2)" for the parameters of the method
// descriptor sig.
func writeParams(b *strings.Builder, sig string) {
	if sig[0] != '(' {
		b.WriteByte('(')
		b.WriteString(sig)
		b.WriteByte(')')
		return
	}
	b.WriteByte('(')
	i := 1
	for n := 0; i < len(sig) && sig[i] != ')'; n++ {
		if n > 0 {
			b.WriteString(", ")
		}
		next, ok := writeType(b, sig, i)
		if !ok {
			// Malformed: the rest as it is, without a closing paren
			// of the descriptor's own.
			rest := sig[i:]
			if j := strings.IndexByte(rest, ')'); j >= 0 {
				rest = rest[:j]
			}
			b.WriteString(rest)
			b.WriteByte(')')
			return
		}
		i = next
	}
	b.WriteByte(')')
}

// writeType writes the field type at sig[i:] and returns the index after
// it; false when there is no well-formed type there (nothing is written).
func writeType(b *strings.Builder, sig string, i int) (int, bool) {
	dims := 0
	for i < len(sig) && sig[i] == '[' {
		dims++
		i++
	}
	if i >= len(sig) || dims > maxArrayDims {
		return 0, false
	}
	var name string
	switch c := sig[i]; {
	case c == 'L':
		end := strings.IndexByte(sig[i:], ';')
		if end < 2 {
			return 0, false
		}
		name = simpleName(sig[i+1 : i+end])
		i += end + 1
	case primitives[c] != "" && c != 'V':
		name = primitives[c]
		i++
	default:
		return 0, false
	}
	b.WriteString(name)
	for range dims {
		b.WriteString("[]")
	}
	return i, true
}
