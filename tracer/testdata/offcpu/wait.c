// An off-CPU workload for the tracer's tests, built with
// -O2 -fomit-frame-pointer: the main thread waits about 90% of its time in
// main -> waitOuter -> waitInner -> read() on a pipe that a second thread
// feeds every 4 ms, and spends the rest spinning in spin().
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static int fds[2];
volatile unsigned long sink;

static void *feed(void *arg)
{
	(void)arg;
	struct timespec ts = {0, 4 * 1000 * 1000};
	for (;;) {
		nanosleep(&ts, NULL);
		if (write(fds[1], "x", 1) != 1)
			return NULL;
	}
}

// noipa: no inlining, cloning or sibling calls, so each function keeps a
// frame of its own at -O2.
__attribute__((noipa)) void waitInner(void)
{
	char c;
	if (read(fds[0], &c, 1) != 1)
		_exit(1);
	sink++;
}

__attribute__((noipa)) void waitOuter(void)
{
	waitInner();
	sink++;
}

// spin burns about 0.4 ms of CPU: a tenth of the feeder's period.
__attribute__((noipa)) void spin(void)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		for (int i = 0; i < 1000; i++)
			sink = sink * 31 + i;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) < 400 * 1000L);
}

int main(void)
{
	pthread_t feeder;
	if (pipe(fds) || pthread_create(&feeder, NULL, feed, NULL))
		return 1;
	for (;;) {
		waitOuter();
		spin();
	}
}
