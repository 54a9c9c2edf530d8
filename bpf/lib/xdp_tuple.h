/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Rewriting the addresses and ports of a parsed TCP/UDP packet in XDP,
 * with the checksums updated incrementally (RFC 1624): the IPv4 header's
 * over the addresses, the L4 one over addresses (its pseudo header) and
 * ports. XDP frames carry complete checksums (see DESIGN), so an update
 * keeps them valid. The sk_buff counterpart is skb_tuple.h.
 */
#ifndef FERRY_XDP_TUPLE_H
#define FERRY_XDP_TUPLE_H

#include "common.h"
#include "csum.h"
#include "parse.h"

/* What a packet's addresses and ports become. */
struct tuple_to {
	__u32 src[4];
	__u32 dst[4];
	__be16 sport;
	__be16 dport;
};

/* Folds old -> new into a checksum whose current value is *check. */
static __always_inline void csum_update(__u16 *check, __u32 *old, __u32 *new, __u32 bytes)
{
	__s64 sum = bpf_csum_diff(old, bytes, new, bytes, (__u16) ~*check);

	*check = csum_fold((__u32)sum);
}

/*
 * The L4 checksum field, or NULL when the packet has none to keep: an
 * IPv4 UDP datagram sent with checksum 0 stays without one.
 */
static __always_inline __u16 *l4_check(void *data, void *data_end, const struct packet *pkt)
{
	__u16 *check = pkt->flow.proto == IPPROTO_TCP
			       ? data + pkt->l4_off + offsetof(struct tcphdr, check)
			       : data + pkt->l4_off + offsetof(struct udphdr, check);

	if ((void *)(check + 1) > data_end)
		return NULL;
	if (pkt->flow.proto == IPPROTO_UDP && pkt->flow.family == FERRY_AF_INET && *check == 0)
		return NULL;
	return check;
}

/* UDP sends a computed 0 as 0xffff (0 means "no checksum"). */
static __always_inline void udp_check_fixup(const struct packet *pkt, __u16 *check)
{
	if (pkt->flow.proto == IPPROTO_UDP && *check == 0)
		*check = 0xffff;
}

static __always_inline int rewrite_ipv4(void *data, void *data_end, const struct packet *pkt,
					const struct tuple_to *to)
{
	struct iphdr *ip = data + pkt->l3_off;
	__u32 *ports = data + pkt->l4_off;
	__u32 old[3], new[3];
	__u16 *check;

	if ((void *)(ip + 1) > data_end || (void *)(ports + 1) > data_end)
		return -1;
	old[0] = ip->saddr;
	old[1] = ip->daddr;
	old[2] = *ports;
	new[0] = to->src[0];
	new[1] = to->dst[0];
	__builtin_memcpy(&new[2], &to->sport, sizeof(new[2])); /* sport, dport: one word */

	check = l4_check(data, data_end, pkt);
	if (check) {
		csum_update(check, old, new, sizeof(old));
		udp_check_fixup(pkt, check);
	}
	csum_update(&ip->check, old, new, 2 * sizeof(__u32));
	ip->saddr = new[0];
	ip->daddr = new[1];
	*ports = new[2];
	return 0;
}

static __always_inline int rewrite_ipv6(void *data, void *data_end, const struct packet *pkt,
					const struct tuple_to *to)
{
	struct ipv6hdr *ip6 = data + pkt->l3_off;
	__u32 *ports = data + pkt->l4_off;
	__u32 old[9], new[9];
	__u16 *check;

	if ((void *)(ip6 + 1) > data_end || (void *)(ports + 1) > data_end)
		return -1;
	addr_copy(old, ip6->saddr.in6_u.u6_addr32);
	addr_copy(old + 4, ip6->daddr.in6_u.u6_addr32);
	old[8] = *ports;
	addr_copy(new, to->src);
	addr_copy(new + 4, to->dst);
	__builtin_memcpy(&new[8], &to->sport, sizeof(new[8]));

	check = l4_check(data, data_end, pkt);
	if (!check)
		return -1; /* IPv6 UDP must carry one */
	csum_update(check, old, new, sizeof(old));
	udp_check_fixup(pkt, check);
	addr_copy(ip6->saddr.in6_u.u6_addr32, new);
	addr_copy(ip6->daddr.in6_u.u6_addr32, new + 4);
	*ports = new[8];
	return 0;
}

/* Rewrites the parsed TCP/UDP packet's tuple; -1 when its headers are not all there. */
static __always_inline int xdp_rewrite_tuple(struct xdp_md *ctx, const struct packet *pkt,
					     const struct tuple_to *to)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);

	if (pkt->flow.family == FERRY_AF_INET)
		return rewrite_ipv4(data, data_end, pkt, to);
	return rewrite_ipv6(data, data_end, pkt, to);
}

#endif /* FERRY_XDP_TUPLE_H */
