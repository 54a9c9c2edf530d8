/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Health checks through the direct-server-return path (hc.bpf.c).
 *
 * ferryd opens a check socket to the backend's own address with SO_MARK
 * HC_MARK_BASE | slot. On the way out (tc egress on a Ferry interface) the
 * packet's destination becomes the VIP of that slot and it is encapsulated
 * to the backend exactly as xdp_lb would (IPIP / IP6IP6); the backend
 * decapsulates and answers from the VIP, straight back. On the way in (tc
 * ingress) the reply's source, the VIP, is turned back into the backend's
 * address, so the socket sees the peer it connected to.
 *
 * The maps are not pinned: a restarted ferryd loads a fresh object and
 * replaces the filters; health is rebuilt after a restart anyway.
 */
#ifndef FERRY_HC_MAPS_H
#define FERRY_HC_MAPS_H

#include "common.h"

/* Marks of check sockets: the upper 16 bits say "ours", the lower 16 the slot. */
#define HC_MARK_BASE 0x46520000u /* "FR" */
#define HC_MARK_MASK 0xffff0000u
#define HC_MAX_SLOTS 65536
/* Concurrent check connections whose replies are translated back. */
#define HC_MAX_FLOWS 65536
/*
 * A connection not seen leaving for this long is no longer a check (the
 * longest check timeout is 60 s): its entry must not translate replies of
 * a later connection that happens to reuse the local port.
 */
#define HC_FLOW_TTL_NS (65ULL * 1000000000ULL)

/* One checked (VIP, backend) pair: written by ferryd before the first check. */
struct hc_target {
	__u32 vip[4];	  /* inner destination (IPv4 in [0]) */
	__u32 backend[4]; /* the socket's destination, and the outer one */
	__u8 family;	  /* FERRY_AF_INET / FERRY_AF_INET6, of both */
	__u8 pad[7];
	__u64 packets; /* packets encapsulated for this slot */
};

/* A check connection as a reply from the VIP shows it. */
struct hc_flow_key {
	__u32 local[4]; /* ferryd's address */
	__u32 vip[4];
	__be16 local_port;
	__be16 vip_port;
	__u8 family;
	__u8 proto;
	__u8 pad[2];
};

struct hc_flow {
	__u32 backend[4]; /* the reply's source becomes this again */
	__u64 seen_ns;	  /* last packet of the check sent (bpf_ktime_get_ns) */
};

enum hc_counter {
	HC_CNT_ENCAP = 0,   /* check packets encapsulated to a backend */
	HC_CNT_REPLY,	    /* replies from a VIP translated back */
	HC_CNT_NO_TARGET,   /* marked, but the slot is empty: dropped */
	HC_CNT_MISMATCH,    /* marked, destination or family not the slot's: dropped */
	HC_CNT_UNSUPPORTED, /* marked, not plain TCP/UDP over IP after Ethernet: dropped */
	HC_CNT_ERROR,	    /* the kernel refused a rewrite: dropped */
	HC_CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HC_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct hc_target);
} ferry_hc_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HC_MAX_FLOWS);
	__type(key, struct hc_flow_key);
	__type(value, struct hc_flow);
} ferry_hc_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HC_CNT_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} ferry_hc_counters SEC(".maps");

static __always_inline void hc_count(enum hc_counter idx, __u32 bytes)
{
	counter_add(&ferry_hc_counters, idx, bytes);
}

#endif /* FERRY_HC_MAPS_H */
