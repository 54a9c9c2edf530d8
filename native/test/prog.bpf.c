/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Test object for the native addon's own tests (test/root/native/native.test.ts): one of
 * each map kind Ferry uses, and small programs whose effects are visible from
 * user space. Not part of the datapath.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

/* btfStructLayout's subject: padding, an array, an anonymous union, a nested
 * struct and a bitfield. */
struct layout_probe {
	__u32 a;       /* 0 */
	__u8 b;	       /* 4 */
	__u16 c;       /* 6 */
	__u64 d;       /* 8 */
	__u8 addr[16]; /* 16 */
	union {	       /* 32 */
		__u32 v4;
		__u8 v6[16];
	};
	struct {
		__u16 x;
		__u16 y;
	} nested;	/* 48 */
	__u32 flag : 3; /* 52, bits 416..418 */
	__u32 rest : 29;
}; /* size 56 */

struct hash_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct hash_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} test_hash SEC(".maps");

/* Slot 0: the verdict xdp_test returns (0 means XDP_TX). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} test_array SEC(".maps");

/* Runs of xdp_test by verdict; 4-byte values are padded to 8 per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} test_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u64);
} test_percpu_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128);
	__type(key, struct layout_probe);
	__type(value, __u32);
} test_lru SEC(".maps");

struct lpm_v4 {
	__u32 prefixlen;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u32);
} test_lpm SEC(".maps");

/* Maglev-style tables: inner arrays may differ in size (BPF_F_INNER_MAP). */
struct test_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct test_inner);
} test_outer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct test_inner);
} test_outer_hash SEC(".maps");

/* Keeps struct layout_probe in the BTF even if no map used it. */
struct layout_probe probe_anchor SEC(".bss");

/*
 * Writes 0xfe to byte 0 and, in byte 1, slot 0 of the inner table at
 * test_outer[0] (0xff when there is none), so a test sees which table is
 * installed. Counts the run under its verdict in test_percpu.
 */
SEC("xdp")
int xdp_test(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	__u32 zero = 0, verdict = XDP_TX;
	__u32 *v, *cnt;
	void *inner;

	if (p + 14 > (__u8 *)data_end)
		return XDP_ABORTED;
	v = bpf_map_lookup_elem(&test_array, &zero);
	if (v && *v)
		verdict = *v;
	p[0] = 0xfe;
	p[1] = 0xff;
	inner = bpf_map_lookup_elem(&test_outer, &zero);
	if (inner) {
		__u32 *slot = bpf_map_lookup_elem(inner, &zero);
		if (slot)
			p[1] = (__u8)*slot;
	}
	if (verdict > 7)
		verdict = XDP_ABORTED;
	cnt = bpf_map_lookup_elem(&test_percpu, &verdict);
	if (cnt)
		*cnt += 1;
	return verdict;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int tc_test(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
