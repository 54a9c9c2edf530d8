/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Test object for the addon's cgroup links (test/root/native/native.test.ts): a connect4
 * program that counts the connect() calls it sees, so a test can tell
 * whether it is attached to the caller's cgroup. Not part of the datapath.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Slot 0: connect() calls cg_connect4 saw; slot 1: cg_connect4_b. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} cg_connects SEC(".maps");

SEC("cgroup/connect4")
int cg_connect4(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&cg_connects, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 1;
}

/* The same, counted in slot 1: a replacement for linkUpdate. */
SEC("cgroup/connect4")
int cg_connect4_b(struct bpf_sock_addr *ctx)
{
	__u32 one = 1;
	__u64 *n = bpf_map_lookup_elem(&cg_connects, &one);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 1;
}

SEC("cgroup/sock_release")
int cg_release(struct bpf_sock *sk)
{
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
