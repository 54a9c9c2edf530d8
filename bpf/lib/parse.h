/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Parsing IPv4 / IPv6 and the TCP, UDP or ICMP header behind them into a
 * struct packet. No maps here: the parsers return a drop reason (DROP_NONE
 * when the packet is fine) and the caller decides what to count, so the
 * benchmark baseline parses with exactly the same code.
 *
 * Parsing happens in two steps because what is acceptable depends on the
 * destination: parse_ip() checks what any IP packet must satisfy before we
 * look at its addresses; parse_l4() applies the stricter rules for packets
 * to a VIP address (no options, fragments or extension headers; a complete
 * L4 header).
 */
#ifndef FERRY_PARSE_H
#define FERRY_PARSE_H

#include "common.h"
#include "eth.h"

/* IPv4 frag_off bits (host order; include/net/ip.h is not UAPI). */
#define IPV4_DF	    0x4000
#define IPV4_MF	    0x2000
#define IPV4_OFFSET 0x1fff

/*
 * Offsets are u8: a value reloaded from the stack then carries bounds the
 * verifier can use (0..255) when it is added to a packet pointer.
 */
struct packet {
	struct flow_key flow; /* 5-tuple; for a steered ICMP error, the quoted flow's */
	__u32 frame_len;      /* frame as received: the counters' byte unit */
	__u32 hash;	      /* flow hash, set once the VIP is known */
	__u32 vip_id;	      /* set once the VIP is known, FERRY_VIP_NONE before (for events) */
	__u16 ip_len; /* IP header + payload as the header says (Ethernet padding excluded) */
	__u8 l3_off;  /* IP header: 14, or 18 behind an 802.1Q tag */
	__u8 l4_off;  /* L4 header (set by parse_l4) */
	__u8 tos;     /* IPv4 TOS / IPv6 traffic class, copied to the outer header */
	__u8 df;      /* IPv4 DF set, copied to the outer header */
	__u8 syn;     /* TCP SYN without ACK: always a new flow */
	__u8 steered; /* ICMP error travelling with the flow it quotes */
};

/* Ethernet (+ tag): true for IPv4 / IPv6, with l3_off and family set. */
static __always_inline bool parse_eth(void *data, void *data_end, struct packet *pkt)
{
	__be16 proto = eth_parse(data, data_end, &pkt->l3_off);

	if (proto == bpf_htons(ETH_P_IP))
		pkt->flow.family = FERRY_AF_INET;
	else if (proto == bpf_htons(ETH_P_IPV6))
		pkt->flow.family = FERRY_AF_INET6;
	else
		return false;
	return true;
}

/*
 * Length checks compare pointers (ip + tot_len against data_end) rather
 * than lengths: the verifier forbids arithmetic on data_end.
 */
static __always_inline int parse_ipv4(void *data, void *data_end, struct packet *pkt)
{
	struct iphdr *ip = data + pkt->l3_off;
	__u16 tot_len;

	if ((void *)(ip + 1) > data_end)
		return DROP_MALFORMED_L3;
	/* Addresses first: a drop event names the source even of a bad header. */
	pkt->flow.src[0] = ip->saddr;
	pkt->flow.dst[0] = ip->daddr;
	pkt->flow.proto = ip->protocol;
	tot_len = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || ip->ihl < 5 || tot_len < ip->ihl * 4 ||
	    (void *)ip + tot_len > data_end)
		return DROP_MALFORMED_L3;

	pkt->ip_len = tot_len;
	pkt->tos = ip->tos;
	pkt->df = (ip->frag_off & bpf_htons(IPV4_DF)) != 0;
	return DROP_NONE;
}

static __always_inline int parse_ipv6(void *data, void *data_end, struct packet *pkt)
{
	struct ipv6hdr *ip6 = data + pkt->l3_off;
	__u16 payload_len;

	if ((void *)(ip6 + 1) > data_end)
		return DROP_MALFORMED_L3;
	addr_copy(pkt->flow.src, ip6->saddr.in6_u.u6_addr32);
	addr_copy(pkt->flow.dst, ip6->daddr.in6_u.u6_addr32);
	pkt->flow.proto = ip6->nexthdr;
	payload_len = bpf_ntohs(ip6->payload_len);
	if (ip6->version != 6 || (void *)(ip6 + 1) + payload_len > data_end)
		return DROP_MALFORMED_L3;

	pkt->ip_len = sizeof(*ip6) + payload_len;
	pkt->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	return DROP_NONE;
}

