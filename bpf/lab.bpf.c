/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * xdp_pass: lets every frame through. The lab attaches it to the bridge port
 * facing the load balancer: veth hands XDP_TX frames to its peer promptly
 * only when the peer runs an XDP program of its own.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
