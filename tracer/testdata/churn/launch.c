/* launch: execs argv[1] with a run time of 20..50 ms every 5 ms (200 a
 * second) until killed, reaping the children as they exit. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	signal(SIGCHLD, SIG_DFL);
	srand(1);
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		char ms[16];
		snprintf(ms, sizeof ms, "%d", 20 + rand() % 31);
		pid_t pid = fork();
		if (pid == 0) {
			execl(argv[1], argv[1], ms, (char *)0);
			_exit(127);
		}
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		next.tv_nsec += 5000000;
		if (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
}
