/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A TCP/UDP tuple of a tc (sk_buff) packet, and rewriting its addresses
 * and ports with the checksums fixed. Everything goes through the skb
 * helpers (load/store bytes, csum replace), which work whatever the skb's
 * checksum state is: locally sent and forwarded GSO packets are
 * CHECKSUM_PARTIAL, packets from the wire usually are not.
 */
#ifndef FERRY_SKB_TUPLE_H
#define FERRY_SKB_TUPLE_H

#include <linux/pkt_cls.h>
#include "common.h"
#include "eth.h"
#include "parse.h"

struct skb_tuple {
	__u32 src[4];
	__u32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 family; /* FERRY_AF_INET / FERRY_AF_INET6 */
	__u8 proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 tos;    /* IPv4 TOS */
	__u8 pad;
	__u32 l3_off;
	__u32 l4_off;
};

/* Offset of the L4 checksum field, which covers the addresses (pseudo header). */
static __always_inline __u32 skb_l4_csum_off(const struct skb_tuple *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						    : offsetof(struct udphdr, check));
}

/* IPv4 without options nor fragments: what Ferry's programs ever rewrite. */
static __always_inline bool skb_tuple_ipv4(struct __sk_buff *skb, struct skb_tuple *p)
{
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, p->l3_off, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl != 5 ||
	    (ip.frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET)))
		return false;
	p->proto = ip.protocol;
	p->tos = ip.tos;
	p->src[0] = ip.saddr;
	p->dst[0] = ip.daddr;
	p->l4_off = p->l3_off + sizeof(ip);
	return true;
}

/* IPv6 without extension headers (xdp_lb drops those for VIPs). */
static __always_inline bool skb_tuple_ipv6(struct __sk_buff *skb, struct skb_tuple *p)
{
	struct ipv6hdr ip6;

	if (bpf_skb_load_bytes(skb, p->l3_off, &ip6, sizeof(ip6)) || ip6.version != 6)
		return false;
	p->proto = ip6.nexthdr;
	addr_copy(p->src, ip6.saddr.in6_u.u6_addr32);
	addr_copy(p->dst, ip6.daddr.in6_u.u6_addr32);
	p->l4_off = p->l3_off + sizeof(ip6);
	return true;
}

/* Fills p from the IP packet of `family` at l3_off carrying TCP or UDP; false otherwise. */
static __always_inline bool skb_tuple_parse(struct __sk_buff *skb, __u32 l3_off, __u8 family,
					    struct skb_tuple *p)
{
	__be16 ports[2];
	bool ok = false;

	p->family = family;
	p->l3_off = l3_off;
	if (family == FERRY_AF_INET)
		ok = skb_tuple_ipv4(skb, p);
	else if (family == FERRY_AF_INET6)
		ok = skb_tuple_ipv6(skb, p);
	if (!ok || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
		return false;
	if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)))
		return false;
	p->sport = ports[0];
	p->dport = ports[1];
	return true;
}

/* The family skb->protocol announces, or 0. */
static __always_inline __u8 skb_family(const struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return FERRY_AF_INET;
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return FERRY_AF_INET6;
	return 0;
}

/*
 * Replaces the source (dst = false) or destination address with `to`,
 * updating the L4 checksum (pseudo header) and, for IPv4, the header
 * checksum. A UDP checksum of 0 (none, IPv4) is left alone.
 */
static __always_inline int skb_set_addr(struct __sk_buff *skb, const struct skb_tuple *p, bool dst,
					const __u32 *to)
{
	__u64 l4_flags = BPF_F_PSEUDO_HDR | (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	const __u32 *from = dst ? p->dst : p->src;

	if (p->family == FERRY_AF_INET) {
		__u32 off = p->l3_off +
			    (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));

		if (bpf_l4_csum_replace(skb, skb_l4_csum_off(p), from[0], to[0],
					l4_flags | sizeof(__u32)) ||
		    bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), from[0],
					to[0], sizeof(__u32)))
			return -1;
		return bpf_skb_store_bytes(skb, off, to, sizeof(__u32), 0);
	}

	__u32 off = p->l3_off +
		    (dst ? offsetof(struct ipv6hdr, daddr) : offsetof(struct ipv6hdr, saddr));
	__s64 diff = bpf_csum_diff((__u32 *)from, 16, (__u32 *)to, 16, 0);

	if (diff < 0 || bpf_l4_csum_replace(skb, skb_l4_csum_off(p), 0, diff, l4_flags))
		return -1;
	/*
	 * IPv6 has no header checksum: the address (+diff) and the L4 checksum
	 * (-diff) cancel out in a full-packet checksum (CHECKSUM_COMPLETE), but
	 * the pseudo-header replace above took diff off skb->csum (the IPv4
	 * rule; BPF_F_IPV6 says so only from 6.16 on). Put it back.
	 */
	bpf_csum_update(skb, diff);
	return bpf_skb_store_bytes(skb, off, to, 16, 0);
}

/* Replaces the source (dst = false) or destination port, the L4 checksum fixed. */
static __always_inline int skb_set_port(struct __sk_buff *skb, const struct skb_tuple *p, bool dst,
					__be16 to)
{
	__u64 l4_flags = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 from = dst ? p->dport : p->sport;

	if (from == to)
		return 0;
	if (bpf_l4_csum_replace(skb, skb_l4_csum_off(p), from, to, l4_flags | sizeof(__u16)))
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + (dst ? 2 : 0), &to, sizeof(to), 0);
}

#endif /* FERRY_SKB_TUPLE_H */
