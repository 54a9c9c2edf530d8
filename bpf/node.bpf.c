// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The node programs: port translation where an endpoint lives, so direct
 * server return works for endpoints that listen on a port of their own
 * and cannot decapsulate (ordinary Kubernetes pods). The round trip is in
 * lib/node_maps.h. tc_node_in runs on tc ingress of the node's interfaces,
 * tc_node_out on tc egress; packets not theirs get TC_ACT_UNSPEC, so the
 * next filter still sees them.
 */
#include "common.h"
#include "node_maps.h"
#include "skb_tuple.h"
#include "tunnel.h"

/*
 * The entry for a tunnel packet: its inner tuple names the frontend, its
 * outer destination the endpoint. The endpoint's address replaces the
 * inner destination, so both must be of one family.
 */
static __always_inline struct node_ep *node_endpoint(struct __sk_buff *skb, const struct tunnel *t,
						     struct skb_tuple *in)
{
	struct node_ep_key key = {};
	struct node_ep *ep;

	if (t->l3_off != L2_LEN || t->inner_family != t->outer_family)
		return NULL;
	if (!skb_tuple_parse(skb, L2_LEN + t->outer_len, t->inner_family, in))
		return NULL;
	addr_copy(key.vip, in->dst);
	addr_copy(key.backend, t->outer_dst);
	key.vip_port = in->dport;
	key.proto = in->proto;
	key.family = in->family;
	ep = bpf_map_lookup_elem(&ferry_node_endpoints, &key);
	if (ep)
		return ep;
	/* A frontend of every port (port 0) keeps the client's port. */
	key.vip_port = 0;
	return bpf_map_lookup_elem(&ferry_node_endpoints, &key);
}

/*
 * Remembers the frontend for the endpoint's reply. An entry already right
 * is not written again: the LRU lookup has kept it fresh.
 */
static __always_inline void node_remember(const struct skb_tuple *in, const __u32 *backend,
					  __be16 port)
{
	struct nat_rev_key key = {
		.backend_port = port,
		.client_port = in->sport,
		.proto = in->proto,
		.family = in->family,
	};
	struct nat_rev rev = {.vip_port = in->dport};
	struct nat_rev *have;

	addr_copy(key.backend, backend);
	addr_copy(key.client, in->src);
	addr_copy(rev.vip, in->dst);
	have = bpf_map_lookup_elem(&ferry_nat_rev, &key);
	if (have && have->vip_port == rev.vip_port && addr_equal(have->vip, rev.vip))
		return;
	bpf_map_update_elem(&ferry_nat_rev, &key, &rev, BPF_ANY);
}

SEC("tc")
int tc_node_in(struct __sk_buff *skb)
{
	struct skb_tuple in = {};
	struct tunnel t = {};
	struct node_ep *ep;
	__be16 port;

	skb_pull_headers(skb);
	if (!tunnel_outer((void *)(long)skb->data, (void *)(long)skb->data_end, &t))
		return TC_ACT_UNSPEC;
	ep = node_endpoint(skb, &t, &in);
	if (!ep) {
		node_count(NODE_CNT_NOT_OURS, skb->len);
		return TC_ACT_UNSPEC;
	}
	port = ep->port ? ep->port : in.dport;
	if (skb_strip_outer(skb, &t))
		goto error;
	in.l3_off = L2_LEN;
	in.l4_off -= t.outer_len;
	node_remember(&in, t.outer_dst, port);
	if (skb_set_port(skb, &in, true, port) || skb_set_addr(skb, &in, true, t.outer_dst))
		goto error;
	node_count(NODE_CNT_DNAT, skb->len);
	return TC_ACT_OK;
error:
	node_count(NODE_CNT_ERROR, skb->len);
	return TC_ACT_SHOT;
}

SEC("tc")
int tc_node_out(struct __sk_buff *skb)
{
	struct nat_rev_key key = {};
	struct skb_tuple p = {};
	struct nat_rev *rev;

	if (!skb_tuple_parse(skb, L2_LEN, skb_family(skb), &p))
		return TC_ACT_UNSPEC;
	addr_copy(key.backend, p.src);
	addr_copy(key.client, p.dst);
	key.backend_port = p.sport;
	key.client_port = p.dport;
	key.proto = p.proto;
	key.family = p.family;
	rev = bpf_map_lookup_elem(&ferry_nat_rev, &key);
	if (!rev)
		return TC_ACT_UNSPEC;
	if (skb_set_port(skb, &p, false, rev->vip_port) || skb_set_addr(skb, &p, false, rev->vip)) {
		node_count(NODE_CNT_ERROR, skb->len);
		return TC_ACT_SHOT;
	}
	node_count(NODE_CNT_REV_NAT, skb->len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
