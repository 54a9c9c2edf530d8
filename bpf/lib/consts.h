/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ferry datapath constants: every tunable in one place.
 *
 * Map sizes here are the defaults compiled into the object. The daemon
 * overrides them at load time (bpf_map__set_max_entries) from its config,
 * so an operator never rebuilds the object to change a size.
 *
 * This file is part of the ABI shared with src/datapath/abi.ts; a test
 * checks the numbers there against these.
 */
#ifndef FERRY_CONSTS_H
#define FERRY_CONSTS_H

/* Default map capacities (load-time parameters). */
#ifndef FERRY_MAX_VIPS
#define FERRY_MAX_VIPS 1024 /* vip ids 0 .. FERRY_MAX_VIPS-1 */
#endif
#ifndef FERRY_MAX_VIP_ADDRS
#define FERRY_MAX_VIP_ADDRS 1024 /* distinct VIP addresses */
#endif
#ifndef FERRY_MAX_BACKENDS
#define FERRY_MAX_BACKENDS 65536 /* backend ids 0 .. FERRY_MAX_BACKENDS-1 */
#endif
#ifndef FERRY_CT_SIZE
#define FERRY_CT_SIZE 1000000 /* conntrack entries (at least) */
#endif
/* ferry_ct buckets for FERRY_CT_SIZE: a power of 2, times FERRY_CT_WAYS >= the entries. */
#define FERRY_CT_BUCKETS 524288
#ifndef FERRY_MAX_POLICY_RULES
#define FERRY_MAX_POLICY_RULES 65536 /* allow/deny CIDRs over all VIPs */
#endif
#ifndef FERRY_MAGLEV_SLOTS
#define FERRY_MAGLEV_SLOTS 4194304 /* u32 slots for every Maglev table (16 MiB) */
#endif
#ifndef FERRY_MAX_NODE_ENDPOINTS
#define FERRY_MAX_NODE_ENDPOINTS 65536 /* ferry_node_endpoints: (frontend, local endpoint) pairs */
#endif
#ifndef FERRY_NAT_REV_ENTRIES
#define FERRY_NAT_REV_ENTRIES 262144 /* ferry_nat_rev: translated connections remembered */
#endif
#ifndef FERRY_SNAT_ENTRIES
#define FERRY_SNAT_ENTRIES 262144 /* ferry_snat_fwd / ferry_snat_rev: translated connections */
#endif
#ifndef FERRY_EVENTS_RING_BYTES
#define FERRY_EVENTS_RING_BYTES 1048576 /* ferry_events ring buffer: a power of 2, >= a page */
#endif

/* A Maglev slot holding this id has no backend: packets hashed to it drop. */
#define FERRY_BACKEND_NONE 0xffffffffU

/* An event's vip_id when the packet was dropped before its VIP was known. */
#define FERRY_VIP_NONE 0xffffffffU

/* Address families as stored in keys (readable in bpftool dumps). */
#define FERRY_AF_INET  4
#define FERRY_AF_INET6 6

/* Outer header fields of encapsulated packets. */
#define FERRY_ENCAP_TTL 64

/* A conntrack entry's last_seen is refreshed at most this often (jiffies:
 * 0.25 to 2.5 s by the kernel's HZ), so that an established flow does not
 * write its cache line on every packet. */
#define FERRY_CT_TOUCH_JIFFIES 250

/* Entries per conntrack bucket (conntrack.h): three fill a cache line. */
#define FERRY_CT_WAYS 3

/* Maglev slots per element of ferry_maglev: one cache line. */
#define FERRY_MAGLEV_BLOCK 16

/* Table pointers one run of ferry_maglev_publish sets. */
#define FERRY_MAGLEV_PUBLISH_MAX 64

/* Slots per bucket of the VIP index (index.h). */
#define FERRY_INDEX_WAYS 4

/* Per-CPU next-hop cache slots (fib.h): backend ids share slot id % this. */
#define FERRY_NEXTHOP_SLOTS 4096

/* vip_meta.flags */
#define VIP_F_POLICY	   (1U << 0) /* consult the policy trie for this VIP */
#define VIP_F_ALLOWLIST	   (1U << 1) /* no matching rule means deny */
#define VIP_F_SRC_AFFINITY (1U << 2) /* hash source+destination address only */
#define VIP_F_SNAT	   (1U << 3) /* source NAT to the backend, replies return through this host */

/* vip_addr_meta.flags */
#define VIP_ADDR_F_ECHO (1U << 0) /* answer ICMP echo requests */

/* backend.state */
#define BACKEND_FREE	 0 /* id not in use */
#define BACKEND_ACTIVE	 1 /* new and existing flows */
#define BACKEND_DRAINING 2 /* existing flows only */
#define BACKEND_DOWN	 3 /* no flows: existing ones are re-chosen */

/*
 * backend.flags. A local backend runs on this host: its encapsulated
 * packets go up the stack (XDP_PASS), where tc_node_in (node.bpf.c) takes
 * the outer header off and translates them to the backend's own port.
 */
#define BACKEND_F_LOCAL (1U << 0)

/* lb_config.flags */
#define CFG_F_SKIP_FIB (1U << 0) /* always use gw_mac, never bpf_fib_lookup */
#define CFG_F_RECORD_AFTER_HANDSHAKE                                                               \
	(1U << 1) /* TCP flows recorded by their first packet without SYN */

