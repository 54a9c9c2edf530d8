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

static __always_inline struct vip_addr_meta *addr_in_bucket(struct vip_addr_bucket *b,
							    const struct vip_addr_key *key)
{
#pragma unroll
	for (int i = 0; i < FERRY_INDEX_WAYS; i++)
		if (index_key_equal((const __u32 *)&b->slot[i].key, (const __u32 *)key))
			return &b->slot[i].meta;
	return NULL;
}

static __always_inline struct vip_meta *vip_in_bucket(struct vip_bucket *b, const struct vip_key *key)
{
#pragma unroll
	for (int i = 0; i < FERRY_INDEX_WAYS; i++)
		if (index_key_equal((const __u32 *)&b->slot[i].key, (const __u32 *)key))
			return &b->slot[i].meta;
	return NULL;
}

static __always_inline struct vip_addr_meta *addr_index_lookup(const struct vip_addr_key *key,
							       __u32 mask)
{
	__u32 h = index_hash((const __u32 *)key);
	__u32 i1 = index_b1(h, mask), i2 = index_b2(h, mask);
	struct vip_addr_bucket *b1, *b2;
	struct vip_addr_meta *meta;

	b1 = bpf_map_lookup_elem(&ferry_addr_index, &i1);
	if (!b1)
		return NULL;
	meta = addr_in_bucket(b1, key);
	if (meta)
		return meta;
	b2 = bpf_map_lookup_elem(&ferry_addr_index, &i2);
	if (b2) {
		meta = addr_in_bucket(b2, key);
		if (meta)
			return meta;
	}
	return b1->overflow ? bpf_map_lookup_elem(&ferry_vip_addrs, key) : NULL;
}

static __always_inline struct vip_meta *vip_index_lookup(const struct vip_key *key, __u32 mask)
{
	__u32 h = index_hash((const __u32 *)key);
	__u32 i1 = index_b1(h, mask), i2 = index_b2(h, mask);
	struct vip_bucket *b1, *b2;
	struct vip_meta *meta;

	b1 = bpf_map_lookup_elem(&ferry_vip_index, &i1);
	if (!b1)
		return NULL;
	meta = vip_in_bucket(b1, key);
	if (meta)
		return meta;
	b2 = bpf_map_lookup_elem(&ferry_vip_index, &i2);
	if (b2) {
		meta = vip_in_bucket(b2, key);
		if (meta)
			return meta;
	}
	return b1->overflow ? bpf_map_lookup_elem(&ferry_vips, key) : NULL;
}

static __always_inline struct vip_addr_meta *vip_addr_lookup(const struct lb_config *cfg,
							     const __u32 *addr, __u8 family)
{
	struct vip_addr_key key = {};

	addr_copy(key.addr, addr);
	key.family = family;
	return addr_index_lookup(&key, cfg->addr_index_mask);
}

/* The VIP a flow is addressed to; only TCP and UDP have VIPs. */
static __always_inline struct vip_meta *vip_lookup(const struct lb_config *cfg,
						   const struct flow_key *flow)
{
	struct vip_key key = {};
	struct vip_meta *vip;

	if (flow->proto != IPPROTO_TCP && flow->proto != IPPROTO_UDP)
		return NULL;
	addr_copy(key.addr, flow->dst);
	key.port = flow->dport;
	key.proto = flow->proto;
	key.family = flow->family;
	vip = vip_index_lookup(&key, cfg->vip_index_mask);
	if (vip)
		return vip;
	key.port = 0;
	return vip_index_lookup(&key, cfg->vip_index_mask);
}

#endif /* FERRY_VIP_H */
