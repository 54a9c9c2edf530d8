/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet work of the DSR health-check path on tc (sk_buff) packets: read a
 * TCP/UDP tuple and push an outer IP header (the address rewrites are
 * skb_tuple.h's).
 */
#ifndef FERRY_HC_PKT_H
#define FERRY_HC_PKT_H

#include <linux/pkt_cls.h>
#include "common.h"
#include "csum.h"
#include "eth.h"
#include "parse.h"
#include "skb_tuple.h"

/* Check traffic carries no VLAN tag in the frame (tags ride in skb metadata). */
#define HC_L3_OFF ((__u32)L2_LEN)

/* Fills p from an untagged Ethernet frame carrying TCP or UDP; false otherwise. */
static __always_inline bool hc_parse(struct __sk_buff *skb, struct skb_tuple *p)
{
	return skb_tuple_parse(skb, HC_L3_OFF, skb_family(skb), p);
}

/*
 * Pushes an outer header after the Ethernet header: IPIP or IP6IP6 from the
 * packet's own source to `outer_dst`, as xdp_lb encapsulates client packets.
 * The Ethernet header already leads to the backend (the socket connected to
 * its address), so the frame is ready to leave.
 */
static __always_inline int hc_encap(struct __sk_buff *skb, const struct skb_tuple *p,
				    const __u32 *outer_dst)
{
	__u32 inner_len = skb->len - HC_L3_OFF;

	if (p->family == FERRY_AF_INET) {
		struct iphdr ip = {
			.version = 4,
			.ihl = 5,
			.tos = p->tos,
			.tot_len = bpf_htons(inner_len + sizeof(ip)),
			.frag_off = bpf_htons(IPV4_DF),
			.ttl = FERRY_ENCAP_TTL,
			.protocol = IPPROTO_IPIP,
			.saddr = p->src[0],
			.daddr = outer_dst[0],
		};

		ip.check = ipv4_csum(&ip);
		if (bpf_skb_adjust_room(skb, sizeof(ip), BPF_ADJ_ROOM_MAC,
					BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
			return -1;
		return bpf_skb_store_bytes(skb, HC_L3_OFF, &ip, sizeof(ip), 0);
	}

	struct ipv6hdr ip6 = {
		.version = 6,
		.payload_len = bpf_htons(inner_len),
		.nexthdr = IPPROTO_IPV6,
		.hop_limit = FERRY_ENCAP_TTL,
	};

	addr_copy(ip6.saddr.in6_u.u6_addr32, p->src);
	addr_copy(ip6.daddr.in6_u.u6_addr32, outer_dst);
	if (bpf_skb_adjust_room(skb, sizeof(ip6), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
		return -1;
	return bpf_skb_store_bytes(skb, HC_L3_OFF, &ip6, sizeof(ip6), 0);
}

#endif /* FERRY_HC_PKT_H */
