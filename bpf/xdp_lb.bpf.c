// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_lb: Ferry's load balancer, one packet's journey.
 *
 *   parse -> (a reply to source NAT: back to the client)
 *         -> VIP address? -> (ICMP: echo / steer) -> VIP -> policy
 *         -> backend (conntrack, else Maglev) -> encapsulate -> next hop
 *                                                  (or up the stack for a
 *                                                  local backend; or source
 *                                                  NAT for a VIP_F_SNAT VIP)
 *
 * Anything not addressed to a VIP address goes to the stack untouched.
 * Every stage lives in lib/ by concern; each returns an XDP verdict or
 * CONTINUE. Drops carry a reason (enum ferry_drop_reason) that userspace
 * names; drops and sampled new flows are also reported as events
 * (lib/events.h).
 */
#include "common.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"
#include "vip.h"
#include "icmp.h"
#include "policy.h"
#include "lb.h"
#include "maglev.h"
#include "encap.h"
#include "fib.h"
#include "snat.h"

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	struct packet pkt = {.frame_len = xdp_frame_len(ctx), .vip_id = FERRY_VIP_NONE};
	struct vip_addr_meta addr;
	struct lb_config *cfg;
	struct vip_meta vip;
	struct backend *be;
	__u32 backend_id;
	int reason, action;

	count_event(&pkt, CNT_RX);
	/* An array map always has element 0: this only satisfies the verifier. */
	cfg = config_get();
	if (!cfg)
		return XDP_PASS;

	/* Headers: IP that is ours or malformed; the rest is the stack's. */
	if (!parse_eth(data, data_end, &pkt))
		return pass_as(&pkt, CNT_PASS_NON_IP);
	reason = parse_ip(data, data_end, &pkt);
	if (reason != DROP_NONE)
		return drop_as(&pkt, reason);
	action = snat_reply(ctx, &pkt, cfg);
	if (action >= 0)
		return action;
	if (!vip_addr_lookup(cfg, pkt.flow.dst, pkt.flow.family, &addr))
		return pass_as(&pkt, CNT_PASS_NON_VIP);
	reason = parse_l4(data, data_end, &pkt);
	if (reason != DROP_NONE)
		return drop_as(&pkt, reason);

	/* ICMP: answer echo; an MTU error continues as the flow it quotes. */
	if (pkt_is_icmp(&pkt)) {
		action = icmp_process(ctx, &pkt, &addr);
		if (action >= 0)
			return action;
	}

	/* The VIP, and whether this source may use it. A steered ICMP error
	 * comes from a router, not the client: policy is not about it. */
	if (!vip_lookup(cfg, &pkt.flow, &vip))
		return pass_as(&pkt, CNT_PASS_VIP_OTHER);
	pkt.vip_id = vip.vip_id;
	if (!pkt.steered) {
		action = policy_check(&pkt, &vip);
		if (action >= 0)
			return action;
	}

	action = lb_select_backend(&pkt, &vip, cfg, &be, &backend_id);
	if (action >= 0)
		return action;
	count_forward(&pkt, vip.vip_id, backend_id);
	if ((vip.flags & VIP_F_SNAT) && !(be->flags & BACKEND_F_LOCAL)) {
		/* An ICMP error about a translated flow is not translated (yet). */
		if (pkt.steered)
			return pass_as(&pkt, CNT_PASS_VIP_OTHER);
		return snat_forward(ctx, &pkt, be, backend_id, cfg);
	}

	action = encap(ctx, &pkt, be, cfg);
	if (action >= 0)
		return action;
	if (pkt.steered)
		count_event(&pkt, CNT_ICMP_STEERED);
	if (be->flags & BACKEND_F_LOCAL)
		return pass_as(&pkt, CNT_LOCAL);
	return next_hop(ctx, &pkt, be, backend_id, encap_outer_len(&pkt, be->family), cfg);
}

/* The daemon's table switch (maglev.h), run with BPF_PROG_RUN. */
SEC("syscall")
int ferry_maglev_publish(struct maglev_publish *args)
{
	return maglev_publish(args);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
