/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * VIP lookups. Two levels: the address alone (is this packet ours at all?)
 * and then {address, port, protocol}, falling back to the address's
 * all-ports VIP (port 0). Both go through the VIP index (index.h). Keys
 * are zeroed whole: they are compared (and overflow maps hashed) as words.
 */
#ifndef FERRY_VIP_H
#define FERRY_VIP_H

#include "common.h"
#include "index.h"
#include "maps.h"

static __always_inline struct lb_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ferry_config, &zero);
}

/* Whether the address carries VIPs; its flags into *out. */
static __always_inline bool vip_addr_lookup(const struct lb_config *cfg, const __u32 *addr,
					    __u8 family, struct vip_addr_meta *out)
{
	struct vip_addr_key key = {};

	addr_copy(key.addr, addr);
	key.family = family;
	return index_lookup(ferry_addr_index, ferry_vip_addrs, &key, cfg->addr_index_mask, out);
}

/* The VIP a flow is addressed to, into *out; only TCP and UDP have VIPs. */
static __always_inline bool vip_lookup(const struct lb_config *cfg, const struct flow_key *flow,
				       struct vip_meta *out)
{
	struct vip_key key = {};

	if (flow->proto != IPPROTO_TCP && flow->proto != IPPROTO_UDP)
		return false;
	addr_copy(key.addr, flow->dst);
	key.port = flow->dport;
	key.proto = flow->proto;
	key.family = flow->family;
	if (index_lookup(ferry_vip_index, ferry_vips, &key, cfg->vip_index_mask, out))
		return true;
	key.port = 0;
	return index_lookup(ferry_vip_index, ferry_vips, &key, cfg->vip_index_mask, out);
}

#endif /* FERRY_VIP_H */
