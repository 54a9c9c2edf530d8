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

/*
 * A lookup copies the meta out of the slot and checks the key again after:
 * the daemon may empty a slot and fill it with another key meanwhile (two
 * writes, each two steps), and a copy taken across that would be another
 * VIP's under this key. Then it is a miss, never a wrong VIP.
 */
#define barrier() asm volatile("" ::: "memory")

static __always_inline bool addr_in_bucket(const struct vip_addr_bucket *b, const struct vip_addr_key *key,
					   struct vip_addr_meta *out)
{
#pragma unroll
	for (int i = 0; i < FERRY_INDEX_WAYS; i++) {
		const __u32 *k = (const __u32 *)&b->slot[i].key;

		if (!index_key_equal(k, (const __u32 *)key))
			continue;
		barrier();
		*out = b->slot[i].meta;
		barrier();
		return index_key_equal(k, (const __u32 *)key);
	}
	return false;
}

static __always_inline bool vip_in_bucket(const struct vip_bucket *b, const struct vip_key *key,
					  struct vip_meta *out)
{
#pragma unroll
	for (int i = 0; i < FERRY_INDEX_WAYS; i++) {
		const __u32 *k = (const __u32 *)&b->slot[i].key;

		if (!index_key_equal(k, (const __u32 *)key))
			continue;
		barrier();
		*out = b->slot[i].meta;
		barrier();
		return index_key_equal(k, (const __u32 *)key);
	}
	return false;
}

static __always_inline bool addr_index_lookup(const struct vip_addr_key *key, __u32 mask,
					      struct vip_addr_meta *out)
{
	__u32 h = index_hash((const __u32 *)key);
	__u32 i1 = index_b1(h, mask), i2 = index_b2(h, mask);
	struct vip_addr_bucket *b1, *b2;
	struct vip_addr_meta *over;

	b1 = bpf_map_lookup_elem(&ferry_addr_index, &i1);
	if (!b1)
		return false;
	if (addr_in_bucket(b1, key, out))
		return true;
	b2 = bpf_map_lookup_elem(&ferry_addr_index, &i2);
	if (b2 && addr_in_bucket(b2, key, out))
		return true;
	over = b1->overflow ? bpf_map_lookup_elem(&ferry_vip_addrs, key) : NULL;
	if (!over)
		return false;
	*out = *over;
	return true;
}

static __always_inline bool vip_index_lookup(const struct vip_key *key, __u32 mask, struct vip_meta *out)
{
	__u32 h = index_hash((const __u32 *)key);
	__u32 i1 = index_b1(h, mask), i2 = index_b2(h, mask);
	struct vip_bucket *b1, *b2;
	struct vip_meta *over;

	b1 = bpf_map_lookup_elem(&ferry_vip_index, &i1);
	if (!b1)
		return false;
	if (vip_in_bucket(b1, key, out))
		return true;
	b2 = bpf_map_lookup_elem(&ferry_vip_index, &i2);
	if (b2 && vip_in_bucket(b2, key, out))
		return true;
	over = b1->overflow ? bpf_map_lookup_elem(&ferry_vips, key) : NULL;
	if (!over)
		return false;
	*out = *over;
	return true;
}

/* Whether the address carries VIPs; its flags into *out. */
static __always_inline bool vip_addr_lookup(const struct lb_config *cfg, const __u32 *addr, __u8 family,
					    struct vip_addr_meta *out)
{
	struct vip_addr_key key = {};

	addr_copy(key.addr, addr);
	key.family = family;
	return addr_index_lookup(&key, cfg->addr_index_mask, out);
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
	if (vip_index_lookup(&key, cfg->vip_index_mask, out))
		return true;
	key.port = 0;
	return vip_index_lookup(&key, cfg->vip_index_mask, out);
}

#endif /* FERRY_VIP_H */
