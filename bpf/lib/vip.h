/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * VIP lookups. Two levels: the address alone (is this packet ours at all?)
 * and then {address, port, protocol}, falling back to the address's
 * all-ports VIP (port 0). Keys are zeroed whole: hash maps compare bytes.
 */
#ifndef FERRY_VIP_H
#define FERRY_VIP_H

#include "common.h"
#include "maps.h"

static __always_inline struct vip_addr_meta *vip_addr_lookup(const __u32 *addr, __u8 family)
{
	struct vip_addr_key key = {};

	addr_copy(key.addr, addr);
	key.family = family;
	return bpf_map_lookup_elem(&ferry_vip_addrs, &key);
}

/* The VIP a flow is addressed to; only TCP and UDP have VIPs. */
static __always_inline struct vip_meta *vip_lookup(const struct flow_key *flow)
{
	struct vip_key key = {};
	struct vip_meta *vip;

	if (flow->proto != IPPROTO_TCP && flow->proto != IPPROTO_UDP)
		return NULL;
	addr_copy(key.addr, flow->dst);
	key.port = flow->dport;
	key.proto = flow->proto;
	key.family = flow->family;
	vip = bpf_map_lookup_elem(&ferry_vips, &key);
	if (vip)
		return vip;
	key.port = 0;
	return bpf_map_lookup_elem(&ferry_vips, &key);
}

static __always_inline struct lb_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ferry_config, &zero);
}

#endif /* FERRY_VIP_H */
