/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Layer 2: Ethernet with at most one 802.1Q tag.
 *
 * The ethertype of the payload is always the two bytes just before the IP
 * header, at l3_off - 2, with or without a tag. Encapsulation and decap
 * move the whole L2 header and rewrite only that ethertype, so a tag (and
 * its priority bits) survives both.
 */
#ifndef FERRY_ETH_H
#define FERRY_ETH_H

#include "common.h"

struct vlan_hdr {
	__be16 tci;
	__be16 proto; /* ethertype of the payload */
};

#define L2_LEN	    (sizeof(struct ethhdr))
#define L2_VLAN_LEN (sizeof(struct ethhdr) + sizeof(struct vlan_hdr))

/*
 * Returns the payload's ethertype (network order) and its offset in
 * *l3_off, or 0 when the frame is too short to tell.
 */
static __always_inline __be16 eth_parse(void *data, void *data_end, __u8 *l3_off)
{
	struct ethhdr *eth = data;
	struct vlan_hdr *vlan;

	if ((void *)(eth + 1) > data_end)
		return 0;
	*l3_off = L2_LEN;
	if (eth->h_proto != bpf_htons(ETH_P_8021Q))
		return eth->h_proto;

	vlan = (void *)(eth + 1);
	if ((void *)(vlan + 1) > data_end)
		return 0;
	*l3_off = L2_VLAN_LEN;
	return vlan->proto;
}

/*
 * Writes at dst the L2 header found at src (MACs, and the tag if any) with
 * the payload ethertype replaced. The caller has checked both for
 * L2_VLAN_LEN bytes; they must not overlap (the IP headers that encap and
 * decap insert or remove are at least 20 bytes long, more than 18).
 * 16-bit copies: aligned whenever the frame starts on an even address, as
 * drivers lay it out, and still fine elsewhere on x86-64 and arm64.
 */
static __always_inline void eth_copy(void *dst, const void *src, bool vlan, __be16 ethertype)
{
	__u16 *d = dst;
	const __u16 *s = src;

#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++) /* 2 x 6 bytes of MAC */
		d[i] = s[i];
	if (vlan) {
		d[6] = s[6]; /* 0x8100 */
		d[7] = s[7]; /* TCI */
		d[8] = ethertype;
	} else {
		d[6] = ethertype;
	}
}

static __always_inline void eth_swap_macs(struct ethhdr *eth)
{
	__u16 *w = (void *)eth;
	__u16 tmp;

#pragma unroll
	for (int i = 0; i < ETH_ALEN / 2; i++) {
		tmp = w[i];
		w[i] = w[i + ETH_ALEN / 2];
		w[i + ETH_ALEN / 2] = tmp;
	}
}

static __always_inline void eth_set_macs(struct ethhdr *eth, const __u8 *dst, const __u8 *src)
{
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
}

static __always_inline bool mac_is_zero(const __u8 *mac)
{
	return (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) == 0;
}

#endif /* FERRY_ETH_H */
