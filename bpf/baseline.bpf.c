// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_baseline: the benchmark's floor. It parses exactly as xdp_lb does
 * (Ethernet + tag, IPv4 / IPv6, TCP / UDP ports) and sends the frame back
 * unchanged: the cost of xdp_lb minus this is the cost of balancing.
 */
#include "common.h"
#include "parse.h"

/* Keeps the compiler from dropping loads whose results nothing else uses. */
#define keep(x) asm volatile("" : : "r"(x))

SEC("xdp")
int xdp_baseline(struct xdp_md *ctx)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	struct packet pkt = {};

	if (!parse_eth(data, data_end, &pkt) ||
	    parse_ip(data, data_end, &pkt) != DROP_NONE ||
	    parse_l4(data, data_end, &pkt) != DROP_NONE)
		return XDP_PASS;
	keep(pkt.flow.sport);
	keep(pkt.flow.dport);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