static __always_inline int parse_ip(void *data, void *data_end, struct packet *pkt)
{
	if (pkt->flow.family == FERRY_AF_INET)
		return parse_ipv4(data, data_end, pkt);
	return parse_ipv6(data, data_end, pkt);
}

/* VIP rules, IPv4: no options (IHL 5) and no fragments. */
static __always_inline int ipv4_l4_start(void *data, void *data_end, struct packet *pkt)
{
	struct iphdr *ip = data + pkt->l3_off;

	if ((void *)(ip + 1) > data_end)
		return DROP_MALFORMED_L3;
	if (ip->ihl != 5)
		return DROP_IP_OPTIONS;
	if (ip->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET))
		return DROP_FRAGMENT;
	pkt->l4_off = pkt->l3_off + sizeof(*ip);
	return DROP_NONE;
}

/* VIP rules, IPv6: the L4 header follows the fixed header directly. */
static __always_inline int ipv6_l4_start(struct packet *pkt)
{
	switch (pkt->flow.proto) {
	case IPPROTO_FRAGMENT:
		return DROP_FRAGMENT;
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_DSTOPTS:
	case IPPROTO_AH:
	case IPPROTO_ESP:
	case IPPROTO_MH:
	case IPPROTO_HIP:
	case IPPROTO_SHIM6:
		return DROP_IPV6_EXTHDR;
	}
	pkt->l4_off = pkt->l3_off + sizeof(struct ipv6hdr);
	return DROP_NONE;
}

static __always_inline bool pkt_is_icmp(const struct packet *pkt)
{
	if (pkt->flow.family == FERRY_AF_INET)
		return pkt->flow.proto == IPPROTO_ICMP;
	return pkt->flow.proto == IPPROTO_ICMPV6;
}

/* Does the IP packet (not merely the frame) hold len bytes at off? */
static __always_inline bool pkt_holds(const struct packet *pkt, __u32 off, __u32 len)
{
	return off + len <= (__u32)pkt->l3_off + pkt->ip_len;
}

/* Minimum L4 header we read: TCP 20, UDP 8, ICMP / ICMPv6 8; 0 = other. */
static __always_inline __u32 l4_min_len(const struct packet *pkt)
{
	if (pkt->flow.proto == IPPROTO_TCP)
		return sizeof(struct tcphdr);
	if (pkt->flow.proto == IPPROTO_UDP)
		return sizeof(struct udphdr);
	if (pkt_is_icmp(pkt))
		return sizeof(struct icmphdr); /* == sizeof(struct icmp6hdr) */
	return 0;
}

static __always_inline int parse_tcp(void *data, void *data_end, struct packet *pkt)
{
	struct tcphdr *tcp = data + pkt->l4_off;

	if ((void *)(tcp + 1) > data_end || tcp->doff < 5)
		return DROP_MALFORMED_L4;
	pkt->flow.sport = tcp->source;
	pkt->flow.dport = tcp->dest;
	pkt->syn = tcp->syn && !tcp->ack;
	return DROP_NONE;
}

static __always_inline int parse_udp(void *data, void *data_end, struct packet *pkt)
{
	struct udphdr *udp = data + pkt->l4_off;

	if ((void *)(udp + 1) > data_end)
		return DROP_MALFORMED_L4;
	pkt->flow.sport = udp->source;
	pkt->flow.dport = udp->dest;
	return DROP_NONE;
}

/*
 * VIP rules, then the L4 header: it must lie inside the IP packet. Other
 * protocols are left for the VIP lookup to pass (no VIP serves them).
 */
static __always_inline int parse_l4(void *data, void *data_end, struct packet *pkt)
{
	__u32 min_len;
	int reason;

	if (pkt->flow.family == FERRY_AF_INET)
		reason = ipv4_l4_start(data, data_end, pkt);
	else
		reason = ipv6_l4_start(pkt);
	if (reason != DROP_NONE)
		return reason;

	min_len = l4_min_len(pkt);
	if (!pkt_holds(pkt, pkt->l4_off, min_len))
		return DROP_MALFORMED_L4;
	if (pkt->flow.proto == IPPROTO_TCP)
		return parse_tcp(data, data_end, pkt);
	if (pkt->flow.proto == IPPROTO_UDP)
		return parse_udp(data, data_end, pkt);
	/* ICMP: icmp.h reads the header, bounds-checking it itself. */
	return DROP_NONE;
}

#endif /* FERRY_PARSE_H */