/* ferry_event.kind */
#define FERRY_EVENT_FLOW 1 /* a sampled new flow: reason is enum ferry_flow_reason */
#define FERRY_EVENT_DROP 2 /* a drop: reason is enum ferry_drop_reason */

/* policy_value.action */
#define POLICY_ALLOW 1
#define POLICY_DENY  2

/*
 * Drop reasons: index into the ferry_drops map. Names live in
 * src/datapath/abi.ts (DROP_REASONS); keep both lists in the same order.
 */
enum ferry_drop_reason {
	DROP_NONE = 0,
	DROP_MALFORMED_L3, /* bad version, IHL < 5, length fields inconsistent, truncated IP header */
	DROP_MALFORMED_L4,    /* VIP address, L4 header truncated */
	DROP_IP_OPTIONS,      /* VIP address, IPv4 header carries options */
	DROP_FRAGMENT,	      /* VIP address, IPv4 fragment or IPv6 fragment header */
	DROP_IPV6_EXTHDR,     /* VIP address, IPv6 extension header other than fragment */
	DROP_POLICY,	      /* source denied by the VIP's allow/deny rules */
	DROP_RATE_LIMIT,      /* VIP's new-flow rate exceeded */
	DROP_NO_BACKEND,      /* VIP has no table, or the slot holds no backend */
	DROP_BAD_BACKEND,     /* Maglev slot names a free or foreign backend id */
	DROP_NO_ENCAP_SOURCE, /* no outer source prefix configured for the family */
	DROP_ENCAP_FAILED,    /* bpf_xdp_adjust_head or bounds failure while encapsulating */
	DROP_TOO_BIG,	      /* encapsulated packet would exceed the egress MTU */
	DROP_NO_ROUTE,	      /* fib lookup failed and no gateway MAC configured */
	DROP_ICMP_MALFORMED,  /* ICMP error to a VIP whose quoted packet cannot be parsed */
	DROP_NO_SNAT_SOURCE, /* source NAT without this host's address of the family, or to another family */
	DROP_NO_SNAT_PORT, /* source NAT found no free port for the backend */
	DROP_MAX,
};

/*
 * Global event counters: index into the ferry_counters map. Names live in
 * src/datapath/abi.ts (COUNTERS); keep both lists in the same order.
 */
enum ferry_counter {
	CNT_RX = 0,	       /* every packet seen by xdp_lb */
	CNT_PASS_NON_IP,       /* not IPv4/IPv6: passed */
	CNT_PASS_NON_VIP,      /* destination is not a VIP address: passed */
	CNT_PASS_VIP_OTHER,    /* VIP address, but no VIP for port/protocol: passed */
	CNT_TX,		       /* sent back out of the ingress interface */
	CNT_REDIRECT,	       /* redirected to another interface */
	CNT_FIB_FALLBACK,      /* next hop from gw_mac because the fib lookup failed */
	CNT_ICMP_ECHO,	       /* echo requests answered */
	CNT_ICMP_STEERED,      /* frag-needed / packet-too-big steered to a backend */
	CNT_CT_STALE,	       /* conntrack hit naming a backend no longer valid */
	CNT_EVENTS,	       /* events written to the ferry_events ring buffer */
	CNT_EVENTS_SUPPRESSED, /* events over the per-second cap: not written */
	CNT_EVENTS_LOST, /* events the full ring buffer refused (the daemon reads too slowly) */
	CNT_FIB_LOOKUP,	 /* next hops asked of bpf_fib_lookup (the rest came from ferry_nexthops) */
	CNT_SYN_UNRECORDED, /* SYNs balanced but not recorded (record_tcp_flows: after_handshake) */
	CNT_LOCAL,	    /* encapsulated for a backend on this host: passed up to tc_node_in */
	CNT_SNAT,	    /* translated to a backend (source NAT) */
	CNT_SNAT_REPLY,	    /* a backend's reply translated back to the client */
	CNT_MAX,
};

/*
 * Why a new flow went to Maglev (ferry_event.reason of a flow event). Names
 * live in src/datapath/abi.ts (FLOW_REASONS); keep both lists in the same order.
 */
enum ferry_flow_reason {
	FLOW_REASON_MAGLEV = 0, /* no conntrack entry, or a TCP SYN */
	FLOW_REASON_CT_STALE,	/* the conntrack entry named a backend no longer valid: re-picked */
	FLOW_REASON_MAX,
};

/* Decap program counters: index into ferry_decap_counters. */
enum ferry_decap_counter {
	DECAP_CNT_RX = 0,   /* every packet seen */
	DECAP_CNT_DONE,	    /* decapsulated and passed up */
	DECAP_CNT_NOT_OURS, /* tunnel packet whose inner destination is not a local VIP */
	DECAP_CNT_PASS,	    /* not a tunnel packet: passed untouched */
	DECAP_CNT_ERROR,    /* adjust failure or truncated inner header: dropped */
	DECAP_CNT_MAX,
};

/* Node program counters (node.bpf.c): index into ferry_node_counters. */
enum ferry_node_counter {
	NODE_CNT_DNAT = 0, /* tc_node_in: decapsulated and translated to a local endpoint */
	NODE_CNT_NOT_OURS, /* tc_node_in: a tunnel packet no endpoint entry names: passed */
	NODE_CNT_REV_NAT,  /* tc_node_out: an endpoint's reply given back the VIP and port */
	NODE_CNT_ERROR,	   /* a rewrite the kernel refused, or a cut inner header: dropped */
	NODE_CNT_MAX,
};

#endif /* FERRY_CONSTS_H */
