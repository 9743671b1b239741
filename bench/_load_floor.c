/* The C floor for bench/load.py: open + load + close of an object file
 * straight through libbpf, with nothing in between.  Built by the benchmark:
 *
 *     cc -O2 -o loadfloor bench/_load_floor.c -lbpf
 *
 * Reads one command per line on stdin, "<path> <reps>", and answers with the
 * best time of <reps> runs of bpf_object__open_file + bpf_object__load +
 * bpf_object__close, in ns.  Served line by line so that C and Python runs
 * interleave on a busy machine.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/libbpf.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_WARN)
		return vfprintf(stderr, fmt, args);
	return 0;
}

int main(void)
{
	char path[4096];
	int reps;

	libbpf_set_print(quiet);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (scanf("%4095s %d", path, &reps) == 2) {
		double best = 1e30;
		for (int r = 0; r < reps; r++) {
			uint64_t t0 = now_ns();
			struct bpf_object *obj = bpf_object__open_file(path, NULL);
			if (!obj) {
				fprintf(stderr, "open %s: %s\n", path, strerror(errno));
				return 1;
			}
			int err = bpf_object__load(obj);
			if (err) {
				fprintf(stderr, "load %s: %s\n", path, strerror(-err));
				return 1;
			}
			bpf_object__close(obj);
			double ns = (double)(now_ns() - t0);
			if (ns < best)
				best = ns;
		}
		printf("%.0f\n", best);
	}
	return 0;
}
