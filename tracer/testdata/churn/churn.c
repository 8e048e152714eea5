/* churn: main -> f -> g spinning for argv[1] milliseconds of wall time,
 * built -O2 -fomit-frame-pointer. Exec'd many times a second by launch.c
 * to test that short-lived processes get their frames named. */
#include <stdlib.h>
#include <time.h>

static long long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

volatile unsigned long sink;

__attribute__((noinline)) void g(long long until) {
	unsigned long x = sink;
	while (now_ns() < until) {
		for (int i = 0; i < 100000; i++)
			x = x * 2862933555777941757UL + 3037000493UL;
		sink = x;
	}
}

__attribute__((noinline)) void f(long long until) {
	g(until);
	sink++;
}

int main(int argc, char **argv) {
	long ms = argc > 1 ? atol(argv[1]) : 30;
	f(now_ns() + ms * 1000000LL);
	return (int)(sink & 1);
}
