/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Backend side of Ferry's tunnels: recognise IPIP / 6in4 / 4in6 / IP6IP6
 * packets addressed (inside) to one of our VIPs and remove the outer IP
 * header (tunnel.h), leaving the client's frame exactly as it reached the
 * load balancer. Anything else goes to the stack untouched.
 */
#ifndef FERRY_DECAP_H
#define FERRY_DECAP_H

#include "common.h"
#include "decap_maps.h"
#include "tunnel.h"

enum tunnel_kind {
	TUNNEL_NONE,	  /* not a tunnel packet */
	TUNNEL_OURS,	  /* inner destination is one of our VIP addresses */
	TUNNEL_NOT_OURS,  /* a tunnel packet for some other address */
	TUNNEL_BAD_INNER, /* inner header truncated or of the wrong version */
};

static __always_inline void decap_count(enum ferry_decap_counter idx, __u32 bytes)
{
	counter_add(&ferry_decap_counters, idx, bytes);
}

/* Reads the inner destination into an address key; false if it is not there. */
static __always_inline bool tunnel_inner_dst(void *data, void *data_end, const struct tunnel *t,
					     struct vip_addr_key *key)
{
	void *inner = data + t->l3_off + t->outer_len;

	key->family = t->inner_family;
	if (t->inner_family == FERRY_AF_INET) {
		struct iphdr *ip = inner;

		if ((void *)(ip + 1) > data_end || ip->version != 4)
			return false;
		key->addr[0] = ip->daddr;
	} else {
		struct ipv6hdr *ip6 = inner;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return false;
		addr_copy(key->addr, ip6->daddr.in6_u.u6_addr32);
	}
	return true;
}

static __always_inline enum tunnel_kind tunnel_classify(void *data, void *data_end,
							struct tunnel *t)
{
	struct vip_addr_key key = {};

	if (!tunnel_outer(data, data_end, t))
		return TUNNEL_NONE;

	if (!tunnel_inner_dst(data, data_end, t, &key))
		return TUNNEL_BAD_INNER;
	if (!bpf_map_lookup_elem(&ferry_decap_addrs, &key))
		return TUNNEL_NOT_OURS;
	return TUNNEL_OURS;
}

#endif /* FERRY_DECAP_H */
