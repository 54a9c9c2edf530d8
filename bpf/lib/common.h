/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What every Ferry BPF program shares: the UAPI headers it parses with, the
 * "continue" verdict, and address helpers.
 */
#ifndef FERRY_COMMON_H
#define FERRY_COMMON_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "types.h"

/*
 * A stage returns an XDP verdict (>= 0) when it has decided the packet's
 * fate, or CONTINUE when the packet goes on to the next stage:
 *
 *	action = stage(...);
 *	if (action >= 0)
 *		return action;
 */
#define CONTINUE (-1)

/* Socket families for bpf_fib_lookup (linux/socket.h is not UAPI-clean). */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/*
 * ICMPv4: linux/icmp.h pulls glibc's socket headers through linux/if.h,
 * which do not build for the BPF target, so the few bits we need are here.
 */
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest; /* echo id + sequence, or unused / next-hop MTU */
};

#define ICMP_ECHOREPLY	  0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO	  8
#define ICMP_FRAG_NEEDED  4 /* code of ICMP_DEST_UNREACH */

/* IPv6 extension headers missing from linux/in6.h of 6.1. */
#define IPPROTO_HIP   139
#define IPPROTO_SHIM6 140

static __always_inline void *xdp_data(const struct xdp_md *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *xdp_data_end(const struct xdp_md *ctx)
{
	return (void *)(long)ctx->data_end;
}

/*
 * Frame length for the byte counters. Subtracting two packet pointers is
 * allowed to privileged loaders only (CAP_PERFMON), which an XDP loader is.
 */
static __always_inline __u32 xdp_frame_len(const struct xdp_md *ctx)
{
	return xdp_data_end(ctx) - xdp_data(ctx);
}

/*
 * Addresses are 4 words in network order. clang 14 does not inline
 * __builtin_memcmp for BPF, so compare and copy word by word.
 */
static __always_inline bool addr_equal(const __u32 *a, const __u32 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

static __always_inline void addr_copy(__u32 *dst, const __u32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

static __always_inline bool addr_is_zero(const __u32 *a)
{
	return (a[0] | a[1] | a[2] | a[3]) == 0;
}

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> (32 - shift));
}

/*
 * Adds one packet of `bytes` to entry idx of a per-CPU array of struct
 * counter: per-CPU, so a plain increment is exact.
 */
static __always_inline void counter_add(void *map, __u32 idx, __u32 bytes)
{
	struct counter *c = bpf_map_lookup_elem(map, &idx);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

#endif /* FERRY_COMMON_H */
