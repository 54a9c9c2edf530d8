/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ferry's tunnels seen from the receiving end: find the outer header of an
 * IPIP / 6in4 / 4in6 / IP6IP6 packet and remove it, leaving the client's
 * frame exactly as it reached the load balancer: same L2 header (tag
 * included), ethertype of the inner family. Used by the backend decap
 * programs (decap.h) and the node programs (node.bpf.c).
 *
 * Only the shapes xdp_lb produces are recognised: an outer IPv4 header
 * without options and not fragmented, or an outer IPv6 header followed
 * directly by the inner packet.
 */
#ifndef FERRY_TUNNEL_H
#define FERRY_TUNNEL_H

#include "common.h"
#include "eth.h"
#include "parse.h"

/* Ethernet + tag + outer IPv6 + inner IPv6: all a decision needs to read. */
#define TUNNEL_HDRS_MAX (L2_VLAN_LEN + 2 * sizeof(struct ipv6hdr))

struct tunnel {
	__u32 outer_dst[4]; /* the outer destination (IPv4 in [0]) */
	__u8 l3_off;	    /* outer IP header */
	__u8 outer_len;	    /* bytes decap removes: 20 or 40 */
	__u8 outer_family;  /* FERRY_AF_INET / FERRY_AF_INET6 */
	__u8 inner_family;  /* FERRY_AF_INET / FERRY_AF_INET6 */
};

/* The inner family an outer protocol / next header announces, or 0. */
static __always_inline __u8 tunnel_inner_family(__u8 proto)
{
	if (proto == IPPROTO_IPIP)
		return FERRY_AF_INET;
	if (proto == IPPROTO_IPV6)
		return FERRY_AF_INET6;
	return 0;
}

static __always_inline __u8 tunnel_outer_ipv4(void *data, void *data_end, struct tunnel *t)
{
	struct iphdr *ip = data + t->l3_off;

	if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl != 5 ||
	    (ip->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET)))
		return 0;
	t->outer_len = sizeof(*ip);
	t->outer_family = FERRY_AF_INET;
	t->outer_dst[0] = ip->daddr;
	return tunnel_inner_family(ip->protocol);
}

static __always_inline __u8 tunnel_outer_ipv6(void *data, void *data_end, struct tunnel *t)
{
	struct ipv6hdr *ip6 = data + t->l3_off;

	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return 0;
	t->outer_len = sizeof(*ip6);
	t->outer_family = FERRY_AF_INET6;
	addr_copy(t->outer_dst, ip6->daddr.in6_u.u6_addr32);
	return tunnel_inner_family(ip6->nexthdr);
}

/* Finds a tunnel's outer header; sets t->inner_family (0: not a tunnel packet). */
static __always_inline bool tunnel_outer(void *data, void *data_end, struct tunnel *t)
{
	__be16 proto = eth_parse(data, data_end, &t->l3_off);

	if (proto == bpf_htons(ETH_P_IP))
		t->inner_family = tunnel_outer_ipv4(data, data_end, t);
	else if (proto == bpf_htons(ETH_P_IPV6))
		t->inner_family = tunnel_outer_ipv6(data, data_end, t);
	return t->inner_family != 0;
}

static __always_inline __be16 tunnel_inner_ethertype(const struct tunnel *t)
{
	return t->inner_family == FERRY_AF_INET ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
}

/*
 * XDP: copy the L2 header forward over the outer IP header, then let the
 * frame start there. The copy comes first because after
 * bpf_xdp_adjust_head() the old L2 header lies outside the frame.
 */
static __always_inline int xdp_strip_outer(struct xdp_md *ctx, const struct tunnel *t)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	void *dst = data + t->outer_len;

	/* Both copies hold L2_VLAN_LEN bytes: the frame has an L2 header,
	 * the outer header and a complete inner IP header (>= 20 bytes). */
	if (data + L2_VLAN_LEN > data_end || dst + L2_VLAN_LEN > data_end)
		return -1;
	eth_copy(dst, data, t->l3_off == L2_VLAN_LEN, tunnel_inner_ethertype(t));
	return bpf_xdp_adjust_head(ctx, t->outer_len);
}

/* Values from linux/bpf.h 6.3+, missing from the 6.1 headers we build with. */
#define ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)

/*
 * tc: bpf_skb_adjust_room() removes the bytes right after the MAC header
 * and keeps skb metadata right:
 * - DECAP_L3_*: the new L3 header's family. Required when it changes
 *   (4in6, 6in4) so skb->protocol follows; for the same family the kernel
 *   accepts it and changes nothing, so we always pass it.
 * - FIXED_GSO: gso_size is the inner segment payload, which removing an
 *   outer header does not change; without the flag the kernel would grow it
 *   by the removed bytes and GRO-merged TCP could be dropped later
 *   (UDP GSO even requires the flag).
 * - NO_CSUM_RESET: a NIC's CHECKSUM_UNNECESSARY verdict was about the inner
 *   L4 checksum (IPIP has no outer one) and stays true.
 * The Ethernet header stays as it was, ethertype included: we rewrite it.
 * 802.1Q tags reach tc ingress already moved to skb->vlan_tci; a tag still
 * in the data (e.g. BPF_PROG_TEST_RUN) leaves skb->protocol 0x8100, which
 * the helper refuses: that packet counts as an error.
 */
static __always_inline int skb_strip_outer(struct __sk_buff *skb, const struct tunnel *t)
{
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_NO_CSUM_RESET |
		      (t->inner_family == FERRY_AF_INET ? ADJ_ROOM_DECAP_L3_IPV4
							: ADJ_ROOM_DECAP_L3_IPV6);
	struct ethhdr *eth;

	if (bpf_skb_adjust_room(skb, -(__s32)t->outer_len, BPF_ADJ_ROOM_MAC, flags))
		return -1;
	eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return -1;
	eth->h_proto = tunnel_inner_ethertype(t);
	return 0;
}

/* tc reads the linear part only: pull in the headers a decision needs. */
static __always_inline void skb_pull_headers(struct __sk_buff *skb)
{
	__u32 want = skb->len < TUNNEL_HDRS_MAX ? skb->len : TUNNEL_HDRS_MAX;

	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, want);
}

#endif /* FERRY_TUNNEL_H */
