/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Next hop of an encapsulated packet: the kernel's FIB and neighbour table
 * (bpf_fib_lookup) give the egress interface, both MACs and the route's
 * MTU, cached per backend (below). Without an answer, the configured
 * gateway MAC is used and the frame leaves through the interface it came
 * in on.
 *
 * The lookup runs with forwarding semantics (flags 0, iif = ingress), so
 * the host must have forwarding enabled for the outer family: otherwise
 * every lookup answers FWD_DISABLED and traffic takes the gateway path.
 */
#ifndef FERRY_FIB_H
#define FERRY_FIB_H

#include "common.h"
#include "eth.h"
#include "parse.h"
#include "stats.h"

/* Fills the route query from the outer header just written. */
static __always_inline int fib_query_fill(struct xdp_md *ctx, const struct packet *pkt, __u8 family,
					  struct bpf_fib_lookup *fib)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	void *l3 = data + pkt->l3_off;

	fib->ifindex = ctx->ingress_ifindex;
	if (family == FERRY_AF_INET) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end)
			return -1;
		fib->family = AF_INET;
		fib->l4_protocol = ip->protocol;
		fib->tos = ip->tos;
		fib->ipv4_src = ip->saddr;
		fib->ipv4_dst = ip->daddr;
	} else {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		fib->family = AF_INET6;
		fib->l4_protocol = ip6->nexthdr;
		fib->flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
		addr_copy(fib->ipv6_src, ip6->saddr.in6_u.u6_addr32);
		addr_copy(fib->ipv6_dst, ip6->daddr.in6_u.u6_addr32);
	}
	return 0;
}

/*
 * A backend behind a host of its own (a pod behind its node) is reached
 * through that host: the route and neighbour asked for are the host's,
 * while the outer header keeps the backend's address.
 */
static __always_inline void fib_query_via(struct bpf_fib_lookup *fib, const struct backend *be)
{
	if (addr_is_zero(be->via))
		return;
	if (fib->family == AF_INET)
		fib->ipv4_dst = be->via[0];
	else
		addr_copy(fib->ipv6_dst, be->via);
}

static __always_inline struct ethhdr *fib_eth(struct xdp_md *ctx)
{
	struct ethhdr *eth = xdp_data(ctx);

	if ((void *)(eth + 1) > xdp_data_end(ctx))
		return NULL;
	return eth;
}

/*
 * The gateway path's MTU check: bpf_check_mtu() compares an L3 length with
 * the ingress device's MTU (ifindex 0), so a VLAN tag does not count
 * against it. (The FIB path compares with the route MTU the FIB gave.)
 * Under BPF_PROG_TEST_RUN the ingress device is lo (MTU 65536).
 */
static __always_inline bool fits_ingress_mtu(struct xdp_md *ctx, __u32 l3_len)
{
	__u32 mtu_len = l3_len;

	return bpf_check_mtu(ctx, 0, &mtu_len, 0, 0) == BPF_MTU_CHK_RET_SUCCESS;
}

/* XDP_TX out of the ingress interface, or a redirect to another one. */
static __always_inline int fib_send(struct xdp_md *ctx, const struct packet *pkt, __u32 ifindex,
				    __u32 mtu, __u32 l3_len)
{
	if (l3_len > mtu)
		return drop_as(pkt, DROP_TOO_BIG);
	if (ifindex == ctx->ingress_ifindex) {
		count_event(pkt, CNT_TX);
		return XDP_TX;
	}
	count_event(pkt, CNT_REDIRECT);
	return bpf_redirect(ifindex, 0);
}

/*
 * Gateway fallback: the frame goes back out where it came in, from our own
 * MAC (the destination it arrived with) to the configured gateway.
 */
static __always_inline int gw_send(struct xdp_md *ctx, const struct packet *pkt,
				   const struct lb_config *cfg, bool lookup_failed, __u32 l3_len)
{
	struct ethhdr *eth;

	if (mac_is_zero(cfg->gw_mac))
		return drop_as(pkt, DROP_NO_ROUTE);
	eth = fib_eth(ctx);
	if (!eth)
		return drop_as(pkt, DROP_ENCAP_FAILED);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, cfg->gw_mac, ETH_ALEN);

	if (!fits_ingress_mtu(ctx, l3_len))
		return drop_as(pkt, DROP_TOO_BIG);
	if (lookup_failed)
		count_event(pkt, CNT_FIB_FALLBACK);
	count_event(pkt, CNT_TX);
	return XDP_TX;
}

