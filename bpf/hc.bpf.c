// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Health checks through the direct-server-return path, on the load
 * balancer's own interfaces (see lib/hc_maps.h for the whole round trip):
 * tc_hc_egress sends marked check packets to the VIP inside the tunnel,
 * tc_hc_ingress gives their replies back the backend's address. Packets
 * that are not theirs get TC_ACT_UNSPEC: the next filter still sees them.
 */
#include "common.h"
#include "hc_maps.h"
#include "hc_pkt.h"

/*
 * Remembers the connection so the reply (from the VIP) can be translated
 * back; every packet sent refreshes it. A TCP reset ends the check: its
 * entry goes at once (nothing answers a reset).
 */
static __always_inline void hc_remember(struct __sk_buff *skb, const struct skb_tuple *p,
					const struct hc_target *t)
{
	struct hc_flow_key key = {
		.local_port = p->sport,
		.vip_port = p->dport,
		.family = p->family,
		.proto = p->proto,
	};
	struct hc_flow flow = {.seen_ns = bpf_ktime_get_ns()};
	struct tcphdr tcp;

	addr_copy(key.local, p->src);
	addr_copy(key.vip, t->vip);
	if (p->proto == IPPROTO_TCP && !bpf_skb_load_bytes(skb, p->l4_off, &tcp, sizeof(tcp)) &&
	    tcp.rst) {
		bpf_map_delete_elem(&ferry_hc_flows, &key);
		return;
	}
	addr_copy(flow.backend, t->backend);
	bpf_map_update_elem(&ferry_hc_flows, &key, &flow, BPF_ANY);
}

SEC("tc")
int tc_hc_egress(struct __sk_buff *skb)
{
	struct skb_tuple p = {};
	struct hc_target *t;
	__u32 slot, len = skb->len;

	if ((skb->mark & HC_MARK_MASK) != HC_MARK_BASE)
		return TC_ACT_UNSPEC;
	/*
	 * From here on the packet is a check's: dropping it fails the check
	 * (the reason is counted), sending it unencapsulated would not.
	 */
	slot = skb->mark & ~HC_MARK_MASK;
	t = bpf_map_lookup_elem(&ferry_hc_targets, &slot);
	if (!t) {
		hc_count(HC_CNT_NO_TARGET, len);
		return TC_ACT_SHOT;
	}
	if (!hc_parse(skb, &p)) {
		hc_count(HC_CNT_UNSUPPORTED, len);
		return TC_ACT_SHOT;
	}
	if (p.family != t->family || !addr_equal(p.dst, t->backend)) {
		hc_count(HC_CNT_MISMATCH, len);
		return TC_ACT_SHOT;
	}
	hc_remember(skb, &p, t);
	if (skb_set_addr(skb, &p, true, t->vip) || hc_encap(skb, &p, t->backend)) {
		hc_count(HC_CNT_ERROR, len);
		return TC_ACT_SHOT;
	}
	__sync_fetch_and_add(&t->packets, 1);
	hc_count(HC_CNT_ENCAP, len);
	return TC_ACT_OK;
}

SEC("tc")
int tc_hc_ingress(struct __sk_buff *skb)
{
	struct hc_flow_key key = {};
	struct skb_tuple p = {};
	struct hc_flow *f;

	if (!hc_parse(skb, &p))
		return TC_ACT_UNSPEC;
	key.local_port = p.dport;
	key.vip_port = p.sport;
	key.family = p.family;
	key.proto = p.proto;
	addr_copy(key.local, p.dst);
	addr_copy(key.vip, p.src);
	f = bpf_map_lookup_elem(&ferry_hc_flows, &key);
	if (!f)
		return TC_ACT_UNSPEC;
	if (bpf_ktime_get_ns() - f->seen_ns > HC_FLOW_TTL_NS) {
		/* A check long over: this reply belongs to someone else. */
		bpf_map_delete_elem(&ferry_hc_flows, &key);
		return TC_ACT_UNSPEC;
	}
	if (skb_set_addr(skb, &p, false, f->backend)) {
		hc_count(HC_CNT_ERROR, skb->len);
		return TC_ACT_SHOT;
	}
	hc_count(HC_CNT_REPLY, skb->len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
