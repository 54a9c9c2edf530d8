/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP to a VIP address.
 *
 * Echo requests are answered here when the address allows it: the VIP
 * lives on many backends and none of them would see the request anyway.
 *
 * "Fragmentation needed" / "packet too big" errors are the reason path MTU
 * discovery works: a router on the way to the client sends them about a
 * reply the backend sent from the VIP (DSR), so they arrive here. They
 * quote the start of that reply; turning the quote around gives the
 * client's flow, which then goes to the backend that owns it.
 */
#ifndef FERRY_ICMP_H
#define FERRY_ICMP_H

#include "common.h"
#include "csum.h"
#include "eth.h"
#include "parse.h"
#include "stats.h"

#define ECHO_REPLY_TTL 64

/* The quote's first 8 L4 bytes; for TCP and UDP they start with the ports. */
struct l4_ports {
	__be16 source;
	__be16 dest;
	__u32 rest;
};

/* Swaps in the reply's type; the type/code word is the checksum's first. */
static __always_inline void icmp_set_type(void *icmp, __u8 type)
{
	__u16 *word = icmp;
	__u16 old = *word;

	*(__u8 *)icmp = type;
	csum_replace16((__u16 *)icmp + 1, old, *word);
}

static __always_inline int icmp4_echo_reply(struct xdp_md *ctx, const struct packet *pkt)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	struct ethhdr *eth = data;
	struct iphdr *ip = data + pkt->l3_off;
	struct icmphdr *icmp = data + pkt->l4_off;
	__be32 addr;

	if ((void *)(eth + 1) > data_end || (void *)(ip + 1) > data_end ||
	    (void *)(icmp + 1) > data_end)
		return drop_as(pkt, DROP_MALFORMED_L4);

	eth_swap_macs(eth);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->ttl = ECHO_REPLY_TTL;
	ip->check = 0;
	ip->check = ipv4_csum(ip);
	icmp_set_type(icmp, ICMP_ECHOREPLY);

	count_event(pkt, CNT_ICMP_ECHO);
	return XDP_TX;
}

/* Swapping the addresses leaves the ICMPv6 pseudo-header sum unchanged. */
static __always_inline int icmp6_echo_reply(struct xdp_md *ctx, const struct packet *pkt)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + pkt->l3_off;
	struct icmp6hdr *icmp6 = data + pkt->l4_off;
	__u32 addr[4];

	if ((void *)(eth + 1) > data_end || (void *)(ip6 + 1) > data_end ||
	    (void *)(icmp6 + 1) > data_end)
		return drop_as(pkt, DROP_MALFORMED_L4);

	eth_swap_macs(eth);
	addr_copy(addr, ip6->saddr.in6_u.u6_addr32);
	addr_copy(ip6->saddr.in6_u.u6_addr32, ip6->daddr.in6_u.u6_addr32);
	addr_copy(ip6->daddr.in6_u.u6_addr32, addr);
	ip6->hop_limit = ECHO_REPLY_TTL;
	icmp_set_type(icmp6, ICMPV6_ECHO_REPLY);

	count_event(pkt, CNT_ICMP_ECHO);
	return XDP_TX;
}

/*
 * Turns the packet's flow into the one the quote belongs to: the quote is
 * the backend's reply (VIP -> client), the flow key is the client's
 * (client -> VIP). The quote must come from this VIP address.
 */
static __always_inline bool quote_to_flow(struct packet *pkt, const __u32 *q_src,
					  const __u32 *q_dst, __u8 q_proto,
					  const struct l4_ports *q_ports)
{
	if (q_proto != IPPROTO_TCP && q_proto != IPPROTO_UDP)
		return false;
	if (!addr_equal(q_src, pkt->flow.dst))
		return false;
	addr_copy(pkt->flow.src, q_dst);
	addr_copy(pkt->flow.dst, q_src);
	pkt->flow.sport = q_ports->dest;
	pkt->flow.dport = q_ports->source;
	pkt->flow.proto = q_proto;
	pkt->steered = 1;
	return true;
}

