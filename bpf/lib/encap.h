/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Encapsulation for direct server return: an outer IPv4 or IPv6 header
 * (by the backend's family) in front of the client's packet, which stays
 * byte for byte as received. The backend decaps and answers the client
 * directly from the VIP.
 *
 * The outer source address varies per flow inside a configured prefix so
 * that the backend's NIC (RSS hashes outer headers) spreads flows over its
 * queues; IPv6 also carries the flow hash in the flow label.
 */
#ifndef FERRY_ENCAP_H
#define FERRY_ENCAP_H

#include "common.h"
#include "csum.h"
#include "eth.h"
#include "parse.h"
#include "stats.h"

#define IPV6_FLOWLABEL_MASK 0xfffff

/*
 * Ethernet padding is not part of the packet (a 40-byte TCP ACK arrives in
 * a 60-byte frame): cut it, so the tunnel carries the outer packet and
 * nothing after it.
 */
static __always_inline bool trim_padding(struct xdp_md *ctx, const struct packet *pkt)
{
	__u32 end = (__u32)pkt->l3_off + pkt->ip_len;

	if (pkt->frame_len <= end)
		return true;
	return bpf_xdp_adjust_tail(ctx, -(int)(pkt->frame_len - end)) == 0;
}

/*
 * Opens room bytes between the L2 header and the IP header: the frame
 * grows at the front, the L2 header (tag included) is copied down to the
 * new start with the outer family as its ethertype, and the inner packet
 * does not move. Returns where the outer header goes, or NULL.
 */
static __always_inline void *encap_push(struct xdp_md *ctx, const struct packet *pkt, __u32 room,
					__be16 ethertype)
{
	bool vlan = pkt->l3_off == L2_VLAN_LEN;
	void *data, *data_end, *outer;

	if (!trim_padding(ctx, pkt) || bpf_xdp_adjust_head(ctx, -(int)room))
		return NULL;
	data = xdp_data(ctx);
	data_end = xdp_data_end(ctx);
	/* The old L2 header is now at data + room, and at least a 20-byte IP
	 * header follows it: room + L2_VLAN_LEN bytes are always there. */
	if (data + room + L2_VLAN_LEN > data_end)
		return NULL;
	eth_copy(data, data + room, vlan, ethertype);

	/* l3_off is a variable to the verifier, so the pointer built from it
	 * needs a bounds check of its own. */
	outer = data + pkt->l3_off;
	if (outer + room > data_end)
		return NULL;
	return outer;
}

static __always_inline __u8 encap_inner_proto(const struct packet *pkt)
{
	return pkt->flow.family == FERRY_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;
}

/*
 * IPv4 outer header. DF follows the inner IPv4 packet, so a path MTU
 * problem reaches the client as frag-needed instead of fragmenting in the
 * tunnel. The id is always 0: should a router fragment an outer packet
 * without DF, fragments of different packets could share an id at the
 * backend's reassembly. Ferry's links carry the outer header without
 * fragmenting (MTU >= 1520, see DESIGN), which is what makes 0 safe.
 */
static __always_inline int encap_ipv4(struct xdp_md *ctx, const struct packet *pkt,
				      const struct backend *be, const struct lb_config *cfg)
{
	struct iphdr outer = {
		.version = 4,
		.ihl = 5,
		.tos = pkt->tos,
		.tot_len = bpf_htons(pkt->ip_len + sizeof(struct iphdr)),
		.frag_off = pkt->df ? bpf_htons(IPV4_DF) : 0,
		.ttl = FERRY_ENCAP_TTL,
		.protocol = encap_inner_proto(pkt),
		.saddr = cfg->src4_prefix | (pkt->hash & cfg->src4_hostmask),
		.daddr = be->addr[0],
	};
	struct iphdr *ip;

	if (!cfg->src4_prefix)
		return drop_as(pkt, DROP_NO_ENCAP_SOURCE);
	outer.check = ipv4_csum(&outer);

	ip = encap_push(ctx, pkt, sizeof(outer), bpf_htons(ETH_P_IP));
	if (!ip)
		return drop_as(pkt, DROP_ENCAP_FAILED);
	*ip = outer;
	return CONTINUE;
}

static __always_inline int encap_ipv6(struct xdp_md *ctx, const struct packet *pkt,
				      const struct backend *be, const struct lb_config *cfg)
{
	/* version 6 | traffic class | flow label, as one word */
	__be32 first_word =
		bpf_htonl(6U << 28 | (__u32)pkt->tos << 20 | (pkt->hash & IPV6_FLOWLABEL_MASK));
	struct ipv6hdr outer = {
		.payload_len = bpf_htons(pkt->ip_len),
		.nexthdr = encap_inner_proto(pkt),
		.hop_limit = FERRY_ENCAP_TTL,
	};
	struct ipv6hdr *ip6;
	__u32 *saddr = outer.saddr.in6_u.u6_addr32;

	if (addr_is_zero(cfg->src6_prefix))
		return drop_as(pkt, DROP_NO_ENCAP_SOURCE);
	__builtin_memcpy(&outer, &first_word, sizeof(first_word));
	addr_copy(saddr, cfg->src6_prefix);
	saddr[3] |= pkt->hash & cfg->src6_hostmask;
	addr_copy(outer.daddr.in6_u.u6_addr32, be->addr);

	ip6 = encap_push(ctx, pkt, sizeof(outer), bpf_htons(ETH_P_IPV6));
	if (!ip6)
		return drop_as(pkt, DROP_ENCAP_FAILED);
	*ip6 = outer;
	return CONTINUE;
}

static __always_inline int encap(struct xdp_md *ctx, const struct packet *pkt,
				 const struct backend *be, const struct lb_config *cfg)
{
	if (be->family == FERRY_AF_INET)
		return encap_ipv4(ctx, pkt, be, cfg);
	if (be->family == FERRY_AF_INET6)
		return encap_ipv6(ctx, pkt, be, cfg);
	return drop_as(pkt, DROP_BAD_BACKEND);
}

/* Size of the outer IP packet, for the MTU check. */
static __always_inline __u32 encap_outer_len(const struct packet *pkt, __u8 family)
{
	return pkt->ip_len +
	       (family == FERRY_AF_INET ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));
}

#endif /* FERRY_ENCAP_H */
