// An unwinding workload for the tracer's tests, built with
// -O2 -fomit-frame-pointer: main -> chain_alpha -> chain_beta -> chain_gamma,
// which alternates between spinning and sorting with libc's qsort, whose
// comparator lies in this binary.
#include <stdlib.h>

#define N 4096

static int data[N];
volatile unsigned long sink;

// noipa: no inlining, cloning or sibling calls, so each function keeps a
// frame of its own at -O2.
__attribute__((noipa)) int compare_ints(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

__attribute__((noipa)) void chain_gamma(void)
{
	for (;;) {
		unsigned long x = sink;
		for (int i = 0; i < 300000; i++)
			x = x * 31 + i;
		sink = x;
		for (int i = 0; i < N; i++)
			data[i] = (int)((x >> (i & 31)) ^ (unsigned long)i * 2654435761u);
		qsort(data, N, sizeof(data[0]), compare_ints);
	}
}

__attribute__((noipa)) void chain_beta(void)
{
	chain_gamma();
	sink++;
}

__attribute__((noipa)) void chain_alpha(void)
{
	chain_beta();
	sink++;
}

int main(void)
{
	chain_alpha();
	return 0;
}
