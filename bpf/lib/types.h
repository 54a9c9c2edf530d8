/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ferry map keys and values: the contract between the datapath and the
 * daemon. src/datapath/abi.ts encodes each struct byte for byte and a test
 * compares its sizes and offsets with this object's BTF.
 *
 * Rules: addresses and ports in network byte order; an IPv4 address sits in
 * word 0 of a 4-word array with the other words zero; every padding byte is
 * named and must be zero (hash keys are compared as bytes).
 */
#ifndef FERRY_TYPES_H
#define FERRY_TYPES_H

#include <linux/types.h>
#include "consts.h"

/* ferry_vips key: one VIP. port 0 = all ports of the protocol. */
struct vip_key {
	__u32 addr[4];
	__u16 port;
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* FERRY_AF_INET / FERRY_AF_INET6 */
};

struct vip_meta {
	__u32 vip_id;	       /* index into ferry_maglev, ferry_vip_stats, ferry_ratelimit */
	__u32 flags;	       /* VIP_F_* */
	__u64 rl_interval_ns;  /* new-flow rate limit: ns between flows (GCRA), 0 = unlimited */
	__u64 rl_tolerance_ns; /* burst allowance in ns (interval x burst) */
};

/* ferry_vip_addrs key: an address that carries at least one VIP. */
struct vip_addr_key {
	__u32 addr[4];
	__u8 family;
	__u8 pad[3];
};

struct vip_addr_meta {
	__u32 flags; /* VIP_ADDR_F_* */
};

/*
 * The VIP index (index.h): buckets of FERRY_INDEX_WAYS slots in an array
 * map, probed inline, so that finding a VIP costs no hash-map call. A key
 * lives in one of its two buckets; one that fits in neither lives in the
 * hash map of its kind (ferry_vips / ferry_vip_addrs) and counts in its
 * first bucket's `overflow`. A slot whose key has family 0 is empty.
 */
struct vip_slot {
	struct vip_key key;
	__u32 pad;
	struct vip_meta meta;
};

struct vip_bucket {
	struct vip_slot slot[FERRY_INDEX_WAYS];
	__u32 overflow; /* keys whose first bucket this is that live in ferry_vips */
	__u32 pad;
};

struct vip_addr_slot {
	struct vip_addr_key key;
	struct vip_addr_meta meta;
};

struct vip_addr_bucket {
	struct vip_addr_slot slot[FERRY_INDEX_WAYS];
	__u32 overflow; /* likewise, living in ferry_vip_addrs */
	__u32 pad;
};

/* ferry_backends value, indexed by backend id. */
struct backend {
	__u32 addr[4]; /* the outer destination of its packets */
	__u8 family;
	__u8 state; /* BACKEND_* */
	__u8 flags; /* BACKEND_F_* */
	__u8 pad;
	__u32 vip_id; /* the VIP this id serves */
	__u32 gen;    /* bumped whenever the id is reallocated */
	__u32 via[4]; /* its host: the next hop is looked up for this (0: addr itself) */
	__be16 port;  /* its own port (VIP_F_SNAT); 0: the packet's */
	__u16 pad2;
};

/* 5-tuple: conntrack key and flow hash input (hashed as 10 u32 words). */
struct flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

/* A conntrack entry (conntrack.h): a flow's fingerprint and its backend. */
struct ct_entry {
	__u64 fp; /* 0 = empty, 1 = being written, else the flow's fingerprint */
	__u32 backend_id;
	__u32 backend_gen; /* must equal backends[id].gen for a hit to count */
};

/* ferry_ct value: one cache line. */
struct ct_bucket {
	struct ct_entry e[FERRY_CT_WAYS];
	__u32 last_seen
		[FERRY_CT_WAYS]; /* jiffies (low 32 bits), refreshed every FERRY_CT_TOUCH_JIFFIES */
	__u32 pad;
};

/*
 * ferry_nexthops value (per CPU, slot backend_id % FERRY_NEXTHOP_SLOTS): a
 * bpf_fib_lookup answer for a backend, reused until `expires` (jiffies).
 */
struct nexthop {
	__u32 backend_id;
	__u32 backend_gen; /* the slot answers only for this id and generation */
	__u32 iif;	   /* and for packets that came in here (policy routing may look at it) */
	__u32 ifindex;	   /* egress interface */
	__u32 mtu;	   /* the route's MTU (L3 bytes) */
	__u32 expires;	   /* jiffies, low 32 bits */
	__u8 dmac[6];
	__u8 smac[6];
};

/* ferry_maglev value: FERRY_MAGLEV_BLOCK consecutive Maglev slots. */
struct maglev_block {
	__u32 slot[FERRY_MAGLEV_BLOCK];
};

