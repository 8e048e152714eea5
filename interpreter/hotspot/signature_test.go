package hotspot

import (
	"strings"
	"testing"
)

func TestJavaName(t *testing.T) {
	for _, tc := range []struct {
		class, method, sig, want string
	}{
		{"java/util/HashMap", "get", "(Ljava/lang/Object;)Ljava/lang/Object;", "java.util.HashMap.get(Object)"},
		{"Inner", "c", "(I)J", "Inner.c(int)"},
		{"java/lang/String", "<init>", "([CII)V", "java.lang.String.<init>(char[], int, int)"},
		{"Main", "main", "([Ljava/lang/String;)V", "Main.main(String[])"},
		{"a/B", "m", "([[Ljava/lang/String;[[[I)V", "a.B.m(String[][], int[][][])"},
		{"a/B", "m", "(BCDFIJSZ)V", "a.B.m(byte, char, double, float, int, long, short, boolean)"},
		{"a/B", "m", "()V", "a.B.m()"},
		{"java/util/Map$Entry", "getKey", "()Ljava/lang/Object;", "java.util.Map$Entry.getKey()"},
		{"a/B", "m", "(Ljava/util/Map$Entry;)V", "a.B.m(Map$Entry)"},
		// Hidden classes: the VM's name has '+' before the address,
		// the external one '/'.
		{"Chain$$Lambda$14+0x0000000800c03000", "run", "()V", "Chain$$Lambda$14+0x0000000800c03000.run()"},
		{"com/x/Main$$Lambda/0x000001b00100a000", "apply", "(Ljava/lang/Object;)Ljava/lang/Object;", "com.x.Main$$Lambda/0x000001b00100a000.apply(Object)"},
		{"com/x/Main$$Lambda+0x000001b00100a000", "apply", "()V", "com.x.Main$$Lambda+0x000001b00100a000.apply()"},
		{"a/B", "m", "(Lcom/x/Main$$Lambda/0x0000000800c03000;)V", "a.B.m(Main$$Lambda/0x0000000800c03000)"},
		// Malformed descriptors: what could be read, then the rest.
		{"a/B", "m", "", "a.B.m"},
		{"a/B", "m", "I", "a.B.m(I)"},
		{"a/B", "m", "(", "a.B.m()"},
		{"a/B", "m", "(I", "a.B.m(int)"},
		{"a/B", "m", "(ILjava/lang/Obj", "a.B.m(int, Ljava/lang/Obj)"},
		{"a/B", "m", "(IQ)V", "a.B.m(int, Q)"},
		{"a/B", "m", "(L;)V", "a.B.m(L;)"},
		{"a/B", "m", "([)V", "a.B.m([)"},
		{"a/B", "m", "(V)V", "a.B.m(V)"},
		{"", "", "()V", ".()"},
	} {
		if got := JavaName(tc.class, tc.method, tc.sig); got != tc.want {
			t.Errorf("JavaName(%q, %q, %q) = %q, want %q", tc.class, tc.method, tc.sig, got, tc.want)
		}
	}
}

func TestJavaNameArrayBound(t *testing.T) {
	sig := "(" + strings.Repeat("[", 300) + "I)V"
	got := JavaName("a/B", "m", sig)
	if strings.Contains(got, "[][]") {
		t.Errorf("%d array dimensions written for a descriptor over the limit", strings.Count(got, "[]"))
	}
	ok := JavaName("a/B", "m", "("+strings.Repeat("[", 255)+"I)V")
	if strings.Count(ok, "[]") != 255 {
		t.Errorf("255 dimensions: %d written", strings.Count(ok, "[]"))
	}
}
