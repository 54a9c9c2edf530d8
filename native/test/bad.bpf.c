/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Rejected by the verifier on purpose: reads the packet without a bounds
 * check. The addon test expects the verifier's complaint in the error. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_bad(struct xdp_md *ctx)
{
	__u8 *p = (void *)(long)ctx->data;

	return p[20] == 1 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
