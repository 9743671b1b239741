/* Reports every execve() with the caller's pid and name through a BPF ring
 * buffer.  Built with:
 *   clang -O2 -g -target bpf -I/usr/include/$(gcc -dumpmachine) \
 *         -c examples/ringbuf.bpf.c -o examples/build/ringbuf.o */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct exec_event {
	__u32 pid;
	__u32 uid;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} exec_events SEC(".maps");

/* Keeps struct exec_event in the object's BTF so Python can decode it. */
struct exec_event unused_exec_event = {};

SEC("tracepoint/syscalls/sys_enter_execve")
int on_execve(void *ctx)
{
	struct exec_event *e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);

	if (!e)
		return 0; /* ring full: the event is dropped */
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char _license[] SEC("license") = "GPL";
