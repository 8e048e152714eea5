// Workloads for the end-to-end tests, built by the test itself.
//   workload chain    burns CPU in main -> fp_alpha -> fp_beta -> fp_gamma
//   workload syscall  burns CPU in the kernel, reading /dev/zero
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char buf[1 << 16];

__attribute__((noinline)) void fp_gamma(void)
{
	volatile unsigned long x = 0;
	for (;;)
		x = x * 31 + 7;
}

__attribute__((noinline)) void fp_beta(void)
{
	fp_gamma();
	buf[1]++; // not a tail call
}

__attribute__((noinline)) void fp_alpha(void)
{
	fp_beta();
	buf[2]++;
}

static void read_zero(void)
{
	int fd = open("/dev/zero", O_RDONLY);
	if (fd < 0) {
		perror("open /dev/zero");
		return;
	}
	for (;;)
		if (read(fd, buf, sizeof(buf)) < 0)
			return;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "syscall") == 0)
		read_zero();
	else
		fp_alpha();
	return 1;
}
