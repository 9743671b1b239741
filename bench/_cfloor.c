/* The C floor for bench/maps.py: the same map operations straight through
 * libbpf, with nothing in between.  Built by the benchmark itself:
 *
 *     cc -O2 -o cfloor bench/_cfloor.c -lbpf
 *     ./cfloor <ops> <reps> <iter_entries> <iter_reps>
 *
 * Prints one "name ns" line per measurement (best of <reps>):
 *   array_lookup / array_update / hash_lookup / hash_update  ns per op
 *   hash_delete                                              ns per op (keys present)
 *   iter_batch_<size>                                        ns for the whole map
 * Maps are u32 -> u64, as in the Python side.  Keys cycle through 0..1023,
 * all present, so every lookup hits.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>

#define SMALL 1024

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Per-operation loops are single-threaded on both sides and timed in
 * thread CPU time, which other loads on a shared machine disturb far less
 * than wall time; whole-map iteration stays in wall time (the Python side
 * overlaps two threads there). */
static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int create(enum bpf_map_type t, const char *name, uint32_t max)
{
	int fd = bpf_map_create(t, name, 4, 8, max, NULL);
	if (fd < 0) {
		fprintf(stderr, "bpf_map_create %s: %s\n", name, strerror(-fd));
		exit(1);
	}
	return fd;
}

static void fill_small(int fd)
{
	for (uint32_t k = 0; k < SMALL; k++) {
		uint64_t v = k;
		if (bpf_map_update_elem(fd, &k, &v, BPF_ANY)) {
			perror("fill");
			exit(1);
		}
	}
}

/* Volatile sink so the compiler cannot drop the looked-up values. */
static volatile uint64_t sink;

static double bench_lookup(int fd, long ops, int reps)
{
	double best = 1e30;
	for (int r = 0; r < reps; r++) {
		uint64_t t0 = cpu_ns(), acc = 0;
		for (long i = 0; i < ops; i++) {
			uint32_t k = i & (SMALL - 1);
			uint64_t v;
			if (bpf_map_lookup_elem(fd, &k, &v)) {
				perror("lookup");
				exit(1);
			}
			acc += v;
		}
		double ns = (double)(cpu_ns() - t0) / ops;
		sink = acc;
		if (ns < best)
			best = ns;
	}
	return best;
}

static double bench_update(int fd, long ops, int reps)
{
	double best = 1e30;
	for (int r = 0; r < reps; r++) {
		uint64_t t0 = cpu_ns();
		for (long i = 0; i < ops; i++) {
			uint32_t k = i & (SMALL - 1);
			uint64_t v = i;
			if (bpf_map_update_elem(fd, &k, &v, BPF_ANY)) {
				perror("update");
				exit(1);
			}
		}
		double ns = (double)(cpu_ns() - t0) / ops;
		if (ns < best)
			best = ns;
	}
	return best;
}

/* Delete n present keys from a hash map of n entries (refilled first,
 * untimed, with one batch update). */
static double bench_delete(int fd, uint32_t n)
{
	uint32_t *k = malloc((size_t)n * 4);
	uint64_t *v = malloc((size_t)n * 8);
	uint32_t cnt = n;
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	for (uint32_t i = 0; i < n; i++) {
		k[i] = i;
		v[i] = i;
	}
	if (bpf_map_update_batch(fd, k, v, &cnt, &opts)) {
		perror("delete refill");
		exit(1);
	}
	uint64_t t0 = cpu_ns();
	for (uint32_t i = 0; i < n; i++) {
		uint32_t key = i;
		if (bpf_map_delete_elem(fd, &key)) {
			perror("delete");
			exit(1);
		}
	}
	double ns = (double)(cpu_ns() - t0) / n;
	free(k);
	free(v);
	return ns;
}

/* Read the whole map with bpf_map_lookup_batch, <batch> entries per call.
 * Returns ns for the whole map; checks that every entry came back. */
