// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Backend decapsulation, for backends whose kernel does not terminate
 * Ferry's tunnels itself: xdp_decap on the NIC, or tc_decap on tc ingress
 * (faster on veth, where XDP copies every packet). Same decision, same
 * counters; they differ only in how the outer header is removed.
 */
#include <linux/pkt_cls.h>
#include "common.h"
#include "decap.h"

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	struct tunnel t = {};
	__u32 len = xdp_frame_len(ctx);

	decap_count(DECAP_CNT_RX, len);
	switch (tunnel_classify(xdp_data(ctx), xdp_data_end(ctx), &t)) {
	case TUNNEL_NONE:
		decap_count(DECAP_CNT_PASS, len);
		return XDP_PASS;
	case TUNNEL_NOT_OURS:
		decap_count(DECAP_CNT_NOT_OURS, len);
		return XDP_PASS;
	case TUNNEL_BAD_INNER:
		decap_count(DECAP_CNT_ERROR, len);
		return XDP_DROP;
	case TUNNEL_OURS:
		break;
	}
	if (xdp_strip_outer(ctx, &t)) {
		decap_count(DECAP_CNT_ERROR, len);
		return XDP_DROP;
	}
	decap_count(DECAP_CNT_DONE, len);
	return XDP_PASS;
}

SEC("tc")
int tc_decap(struct __sk_buff *skb)
{
	struct tunnel t = {};
	__u32 len = skb->len;

	decap_count(DECAP_CNT_RX, len);
	skb_pull_headers(skb);
	switch (tunnel_classify((void *)(long)skb->data, (void *)(long)skb->data_end, &t)) {
	case TUNNEL_NONE:
		decap_count(DECAP_CNT_PASS, len);
		return TC_ACT_OK;
	case TUNNEL_NOT_OURS:
		decap_count(DECAP_CNT_NOT_OURS, len);
		return TC_ACT_OK;
	case TUNNEL_BAD_INNER:
		decap_count(DECAP_CNT_ERROR, len);
		return TC_ACT_SHOT;
	case TUNNEL_OURS:
		break;
	}
	if (skb_strip_outer(skb, &t)) {
		decap_count(DECAP_CNT_ERROR, len);
		return TC_ACT_SHOT;
	}
	decap_count(DECAP_CNT_DONE, len);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
