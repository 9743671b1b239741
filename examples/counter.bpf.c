/* A socket filter that counts packets by IP protocol, and a global that
 * Python sets before loading. Built by examples/run.sh. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} proto_counts SEC(".maps");

const volatile __u32 verdict = 0;  /* set from Python before loading */
__u64 packets_seen = 0;           /* read live from Python */

SEC("socket")
int count_protocols(struct __sk_buff *skb)
{
	__u8 proto;
	__u32 key;
	__u64 *count;

	/* BPF_PROG_TEST_RUN hands socket filters the packet at its network header. */
	if (bpf_skb_load_bytes(skb, __builtin_offsetof(struct iphdr, protocol), &proto, 1) < 0)
		return verdict;
	key = proto;
	count = bpf_map_lookup_elem(&proto_counts, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	__sync_fetch_and_add(&packets_seen, 1);
	return verdict;
}

char _license[] SEC("license") = "GPL";