/*
 * The next-hop cache. bpf_fib_lookup costs a route and a neighbour lookup
 * on every packet, while a backend's next hop changes rarely: its answer
 * (interface, MACs, route MTU) is kept per backend and ingress interface
 * (policy routing may answer by it) in a per-CPU slot for
 * lb_config.nexthop_ttl jiffies, then asked again. A route or neighbour
 * change therefore reaches the datapath within the TTL. Per CPU, because a
 * slot is rewritten by whichever packet finds it expired, and a reader on
 * another CPU must never see half a MAC.
 */
static __always_inline struct nexthop *nexthop_slot(const struct lb_config *cfg, __u32 backend_id)
{
	__u32 slot = backend_id % FERRY_NEXTHOP_SLOTS;

	if (!cfg->nexthop_ttl)
		return NULL;
	return bpf_map_lookup_elem(&ferry_nexthops, &slot);
}

/* A zeroed slot has ifindex 0: it never answers, whatever the jiffies. */
static __always_inline bool nexthop_fresh(const struct xdp_md *ctx, const struct nexthop *nh,
					  __u32 backend_id, const struct backend *be)
{
	return nh->ifindex && nh->backend_id == backend_id && nh->backend_gen == be->gen &&
	       nh->iif == ctx->ingress_ifindex && (__s32)(nh->expires - (__u32)bpf_jiffies64()) > 0;
}

static __always_inline void nexthop_store(const struct xdp_md *ctx, struct nexthop *nh,
					  const struct lb_config *cfg,
					  const struct bpf_fib_lookup *fib, __u32 backend_id,
					  const struct backend *be)
{
	nh->backend_id = backend_id;
	nh->backend_gen = be->gen;
	nh->iif = ctx->ingress_ifindex;
	nh->ifindex = fib->ifindex;
	nh->mtu = fib->mtu_result;
	nh->expires = (__u32)bpf_jiffies64() + cfg->nexthop_ttl;
	__builtin_memcpy(nh->dmac, fib->dmac, ETH_ALEN);
	__builtin_memcpy(nh->smac, fib->smac, ETH_ALEN);
}

/* Asks the FIB (with forwarding semantics) and remembers the answer in nh. */
static __always_inline int next_hop_fib(struct xdp_md *ctx, const struct packet *pkt,
					const struct backend *be, __u32 backend_id, __u32 l3_len,
					const struct lb_config *cfg, struct nexthop *nh)
{
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth;

	if (fib_query_fill(ctx, pkt, be->family, &fib) < 0)
		return drop_as(pkt, DROP_ENCAP_FAILED);
	fib_query_via(&fib, be);
	count_event(pkt, CNT_FIB_LOOKUP);
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return gw_send(ctx, pkt, cfg, true, l3_len);
	/* On success the kernel leaves the route's MTU in mtu_result. */
	if (nh)
		nexthop_store(ctx, nh, cfg, &fib, backend_id, be);

	eth = fib_eth(ctx);
	if (!eth)
		return drop_as(pkt, DROP_ENCAP_FAILED);
	eth_set_macs(eth, fib.dmac, fib.smac);
	return fib_send(ctx, pkt, fib.ifindex, fib.mtu_result, l3_len);
}

/* Where the encapsulated packet (l3_len bytes of outer IP) goes next. */
static __always_inline int next_hop(struct xdp_md *ctx, const struct packet *pkt,
				    const struct backend *be, __u32 backend_id, __u32 l3_len,
				    const struct lb_config *cfg)
{
	struct nexthop *nh;
	struct ethhdr *eth;

	if (cfg->flags & CFG_F_SKIP_FIB)
		return gw_send(ctx, pkt, cfg, false, l3_len);
	nh = nexthop_slot(cfg, backend_id);
	if (!nh || !nexthop_fresh(ctx, nh, backend_id, be))
		return next_hop_fib(ctx, pkt, be, backend_id, l3_len, cfg, nh);

	eth = fib_eth(ctx);
	if (!eth)
		return drop_as(pkt, DROP_ENCAP_FAILED);
	eth_set_macs(eth, nh->dmac, nh->smac);
	return fib_send(ctx, pkt, nh->ifindex, nh->mtu, l3_len);
}

#endif /* FERRY_FIB_H */
