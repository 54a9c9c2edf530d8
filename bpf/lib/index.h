/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The VIP index: the first thing every packet asks ("is this address ours,
 * which VIP is this?"), so it must cost no more than a few loads.
 *
 * A kernel hash map lookup costs a call, jhash and a bucket walk, about
 * 40 ns here; two of them per packet (address, then VIP) were most of what
 * an established flow paid. Array lookups are inlined by the verifier, so
 * the index is an array of buckets that this code probes itself:
 *
 *   - a key's 5 u32 words hash (index_hash) to two buckets, b1 and b2;
 *   - each bucket holds FERRY_INDEX_WAYS slots; the key is in one of them,
 *   - or, when both buckets were full, in the kernel hash map of its kind,
 *     and b1's `overflow` counts it: only then does a miss pay for the map.
 *
 * The daemon places keys (src/datapath/vipindex.ts mirrors index_hash bit
 * for bit) and sizes each index at a quarter full at most, so overflow is
 * for unlucky or chosen keys only: they stay correct, merely slower.
 * Slots are written in place: an entry is filled with its key's family
 * still 0 (empty) and published by a second write, and emptied the same
 * way in reverse, so a lookup never matches a half-written entry.
 */
#ifndef FERRY_INDEX_H
#define FERRY_INDEX_H

#include "common.h"

#define INDEX_KEY_WORDS 5

/*
 * A rotate and a multiply per word, then a full avalanche (the finaliser
 * of "lowbias32"), so every key bit reaches the low bits that pick the
 * bucket. Not seeded: keys are the operator's, and a colliding set only
 * makes its own lookups slower (overflow), never wrong.
 */
static __always_inline __u32 index_hash(const __u32 *w)
{
	__u32 h = 0x9e3779b9;

#pragma unroll
	for (int i = 0; i < INDEX_KEY_WORDS; i++)
		h = rol32(h ^ w[i], 13) * 0x85ebca6b;
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	h *= 0x846ca68b;
	h ^= h >> 16;
	return h;
}

/* The two buckets of a key: the hash, and the hash with its halves swapped. */
static __always_inline __u32 index_b1(__u32 h, __u32 mask)
{
	return h & mask;
}

static __always_inline __u32 index_b2(__u32 h, __u32 mask)
{
	return rol32(h, 16) & mask;
}

/* Five words equal; the first alone rules out almost every other key. */
static __always_inline bool index_key_equal(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && ((a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0;
}

#define barrier() asm volatile("" ::: "memory")

/*
 * The probe, written once for both kinds of index (their slots differ only
 * in types): whether `key` is in bucket `b`, its meta copied into *out.
 * The meta is copied out and the key checked again after: the daemon may
 * empty a slot and fill it with another key meanwhile (two writes, each two
 * steps), and a copy taken across that would be another VIP's under this
 * key. Then it is a miss, never a wrong VIP.
 */
#define index_in_bucket(bkt, wanted, dst)                                                          \
	({                                                                                         \
		bool found_ = false;                                                               \
		_Pragma("unroll") for (int i_ = 0; i_ < FERRY_INDEX_WAYS; i_++)                    \
		{                                                                                  \
			const __u32 *k_ = (const __u32 *)&(bkt)->slot[i_].key;                     \
                                                                                                   \
			if (!index_key_equal(k_, (const __u32 *)(wanted)))                         \
				continue;                                                          \
			barrier();                                                                 \
			*(dst) = (bkt)->slot[i_].meta;                                             \
			barrier();                                                                 \
			found_ = index_key_equal(k_, (const __u32 *)(wanted));                     \
			break;                                                                     \
		}                                                                                  \
		found_;                                                                            \
	})

/*
 * A lookup in an index (array map `buckets`) and, when the key's first
 * bucket counts overflow, in its hash map `spill`. (Parameter names must
 * not be member names: the preprocessor would replace those too.)
 */
#define index_lookup(buckets, spill, wanted, mask, dst)                                            \
	({                                                                                         \
		__u32 h_ = index_hash((const __u32 *)(wanted));                                    \
		__u32 i1_ = index_b1(h_, mask), i2_ = index_b2(h_, mask);                          \
		typeof(dst) over_ = NULL;                                                          \
		bool hit_ = false;                                                                 \
		typeof((buckets).value) b1_ = bpf_map_lookup_elem(&(buckets), &i1_);               \
                                                                                                   \
		if (b1_) {                                                                         \
			hit_ = index_in_bucket(b1_, wanted, dst);                                  \
			if (!hit_) {                                                               \
				typeof(b1_) b2_ = bpf_map_lookup_elem(&(buckets), &i2_);           \
                                                                                                   \
				hit_ = b2_ && index_in_bucket(b2_, wanted, dst);                   \
			}                                                                          \
			if (!hit_ && b1_->overflow)                                                \
				over_ = bpf_map_lookup_elem(&(spill), wanted);                     \
			if (over_) {                                                               \
				*(dst) = *over_;                                                   \
				hit_ = true;                                                       \
			}                                                                          \
		}                                                                                  \
		hit_;                                                                              \
	})

#endif /* FERRY_INDEX_H */
