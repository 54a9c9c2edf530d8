/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Internet checksums (RFC 1071). One's complement sums do not depend on
 * byte order as long as every term is read the same way, so everything
 * here works on 16-bit words exactly as they sit in the packet.
 */
#ifndef FERRY_CSUM_H
#define FERRY_CSUM_H

#include "common.h"

/* Folds a 32-bit sum of 16-bit words and complements it. */
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Checksum of an option-less IPv4 header whose check field is zero. */
static __always_inline __u16 ipv4_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < sizeof(*ip) / 2; i++)
		sum += w[i];
	return csum_fold(sum);
}

/*
 * Updates a checksum for one 16-bit word changing from old to new
 * (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')). Unlike eqn. 2 it never turns
 * a valid checksum into 0xffff, so it matches a full recomputation.
 */
static __always_inline void csum_replace16(__u16 *check, __u16 old, __u16 new)
{
	__u32 sum = (__u16) ~*check + (__u16)~old + new;

	*check = csum_fold(sum);
}

#endif /* FERRY_CSUM_H */
