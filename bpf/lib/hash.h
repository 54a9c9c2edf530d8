/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow hash: Linux jhash2() (include/linux/jhash.h, Bob Jenkins' lookup3)
 * over the 10 u32 words of struct flow_key as they lie in memory, seeded
 * with lb_config.hash_seed. Every Ferry host with the same seed picks the
 * same backend for a flow, so hosts behind ECMP agree. src/maglev
 * reimplements this bit for bit: change both or neither.
 */
#ifndef FERRY_HASH_H
#define FERRY_HASH_H

#include "common.h"

#define JHASH_INITVAL  0xdeadbeefU
#define FLOW_KEY_WORDS (sizeof(struct flow_key) / sizeof(__u32))

_Static_assert(sizeof(struct flow_key) == 40, "flow hash is defined over 10 words");

static __always_inline void jhash_mix(__u32 *a, __u32 *b, __u32 *c)
{
	*a -= *c;
	*a ^= rol32(*c, 4);
	*c += *b;
	*b -= *a;
	*b ^= rol32(*a, 6);
	*a += *c;
	*c -= *b;
	*c ^= rol32(*b, 8);
	*b += *a;
	*a -= *c;
	*a ^= rol32(*c, 16);
	*c += *b;
	*b -= *a;
	*b ^= rol32(*a, 19);
	*a += *c;
	*c -= *b;
	*c ^= rol32(*b, 4);
	*b += *a;
}

static __always_inline void jhash_final(__u32 *a, __u32 *b, __u32 *c)
{
	*c ^= *b;
	*c -= rol32(*b, 14);
	*a ^= *c;
	*a -= rol32(*c, 11);
	*b ^= *a;
	*b -= rol32(*a, 25);
	*c ^= *b;
	*c -= rol32(*b, 16);
	*a ^= *c;
	*a -= rol32(*c, 4);
	*b ^= *a;
	*b -= rol32(*a, 14);
	*c ^= *b;
	*c -= rol32(*b, 24);
}

/* jhash2(k, 10, seed): three full rounds, then the 10th word alone. */
static __always_inline __u32 jhash_flow_key(const struct flow_key *key, __u32 seed)
{
	const __u32 *k = (const __u32 *)key;
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (FLOW_KEY_WORDS << 2) + seed;
#pragma unroll
	for (int i = 0; i < 9; i += 3) {
		a += k[i];
		b += k[i + 1];
		c += k[i + 2];
		jhash_mix(&a, &b, &c);
	}
	a += k[9];
	jhash_final(&a, &b, &c);
	return c;
}

/*
 * With source affinity the ports do not take part, so every connection
 * of a client goes to one backend (the conntrack key keeps them).
 */
static __always_inline __u32 flow_hash(const struct flow_key *flow, __u32 vip_flags, __u32 seed)
{
	struct flow_key key = *flow;

	if (vip_flags & VIP_F_SRC_AFFINITY) {
		key.sport = 0;
		key.dport = 0;
	}
	return jhash_flow_key(&key, seed);
}

#endif /* FERRY_HASH_H */
