/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Source NAT (VIP_F_SNAT), for backends that can neither decapsulate nor
 * answer the client directly (a pod behind a node that runs no Ferry): the
 * client's packet goes on to the backend's address and port from this
 * host's address and a port of its own, so the backend's reply comes back
 * here, where it gets the VIP and port back and goes on to the client.
 *
 * Two LRU maps: the port each flow took (ferry_snat_fwd, by the client's
 * 5-tuple) and the way back (ferry_snat_rev, by the reply's tuple). A port
 * is unique per backend address, port and protocol: a new flow tries
 * SNAT_TRIES random ports of lb_config's range and takes the first no
 * other flow holds (BPF_NOEXIST), else it is dropped and counted. The
 * range must stay clear of the host's own ephemeral ports
 * (net.ipv4.ip_local_port_range); the daemon warns when it is not.
 */
#ifndef FERRY_SNAT_H
#define FERRY_SNAT_H

#include "common.h"
#include "fib.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"
#include "xdp_tuple.h"

#define SNAT_TRIES 8

/* This host's address of the family, or NULL when none is configured. */
static __always_inline const __u32 *snat_source(const struct lb_config *cfg, __u8 family)
{
	if (!cfg->snat_port_max)
		return NULL;
	if (family == FERRY_AF_INET)
		return cfg->snat_src4 ? &cfg->snat_src4 : NULL;
	return addr_is_zero(cfg->snat_src6) ? NULL : cfg->snat_src6;
}

static __always_inline void snat_addr_copy(__u32 *dst, const __u32 *src, __u8 family)
{
	if (family == FERRY_AF_INET)
		dst[0] = src[0];
	else
		addr_copy(dst, src);
}

/* Frees the port a flow held for a backend it no longer goes to. */
static __always_inline void snat_release(const struct packet *pkt, const struct snat_fwd *held)
{
	struct snat_rev_key key = {
		.backend_port = held->backend_port,
		.port = held->port,
		.proto = pkt->flow.proto,
		.family = pkt->flow.family,
	};

	addr_copy(key.backend, held->backend);
	bpf_map_delete_elem(&ferry_snat_rev, &key);
}

/* Takes a free port of the range for the flow to this backend: CONTINUE, or a drop. */
static __always_inline int snat_take_port(const struct packet *pkt, const struct backend *be,
					  __be16 backend_port, const struct lb_config *cfg,
					  __be16 *port)
{
	struct snat_rev_key key = {
		.backend_port = backend_port, .proto = pkt->flow.proto, .family = pkt->flow.family};
	struct snat_rev rev = {.client_port = pkt->flow.sport, .vip_port = pkt->flow.dport};
	struct snat_fwd fwd = {.backend_port = backend_port};
	__u32 range = (__u32)cfg->snat_port_max - cfg->snat_port_min + 1;
	__u32 start = bpf_get_prandom_u32();

	addr_copy(key.backend, be->addr);
	addr_copy(rev.client, pkt->flow.src);
	addr_copy(rev.vip, pkt->flow.dst);
	for (int i = 0; i < SNAT_TRIES; i++) {
		key.port = bpf_htons(cfg->snat_port_min + (start + i) % range);
		if (bpf_map_update_elem(&ferry_snat_rev, &key, &rev, BPF_NOEXIST))
			continue;
		addr_copy(fwd.backend, be->addr);
		fwd.port = key.port;
		bpf_map_update_elem(&ferry_snat_fwd, &pkt->flow, &fwd, BPF_ANY);
		*port = key.port;
		return CONTINUE;
	}
	return drop_vip_as(pkt, pkt->vip_id, DROP_NO_SNAT_PORT);
}

/* The flow's port: the one it holds for this backend, else a new one. */
static __always_inline int snat_port(const struct packet *pkt, const struct backend *be,
				     __be16 backend_port, const struct lb_config *cfg, __be16 *port)
{
	struct snat_fwd *held = bpf_map_lookup_elem(&ferry_snat_fwd, &pkt->flow);

	if (held) {
		if (addr_equal(held->backend, be->addr) && held->backend_port == backend_port) {
			*port = held->port;
			return CONTINUE;
		}
		snat_release(pkt, held);
	}
	return snat_take_port(pkt, be, backend_port, cfg, port);
}

/* Client -> backend: from this host's address and the flow's port, to the backend's. */
static __always_inline int snat_forward(struct xdp_md *ctx, struct packet *pkt,
					const struct backend *be, __u32 backend_id,
					const struct lb_config *cfg)
{
	const __u32 *src = snat_source(cfg, pkt->flow.family);
	struct tuple_to to = {.dport = be->port ? be->port : pkt->flow.dport};
	int action;

	if (!src || be->family != pkt->flow.family)
		return drop_vip_as(pkt, pkt->vip_id, DROP_NO_SNAT_SOURCE);
	action = snat_port(pkt, be, to.dport, cfg, &to.sport);
	if (action >= 0)
		return action;
	snat_addr_copy(to.src, src, pkt->flow.family);
	addr_copy(to.dst, be->addr);
	if (xdp_rewrite_tuple(ctx, pkt, &to) < 0)
		return drop_as(pkt, DROP_MALFORMED_L4);
	count_event(pkt, CNT_SNAT);
	return next_hop(ctx, pkt, be, backend_id, pkt->ip_len, cfg);
}

/*
 * Towards the client: the FIB's answer; when the client's neighbour is not
 * resolved yet, the stack forwards the translated packet (and resolves it).
 */
static __always_inline int snat_reply_send(struct xdp_md *ctx, const struct packet *pkt,
					   const struct lb_config *cfg)
{
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth;
	int rc;

	if (cfg->flags & CFG_F_SKIP_FIB)
		return gw_send(ctx, pkt, cfg, false, pkt->ip_len);
	if (fib_query_fill(ctx, pkt, pkt->flow.family, &fib) < 0)
		return drop_as(pkt, DROP_ENCAP_FAILED);
	count_event(pkt, CNT_FIB_LOOKUP);
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return XDP_PASS;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return gw_send(ctx, pkt, cfg, true, pkt->ip_len);
	eth = fib_eth(ctx);
	if (!eth)
		return drop_as(pkt, DROP_ENCAP_FAILED);
	eth_set_macs(eth, fib.dmac, fib.smac);
	return fib_send(ctx, pkt, fib.ifindex, fib.mtu_result, pkt->ip_len);
}

/* A TCP/UDP packet to this host's address and a port of the range? (parses L4) */
static __always_inline bool snat_reply_candidate(struct xdp_md *ctx, struct packet *pkt,
						 const struct lb_config *cfg)
{
	const __u32 *src = snat_source(cfg, pkt->flow.family);
	__u16 port;

	if (!src || (pkt->flow.proto != IPPROTO_TCP && pkt->flow.proto != IPPROTO_UDP))
		return false;
	if (pkt->flow.family == FERRY_AF_INET ? pkt->flow.dst[0] != src[0]
					      : !addr_equal(pkt->flow.dst, src))
		return false;
	if (parse_l4(xdp_data(ctx), xdp_data_end(ctx), pkt) != DROP_NONE)
		return false;
	port = bpf_ntohs(pkt->flow.dport);
	return port >= cfg->snat_port_min && port <= cfg->snat_port_max;
}

/* Backend -> client: a reply to one of our ports gets the VIP's address and port back. */
static __always_inline int snat_reply(struct xdp_md *ctx, struct packet *pkt,
				      const struct lb_config *cfg)
{
	struct snat_rev_key key = {};
	struct tuple_to to = {};
	struct snat_rev *rev;

	if (!snat_reply_candidate(ctx, pkt, cfg))
		return CONTINUE;
	addr_copy(key.backend, pkt->flow.src);
	key.backend_port = pkt->flow.sport;
	key.port = pkt->flow.dport;
	key.proto = pkt->flow.proto;
	key.family = pkt->flow.family;
	rev = bpf_map_lookup_elem(&ferry_snat_rev, &key);
	if (!rev)
		return CONTINUE;
	addr_copy(to.src, rev->vip);
	addr_copy(to.dst, rev->client);
	to.sport = rev->vip_port;
	to.dport = rev->client_port;
	if (xdp_rewrite_tuple(ctx, pkt, &to) < 0)
		return CONTINUE;
	count_event(pkt, CNT_SNAT_REPLY);
	return snat_reply_send(ctx, pkt, cfg);
}

#endif /* FERRY_SNAT_H */
