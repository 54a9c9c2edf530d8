// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The benchmark's floors.
 *
 * xdp_baseline parses exactly as xdp_lb does (Ethernet + tag, IPv4 / IPv6,
 * TCP / UDP ports) and sends the frame back unchanged: the cost of xdp_lb
 * minus this is the cost of balancing.
 *
 * xdp_baseline_line does the same and also reads one cache line picked by
 * the flow's hash from an array as large as xdp_lb's conntrack: over many
 * flows, that is the memory cost any per-flow state pays on this machine
 * (a cache miss and, in a table this size, a TLB miss), which the
 * benchmark shows next to xdp_lb's figure for 200,000 flows.
 */
#include "common.h"
#include "hash.h"
#include "parse.h"

/* Keeps the compiler from dropping loads whose results nothing else uses. */
#define keep(x) asm volatile("" : : "r"(x))

/* The size of xdp_lb's default conntrack (maps.h), one cache line each. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FERRY_CT_BUCKETS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ct_bucket);
} bench_lines SEC(".maps");

static __always_inline bool parse_all(void *data, void *data_end, struct packet *pkt)
{
	return parse_eth(data, data_end, pkt) && parse_ip(data, data_end, pkt) == DROP_NONE &&
	       parse_l4(data, data_end, pkt) == DROP_NONE;
}

SEC("xdp")
int xdp_baseline(struct xdp_md *ctx)
{
	struct packet pkt = {};

	if (!parse_all(xdp_data(ctx), xdp_data_end(ctx), &pkt))
		return XDP_PASS;
	keep(pkt.flow.sport);
	keep(pkt.flow.dport);
	return XDP_TX;
}

SEC("xdp")
int xdp_baseline_line(struct xdp_md *ctx)
{
	struct packet pkt = {};
	struct ct_bucket *b;
	__u32 idx;

	if (!parse_all(xdp_data(ctx), xdp_data_end(ctx), &pkt))
		return XDP_PASS;
	idx = jhash_flow_key(&pkt.flow, 0) & (FERRY_CT_BUCKETS - 1);
	b = bpf_map_lookup_elem(&bench_lines, &idx);
	if (b)
		keep(b->e[0].fp);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
