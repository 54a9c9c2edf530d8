/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet work of the DSR health-check path on tc (sk_buff) packets: read a
 * TCP/UDP tuple, swap one address with the checksums fixed, and push an
 * outer IP header. Everything goes through the skb helpers (load/store
 * bytes, csum replace), which work whatever the skb's checksum state is —
 * locally sent checks are CHECKSUM_PARTIAL, replies usually are not.
 */
#ifndef FERRY_HC_PKT_H
#define FERRY_HC_PKT_H

#include <linux/pkt_cls.h>
#include "common.h"
#include "csum.h"
#include "eth.h"
#include "parse.h"

/* Check traffic carries no VLAN tag in the frame (tags ride in skb metadata). */
#define HC_L3_OFF ((__u32)L2_LEN)

struct hc_pkt {
	__u32 src[4];
	__u32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 family;              /* FERRY_AF_INET / FERRY_AF_INET6; 0: not ours to touch */
	__u8 proto;               /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 tos;                 /* IPv4 TOS, copied to the outer header */
	__u8 pad;
	__u32 l4_off;
};

/* Offset of the L4 checksum field, which covers the addresses (pseudo header). */
static __always_inline __u32 hc_l4_csum_off(const struct hc_pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
						    : offsetof(struct udphdr, check));
}

static __always_inline bool hc_parse_ipv4(struct __sk_buff *skb, struct hc_pkt *p)
{
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, HC_L3_OFF, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl != 5 ||
	    (ip.frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET)))
		return false;
	p->proto = ip.protocol;
	p->tos = ip.tos;
	p->src[0] = ip.saddr;
	p->dst[0] = ip.daddr;
	p->l4_off = HC_L3_OFF + sizeof(ip);
	return true;
}

static __always_inline bool hc_parse_ipv6(struct __sk_buff *skb, struct hc_pkt *p)
{
	struct ipv6hdr ip6;

	if (bpf_skb_load_bytes(skb, HC_L3_OFF, &ip6, sizeof(ip6)) || ip6.version != 6)
		return false;
	/* Checks send no extension headers; anything else is not a check packet. */
	p->proto = ip6.nexthdr;
	addr_copy(p->src, ip6.saddr.in6_u.u6_addr32);
	addr_copy(p->dst, ip6.daddr.in6_u.u6_addr32);
	p->l4_off = HC_L3_OFF + sizeof(ip6);
	return true;
}

/* Fills p from an untagged Ethernet frame carrying TCP or UDP; false otherwise. */
static __always_inline bool hc_parse(struct __sk_buff *skb, struct hc_pkt *p)
{
	__be16 ports[2];
	bool ok = false;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		p->family = FERRY_AF_INET;
		ok = hc_parse_ipv4(skb, p);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		p->family = FERRY_AF_INET6;
		ok = hc_parse_ipv6(skb, p);
	}
	if (!ok || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
		return false;
	if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)))
		return false;
	p->sport = ports[0];
	p->dport = ports[1];
	return true;
}

/*
 * Replaces the source (dst = false) or destination address with `to`,
 * updating the L4 checksum (pseudo header) and, for IPv4, the header
 * checksum. A UDP checksum of 0 (none, IPv4) is left alone.
 */
static __always_inline int hc_set_addr(struct __sk_buff *skb, struct hc_pkt *p, bool dst, const __u32 *to)
{
	__u64 l4_flags = BPF_F_PSEUDO_HDR | (p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	__u32 *from = dst ? p->dst : p->src;

	if (p->family == FERRY_AF_INET) {
		__u32 off = HC_L3_OFF + (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));

		if (bpf_l4_csum_replace(skb, hc_l4_csum_off(p), from[0], to[0], l4_flags | sizeof(__u32)) ||
		    bpf_l3_csum_replace(skb, HC_L3_OFF + offsetof(struct iphdr, check), from[0], to[0], sizeof(__u32)))
			return -1;
		return bpf_skb_store_bytes(skb, off, to, sizeof(__u32), 0);
	}

	__u32 off = HC_L3_OFF + (dst ? offsetof(struct ipv6hdr, daddr) : offsetof(struct ipv6hdr, saddr));
	__s64 diff = bpf_csum_diff(from, 16, (__u32 *)to, 16, 0);

	if (diff < 0 || bpf_l4_csum_replace(skb, hc_l4_csum_off(p), 0, diff, l4_flags))
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

/*
 * Pushes an outer header after the Ethernet header: IPIP or IP6IP6 from the
 * packet's own source to `outer_dst`, as xdp_lb encapsulates client packets.
 * The Ethernet header already leads to the backend (the socket connected to
 * its address), so the frame is ready to leave.
 */
static __always_inline int hc_encap(struct __sk_buff *skb, const struct hc_pkt *p, const __u32 *outer_dst)
{
	__u32 inner_len = skb->len - HC_L3_OFF;

	if (p->family == FERRY_AF_INET) {
		struct iphdr ip = {
			.version = 4, .ihl = 5, .tos = p->tos, .tot_len = bpf_htons(inner_len + sizeof(ip)),
			.frag_off = bpf_htons(IPV4_DF), .ttl = FERRY_ENCAP_TTL, .protocol = IPPROTO_IPIP,
			.saddr = p->src[0], .daddr = outer_dst[0],
		};

		ip.check = ipv4_csum(&ip);
		if (bpf_skb_adjust_room(skb, sizeof(ip), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
			return -1;
		return bpf_skb_store_bytes(skb, HC_L3_OFF, &ip, sizeof(ip), 0);
	}

	struct ipv6hdr ip6 = {
		.version = 6, .payload_len = bpf_htons(inner_len), .nexthdr = IPPROTO_IPV6,
		.hop_limit = FERRY_ENCAP_TTL,
	};

	addr_copy(ip6.saddr.in6_u.u6_addr32, p->src);
	addr_copy(ip6.daddr.in6_u.u6_addr32, outer_dst);
	if (bpf_skb_adjust_room(skb, sizeof(ip6), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
		return -1;
	return bpf_skb_store_bytes(skb, HC_L3_OFF, &ip6, sizeof(ip6), 0);
}

#endif /* FERRY_HC_PKT_H */
