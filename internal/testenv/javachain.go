package testenv

// JavaChain is the Java workload of the Java tests (tracer, e2e), the
// source of class Chain: its thread "workload" runs Outer.a, which calls
// Middle.b, which calls Inner.c, whose loop is hot; with tiered C2, c is
// inlined into b. The lines the tests check are marked in comments.
const JavaChain = `public class Chain {
    static volatile long sink;

    public static void main(String[] args) throws Exception {
        Thread w = new Thread(() -> {
            for (int i = 0; ; i++) {
                sink += Outer.a(i);
            }
        }, "workload");
        w.setDaemon(true);
        w.start();
        w.join();
    }
}

class Outer {
    static long a(int n) {
        long s = 0;
        for (int i = 0; i < 50; i++) {
            s += Middle.b(n + i); // line 20
        }
        return s;
    }
}

class Middle {
    static long b(int n) {
        long r = Inner.c(n); // line 28
        return r ^ (r >>> 7);
    }
}

class Inner {
    static long c(int n) {
        long s = n;
        for (int i = 0; i < 2000; i++) { // line 36
            s = s * 31 + (i ^ (s >>> 11)); // line 37
        }
        return s; // line 39
    }
}
`