static double bench_iter(int fd, uint32_t entries, uint32_t batch, int reps)
{
	uint32_t *keys = malloc((size_t)batch * 4);
	uint64_t *vals = malloc((size_t)batch * 8);
	double best = 1e30;
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	for (int r = 0; r < reps; r++) {
		uint64_t t0 = now_ns(), total = 0, acc = 0;
		uint32_t in, out;
		void *inp = NULL;
		for (;;) {
			uint32_t n = batch;
			int err = bpf_map_lookup_batch(fd, inp, &out, keys, vals, &n, &opts);
			if (err && err != -ENOENT) {
				fprintf(stderr, "lookup_batch: %s\n", strerror(-err));
				exit(1);
			}
			total += n;
			if (n)
				acc += keys[n - 1] + vals[n - 1];
			if (err == -ENOENT)
				break;
			in = out;
			inp = &in;
		}
		double ns = (double)(now_ns() - t0);
		sink = acc;
		if (total != entries) {
			fprintf(stderr, "iter: got %llu entries, want %u\n", (unsigned long long)total, entries);
			exit(1);
		}
		if (ns < best)
			best = ns;
	}
	free(keys);
	free(vals);
	return best;
}

static void fill_big(int big, uint32_t entries)
{
	/* Fill with the batch API, 64k entries per call. */
	const uint32_t chunk = 65536;
	uint32_t *k = malloc((size_t)chunk * 4);
	uint64_t *v = malloc((size_t)chunk * 8);
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	for (uint32_t base = 0; base < entries; base += chunk) {
		uint32_t n = entries - base < chunk ? entries - base : chunk;
		for (uint32_t i = 0; i < n; i++) {
			k[i] = base + i;
			v[i] = (uint64_t)(base + i) * 3;
		}
		int err = bpf_map_update_batch(big, k, v, &n, &opts);
		if (err) {
			fprintf(stderr, "update_batch: %s\n", strerror(-err));
			exit(1);
		}
	}
	free(k);
	free(v);
}

/* A server, so that the benchmark can interleave C and Python runs (the
 * best of many short interleaved runs is robust against a busy machine).
 * Commands on stdin, one per line, each answered with one line:
 *   big <entries>          create and fill the big hash map -> "ok"
 *   <op> <n>               array_lookup | array_update | hash_lookup |
 *                          hash_update | hash_delete: ns per op over n ops
 *   iter <batch>           ns to read the whole big map, <batch> per call
 */
int main(void)
{
	char op[64];
	long n;
	int arr = create(BPF_MAP_TYPE_ARRAY, "floor_arr", SMALL);
	int hsh = create(BPF_MAP_TYPE_HASH, "floor_hash", SMALL);
	int big = -1, del = -1;
	uint32_t entries = 0, del_size = 0;
	fill_small(arr);
	fill_small(hsh);
	while (scanf("%63s %ld", op, &n) == 2) {
		if (!strcmp(op, "big")) {
			entries = (uint32_t)n;
			big = create(BPF_MAP_TYPE_HASH, "floor_big", entries);
			fill_big(big, entries);
			printf("ok\n");
		} else if (!strcmp(op, "iter") && big >= 0) {
			printf("%.0f\n", bench_iter(big, entries, (uint32_t)n, 1));
		} else if (!strcmp(op, "array_lookup")) {
			printf("%.1f\n", bench_lookup(arr, n, 1));
		} else if (!strcmp(op, "array_update")) {
			printf("%.1f\n", bench_update(arr, n, 1));
		} else if (!strcmp(op, "hash_lookup")) {
			printf("%.1f\n", bench_lookup(hsh, n, 1));
		} else if (!strcmp(op, "hash_update")) {
			printf("%.1f\n", bench_update(hsh, n, 1));
		} else if (!strcmp(op, "hash_delete")) {
			if (del < 0 || del_size != (uint32_t)n) {
				if (del >= 0)
					close(del);
				del_size = (uint32_t)n;
				del = create(BPF_MAP_TYPE_HASH, "floor_del", del_size);
			}
			printf("%.1f\n", bench_delete(del, del_size));
		} else {
			fprintf(stderr, "bad command %s\n", op);
			return 2;
		}
		fflush(stdout);
	}
	return 0;
}
