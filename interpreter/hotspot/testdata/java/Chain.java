// Chain is the workload the fixtures of package hotspot are dumped from:
// Outer.a calls Middle.b calls Inner.c, whose loop is hot, so that C2
// compiles the chain with c (and b) inlined. Leaf.work, which the dump
// keeps from being inlined (-XX:CompileCommand=dontinline,Leaf::work),
// gives the compiled chain a call site with debug information, and so
// does the lambda Outer.a calls. The tests
// find the lines of the marked statements (// @name) in this file.
public class Chain {
    static volatile long sink;

    public static void main(String[] args) throws Exception {
        long warmNanos = Long.parseLong(args[0]) * 1_000_000L;
        long start = System.nanoTime();
        boolean ready = false;
        for (int i = 0; ; i++) {
            sink += Outer.a(i);
            if (!ready && System.nanoTime() - start > warmNanos) {
                System.out.println("ready");
                System.out.flush();
                ready = true;
            }
            if (ready && System.in.available() > 0) {
                return;
            }
        }
    }
}

class Outer {
    // A lambda: a hidden class C2 inlines into a, whose call of Leaf.work
    // names the hidden class in a's scopes.
    static final java.util.function.IntToLongFunction LEAF = x -> Leaf.work(x); // @lambda

    static long a(int n) {
        long s = 0;
        for (int i = 0; i < 50; i++) {
            s += Middle.b(n + i); // @a-call
        }
        return s + LEAF.applyAsLong(n); // @a-lambda
    }
}

class Middle {
    static long b(int n) {
        long r = Inner.c(n); // @b-call
        return r ^ (r >>> 7);
    }
}

class Inner {
    static long c(int n) {
        long s = n;
        for (int i = 0; i < 200; i++) {
            s = s * 31 + (i ^ (s >>> 11)); // @c-loop
            if ((s & 0xff) == 7) {
                s += Leaf.work(s); // @c-call
            }
        }
        return s;
    }
}

class Leaf {
    static long work(long s) {
        return s >>> 3;
    }
}
