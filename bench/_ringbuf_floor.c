/* The C floor for bench/ringbuf.py: the same events consumed straight
 * through libbpf (ring_buffer__consume / perf_buffer__consume), with
 * nothing in between.  Built by the benchmark itself:
 *
 *     cc -O2 -o floor bench/_ringbuf_floor.c -lbpf -lpthread
 *     ./floor ringbuf <ringbuf.o> <ring_bytes> <events> <reps> <burst>
 *     ./floor perf    <perfbuf.o> <per_cpu_bytes> <events> <reps> <burst>
 *
 * It loads the fixture object with libbpf's bpf_object API, sets the ring
 * size, and prints "name value" lines:
 *   prefilled   events/s consuming a ring the producer filled beforehand
 *               (best of <reps>)
 *   concurrent  events/s with a producer thread (test runs of <burst>
 *               events, waiting for room) and the consumer polling
 *   lost        events the concurrent run lost (kernel drops)
 *   disorder    events that arrived out of order or not at all (must be 0)
 * Every callback checks the sequence number, so the floor does the least
 * work a real consumer does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

struct event {
	uint64_t seq;
	uint64_t val;
};

static struct bpf_object *obj;
static int prog_fd;
static int perf_mode;
static uint64_t expect, disorder;
static atomic_uint_fast64_t consumed;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Pre-filled runs are consumed by one thread on both sides and timed in its
 * CPU time, which a busy shared machine disturbs far less than wall time;
 * the concurrent runs stay in wall time. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "%s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* Offset of global `name` in the object's .bss.  libbpf 1.1 maps the
 * kernel's .bss into the process only for skeletons, so globals are read
 * and written with map lookups/updates of the whole section. */
static int bss_fd;
static char bss[4096];

static size_t var_off(const char *name)
{
	struct btf *btf = bpf_object__btf(obj);
	int id = btf ? btf__find_by_name_kind(btf, ".bss", BTF_KIND_DATASEC) : -1;

	if (id < 0)
		die(".bss datasec", ENOENT);
	const struct btf_type *t = btf__type_by_id(btf, id);
	const struct btf_var_secinfo *vs = btf_var_secinfos(t);
	for (int i = 0; i < btf_vlen(t); i++, vs++) {
		const struct btf_type *v = btf__type_by_id(btf, vs->type);
		if (!strcmp(btf__name_by_offset(btf, v->name_off), name))
			return vs->offset;
	}
	die(name, ENOENT);
	return 0;
}

static uint64_t get_var(const char *name, size_t size)
{
	int k = 0;
	uint64_t v = 0;

	if (bpf_map_lookup_elem(bss_fd, &k, bss))
		die("read .bss", errno);
	memcpy(&v, bss + var_off(name), size);
	return v;
}

static void set_var(const char *name, uint64_t v, size_t size)
{
	int k = 0;

	if (bpf_map_lookup_elem(bss_fd, &k, bss))
		die("read .bss", errno);
	memcpy(bss + var_off(name), &v, size);
	if (bpf_map_update_elem(bss_fd, &k, bss, 0))
		die("write .bss", errno);
}

static void produce(uint32_t count, uint64_t start)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts);
	int err;

	set_var("count", count, 4);
	set_var("start", start, 8);
	if (perf_mode) {
		opts.flags = BPF_F_TEST_RUN_ON_CPU;
		opts.cpu = 0;
	}
	err = bpf_prog_test_run_opts(prog_fd, &opts);
	if (err)
		die("test run", err);
}

static void check(const void *data)
{
	const struct event *e = data;

	if (e->seq != expect)
		disorder++;
	expect = e->seq + 1;
	atomic_fetch_add_explicit(&consumed, 1, memory_order_relaxed);
}

static int on_ring_sample(void *ctx, void *data, size_t size)
{
	check(data);
	return 0;
}

static void on_perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
	check(data);
}

static void on_perf_lost(void *ctx, int cpu, __u64 cnt)
{
	/* Counted as consumed so that the loops end; reported as disorder. */
	disorder += cnt;
	expect += cnt;
	atomic_fetch_add_explicit(&consumed, cnt, memory_order_relaxed);
}

struct producer_args {
	uint64_t total, burst, capacity;
	/* perf: CPU 0's ring (struct perf_event_mmap_page first), data bytes */
	volatile uint64_t *perf_meta;
	size_t perf_size;
};

/* Bytes CPU 0's perf ring holds: libbpf writes the tail back only after a
 * pass over the ring, so the count consumed would run ahead of it. */
static uint64_t perf_used(struct producer_args *a)
{
	uint64_t head = a->perf_meta[1024 / 8], tail = a->perf_meta[1032 / 8];

	return head - tail;
}