/* ferry_maglev_publish's argument: ferry_maglev_at[vip_id] = at, for each item. */
struct maglev_publish_item {
	__u32 vip_id;
	__u32 at;
};

struct maglev_publish {
	__u32 count; /* items used, at most FERRY_MAGLEV_PUBLISH_MAX */
	__u32 pad;
	struct maglev_publish_item item[FERRY_MAGLEV_PUBLISH_MAX];
};

/* ferry_policy key: LPM over (vip_id, source address). */
struct policy_key {
	__u32 prefixlen; /* 32 (vip_id) + prefix bits of the 128-bit address */
	__u32 vip_id;	 /* network byte order so it leads the match */
	__u32 addr[4];	 /* IPv4 as ::ffff:a.b.c.d */
};

struct policy_value {
	__u32 action; /* POLICY_ALLOW / POLICY_DENY */
};

/* ferry_ratelimit value, indexed by vip id: GCRA theoretical arrival time. */
struct ratelimit_state {
	__u64 tat_ns;
};

/* ferry_config[0]. */
struct lb_config {
	__u32 hash_seed;
	__u32 flags;	   /* CFG_F_* */
	__u32 src4_prefix; /* outer IPv4 source: prefix | (flow hash & hostmask) */
	__u32 src4_hostmask;
	__u32 src6_prefix[4]; /* outer IPv6 source: word 3 varies as above */
	__u32 src6_hostmask;
	__u8 gw_mac[6]; /* next hop when the fib lookup fails; zero = none */
	__u8 pad[2];
	/* Live events (events.h). The cap is a per-CPU GCRA: each CPU emits at
	 * most one event per events_interval_ns, with a burst allowance of
	 * events_burst_ns; the daemon sets interval = CPUs x 1 s / cap. */
	__u32 events_flow_sample; /* report 1 in N new flows (random); 0 = none */
	__u64 events_interval_ns; /* per CPU; 0 = no events at all */
	__u64 events_burst_ns;	  /* per CPU GCRA tolerance */
	__u32 vip_index_mask;	  /* buckets of ferry_vip_index - 1 (a power of 2 minus 1) */
	__u32 addr_index_mask;	  /* buckets of ferry_addr_index - 1 */
	__u32 nexthop_ttl; /* jiffies a next hop is reused; 0 = bpf_fib_lookup on every packet */
	__u32 ct_mask;	   /* buckets of ferry_ct - 1 (a power of 2 minus 1) */
	/* Source NAT (snat.h): this host's addresses and the ports it takes
	 * (host order, inclusive); snat_port_max 0 = no VIP translates. */
	__u32 snat_src4;
	__u32 snat_src6[4];
	__u16 snat_port_min;
	__u16 snat_port_max;
};

/* ferry_snat_fwd value, keyed by the client's flow_key: the port it took. */
struct snat_fwd {
	__u32 backend[4]; /* the backend address and port it was taken for */
	__be16 backend_port;
	__be16 port; /* this host's port for the flow */
	__u32 pad;
};

/* ferry_snat_rev key: a reply as it arrives (from the backend to this host's port). */
struct snat_rev_key {
	__u32 backend[4];
	__be16 backend_port;
	__be16 port;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

/* ferry_snat_rev value: what the reply's addresses and ports become. */
struct snat_rev {
	__u32 client[4];
	__u32 vip[4];
	__be16 client_port;
	__be16 vip_port;
	__u32 pad;
};

/* ferry_event_budget value (per CPU, one entry): GCRA theoretical arrival time. */
struct event_budget {
	__u64 tat_ns;
};

/*
 * A ferry_events ring buffer record: a sampled new flow or a drop. Fixed
 * size; addresses and ports as in flow_key (network order). For a flow,
 * src/sport is the client and dst/dport the VIP; for a drop, whatever was
 * parsed before the drop (zero beyond that).
 */
struct ferry_event {
	__u64 ts_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u32 vip_id;	  /* FERRY_VIP_NONE when dropped before the VIP was known */
	__u32 backend_id; /* FERRY_BACKEND_NONE for drops */
	__u32 frame_len;  /* frame as received */
	__u8 kind;	  /* FERRY_EVENT_FLOW / FERRY_EVENT_DROP */
	__u8 reason;	  /* enum ferry_flow_reason / enum ferry_drop_reason */
	__u8 proto;
	__u8 family;
	__u32 pad;
};

/* Per-CPU counters. */
struct vip_stats {
	__u64 packets;	 /* forwarded to a backend */
	__u64 bytes;	 /* inner bytes forwarded */
	__u64 new_flows; /* Maglev lookups */
	__u64 ct_hits;
	__u64 ct_misses;
	__u64 drops; /* policy, rate limit, no backend */
};

struct backend_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

#endif /* FERRY_TYPES_H */
