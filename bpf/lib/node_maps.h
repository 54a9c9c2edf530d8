/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the node programs (node.bpf.c): port translation where the
 * endpoint lives. Pinned by name under the load balancer's pin root (the
 * names are the node programs' own), so translated connections keep their
 * way back across a daemon restart.
 *
 * The round trip: xdp_lb encapsulates a client's packet, unchanged, to the
 * endpoint's address (through its node); the node's tc_node_in finds the
 * (frontend, endpoint) pair in ferry_node_endpoints, takes the outer header
 * off, rewrites the destination to the endpoint and its own port and
 * remembers the frontend in ferry_nat_rev; the endpoint's reply gets the
 * frontend back as its source in tc_node_out and leaves straight to the
 * client.
 */
#ifndef FERRY_NODE_MAPS_H
#define FERRY_NODE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"

/* A frontend (what the client addressed) and one local endpoint of it. */
struct node_ep_key {
	__u32 vip[4];	  /* the inner destination */
	__u32 backend[4]; /* the outer destination: an endpoint on this node */
	__be16 vip_port;  /* 0: every port */
	__u8 proto;	  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;	  /* FERRY_AF_INET / FERRY_AF_INET6, of both */
};

struct node_ep {
	__be16 port; /* the endpoint's own port (0: the client's, for a frontend of every port) */
	__u16 pad;
};

/* A translated connection as the endpoint's reply shows it. */
struct nat_rev_key {
	__u32 backend[4];
	__u32 client[4];
	__be16 backend_port;
	__be16 client_port;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

struct nat_rev {
	__u32 vip[4]; /* the reply's source becomes this again */
	__be16 vip_port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FERRY_MAX_NODE_ENDPOINTS);
	__type(key, struct node_ep_key);
	__type(value, struct node_ep);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_node_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FERRY_NAT_REV_ENTRIES);
	__type(key, struct nat_rev_key);
	__type(value, struct nat_rev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_nat_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NODE_CNT_MAX);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_node_counters SEC(".maps");

static __always_inline void node_count(enum ferry_node_counter idx, __u32 bytes)
{
	counter_add(&ferry_node_counters, idx, bytes);
}

#endif /* FERRY_NODE_MAPS_H */