/* Keep the producing thread off CPU 0, where the perf producer's program
 * runs (BPF_F_TEST_RUN_ON_CPU): run from CPU 0 itself, in process context,
 * each sample's wakeup of a sleeping reader is a self-IPI, which costs ~9 us
 * in a VM, and the figure would depend on where the scheduler put us. */
static void off_cpu0(void)
{
	cpu_set_t set;
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 2)
		return;
	CPU_ZERO(&set);
	for (long i = 1; i < n && i < CPU_SETSIZE; i++)
		CPU_SET(i, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *producer(void *p)
{
	struct producer_args *a = p;

	off_cpu0();

	for (uint64_t done = 0; done < a->total; done += a->burst) {
		/* Wait for room: the consumer keeps up, nothing is dropped. */
		if (a->perf_meta) {
			while (perf_used(a) > a->perf_size - (a->burst + 1) * 32)
				sched_yield();
		} else {
			while (done - atomic_load(&consumed) > a->capacity - a->burst)
				sched_yield();
		}
		produce(a->burst, done);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct ring_buffer *rb = NULL;
	struct perf_buffer *pb = NULL;
	uint64_t ring_bytes, n, reps, burst, best = UINT64_MAX;
	int err;

	if (argc != 7) {
		fprintf(stderr, "usage: %s ringbuf|perf obj ring_bytes events reps burst\n", argv[0]);
		return 2;
	}
	perf_mode = !strcmp(argv[1], "perf");
	ring_bytes = strtoull(argv[3], NULL, 0);
	n = strtoull(argv[4], NULL, 0);
	reps = strtoull(argv[5], NULL, 0);
	burst = strtoull(argv[6], NULL, 0);

	obj = bpf_object__open_file(argv[2], NULL);
	if (!obj)
		die("open", errno);
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, !strcmp(bpf_program__name(prog), "produce"));
	if (!perf_mode) {
		bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "events"), ring_bytes);
		/* user_events is unused here; shrink nothing else */
	}
	err = bpf_object__load(obj);
	if (err)
		die("load", err);
	prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, "produce"));
	bss_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, ".bss"));
	if (bpf_map__value_size(bpf_object__find_map_by_name(obj, ".bss")) > sizeof(bss))
		die(".bss too large", E2BIG);

	if (perf_mode) {
		int map_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "perf_events"));
		pb = perf_buffer__new(map_fd, ring_bytes / getpagesize(), on_perf_sample, on_perf_lost, NULL, NULL);
		if (!pb)
			die("perf_buffer__new", errno);
	} else {
		int map_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "events"));
		rb = ring_buffer__new(map_fd, on_ring_sample, NULL, NULL);
		if (!rb)
			die("ring_buffer__new", errno);
	}

	/* Pre-filled ring: produce n, then time consuming all of it. */
	for (uint64_t r = 0; r < reps; r++) {
		expect = 0;
		atomic_store(&consumed, 0);
		produce(n, 0);
		uint64_t t0 = cpu_ns(), w0 = now_ns();
		while (atomic_load(&consumed) < n) {
			err = perf_mode ? perf_buffer__consume(pb) : ring_buffer__consume(rb);
			if (err < 0)
				die("consume", err);
			if (now_ns() - w0 > 60000000000ull)
				die("pre-filled ring: events missing", ETIMEDOUT);
		}
		uint64_t dt = cpu_ns() - t0;
		if (dt < best)
			best = dt;
	}
	printf("prefilled %.0f\n", n * 1e9 / best);
	fflush(stdout);

	/* Concurrent producer/consumer pair. */
	const char *dropped = perf_mode ? "failed" : "dropped";
	uint64_t total = n * 4 / burst * burst;
	set_var(dropped, 0, 8);
	disorder = 0;
	expect = 0;
	atomic_store(&consumed, 0);
	struct producer_args pa = { .total = total, .burst = burst, .capacity = n };
	if (perf_mode) {
		void *base;

		if (perf_buffer__buffer(pb, 0, &base, &pa.perf_size))
			die("perf_buffer__buffer", EINVAL);
		pa.perf_meta = base;
	}
	pthread_t t;
	uint64_t t0 = now_ns();
	pthread_create(&t, NULL, producer, &pa);
	while (atomic_load(&consumed) < total) {
		err = perf_mode ? perf_buffer__poll(pb, 100) : ring_buffer__poll(rb, 100);
		if (err < 0 && err != -EINTR)
			die("poll", err);
		if (now_ns() - t0 > 120000000000ull)
			die("concurrent run: events missing", ETIMEDOUT);
	}
	uint64_t dt = now_ns() - t0;
	pthread_join(t, NULL);
	printf("concurrent %.0f\n", total * 1e9 / dt);
	printf("lost %llu\n", (unsigned long long)get_var(dropped, 8));
	printf("disorder %llu\n", (unsigned long long)disorder);

	ring_buffer__free(rb);
	perf_buffer__free(pb);
	bpf_object__close(obj);
	return 0;
}