/* The quote: an IPv4 header without options and 8 bytes of TCP/UDP. */
static __always_inline int icmp4_steer(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	__u32 q_off = pkt->l4_off + sizeof(struct icmphdr);
	struct iphdr *q = data + q_off;
	struct l4_ports *ports = (void *)(q + 1);
	__u32 q_src[4] = {}, q_dst[4] = {};

	if ((void *)(ports + 1) > data_end || !pkt_holds(pkt, q_off, sizeof(*q) + sizeof(*ports)) ||
	    q->version != 4 || q->ihl != 5)
		return drop_as(pkt, DROP_ICMP_MALFORMED);
	q_src[0] = q->saddr;
	q_dst[0] = q->daddr;
	if (!quote_to_flow(pkt, q_src, q_dst, q->protocol, ports))
		return drop_as(pkt, DROP_ICMP_MALFORMED);
	return CONTINUE;
}

/* The quote: an IPv6 header directly followed by 8 bytes of TCP/UDP. */
static __always_inline int icmp6_steer(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	__u32 q_off = pkt->l4_off + sizeof(struct icmp6hdr);
	struct ipv6hdr *q = data + q_off;
	struct l4_ports *ports = (void *)(q + 1);

	if ((void *)(ports + 1) > data_end || !pkt_holds(pkt, q_off, sizeof(*q) + sizeof(*ports)) ||
	    q->version != 6)
		return drop_as(pkt, DROP_ICMP_MALFORMED);
	if (!quote_to_flow(pkt, q->saddr.in6_u.u6_addr32, q->daddr.in6_u.u6_addr32, q->nexthdr,
			   ports))
		return drop_as(pkt, DROP_ICMP_MALFORMED);
	return CONTINUE;
}

static __always_inline int icmp4_process(struct xdp_md *ctx, struct packet *pkt,
					 const struct vip_addr_meta *addr)
{
	struct icmphdr *icmp = xdp_data(ctx) + pkt->l4_off;

	if ((void *)(icmp + 1) > xdp_data_end(ctx))
		return drop_as(pkt, DROP_MALFORMED_L4);
	if (icmp->type == ICMP_ECHO && icmp->code == 0 && (addr->flags & VIP_ADDR_F_ECHO))
		return icmp4_echo_reply(ctx, pkt);
	if (icmp->type == ICMP_DEST_UNREACH && icmp->code == ICMP_FRAG_NEEDED)
		return icmp4_steer(ctx, pkt);
	return pass_as(pkt, CNT_PASS_VIP_OTHER);
}

static __always_inline int icmp6_process(struct xdp_md *ctx, struct packet *pkt,
					 const struct vip_addr_meta *addr)
{
	struct icmp6hdr *icmp6 = xdp_data(ctx) + pkt->l4_off;

	if ((void *)(icmp6 + 1) > xdp_data_end(ctx))
		return drop_as(pkt, DROP_MALFORMED_L4);
	if (icmp6->icmp6_type == ICMPV6_ECHO_REQUEST && (addr->flags & VIP_ADDR_F_ECHO))
		return icmp6_echo_reply(ctx, pkt);
	if (icmp6->icmp6_type == ICMPV6_PKT_TOOBIG)
		return icmp6_steer(ctx, pkt);
	return pass_as(pkt, CNT_PASS_VIP_OTHER);
}

/*
 * Returns a verdict for echo and for ICMP we leave to the stack, or
 * CONTINUE with pkt->flow now the quoted client flow, to be balanced.
 */
static __always_inline int icmp_process(struct xdp_md *ctx, struct packet *pkt,
					const struct vip_addr_meta *addr)
{
	if (pkt->flow.family == FERRY_AF_INET)
		return icmp4_process(ctx, pkt, addr);
	return icmp6_process(ctx, pkt, addr);
}

#endif /* FERRY_ICMP_H */
