/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Conntrack: which backend each flow went to, so that established flows
 * keep their backend when the Maglev table changes.
 *
 * A set-associative flow table rather than a kernel LRU hash map. The LRU
 * map costs a call, a bucket head and an element in other cache lines, and
 * an insert takes a bucket lock and an LRU list lock: about 300 ns per
 * lookup over 200,000 flows here, and most of a new flow's cost. The table
 * is an array of 64-byte buckets (the map is mmapable, so buckets are
 * cache-line aligned) probed inline: one cache line per packet.
 *
 *   - The flow's 5-tuple is hashed once into 64 bits (ct_hash, with a
 *     fixed seed: conntrack must not move when the Maglev seed does), about
 *     twice as fast as jhash2. The hash is the fingerprint stored instead
 *     of the 40-byte key, and its high half picks the bucket. Two flows of
 *     a bucket share a fingerprint with odds of about 1 in 2^(63 - bucket
 *     bits) per pair (the bits that chose the bucket are the same).
 *   - A bucket holds FERRY_CT_WAYS entries and when each was last seen
 *     (jiffies). A new flow takes a free entry or the least recently seen
 *     one: eviction is per bucket, an LRU in miniature. An evicted flow
 *     follows the Maglev table, which names the same backend unless the
 *     table changed since the flow began.
 *   - Writers claim an entry by swapping its fingerprint to CT_FP_BUSY
 *     (one atomic compare-and-swap; a writer that loses skips recording,
 *     the flow is recorded by its next packet), write the backend, then
 *     publish the fingerprint. Readers read the fingerprint, the backend,
 *     and the fingerprint again: if it changed, the entry was being
 *     replaced and the packet is balanced afresh. x86-64 keeps stores and
 *     loads in program order (TSO), which this relies on (an arm64 port
 *     needs acquire and release). Left open: the entry evicted and its own
 *     flow recorded again, both while one reader is between its two
 *     fingerprint reads (two writes from other CPUs within nanoseconds),
 *     which could give that one packet the evicting flow's backend.
 */
#ifndef FERRY_CONNTRACK_H
#define FERRY_CONNTRACK_H

#include "common.h"
#include "hash.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"

#define CT_FP_EMPTY 0ULL
#define CT_FP_BUSY  1ULL
/* Fingerprints never take the two reserved values. */
#define CT_FP_MIN 2ULL

/* Conntrack's own hash seed: fixed, so entries survive a change of lb_config.hash_seed. */
#define CT_SEED 0x466572727943544fULL

static __always_inline __u64 rol64(__u64 w, unsigned int s)
{
	return (w << s) | (w >> (64 - s));
}

/*
 * A multiply-rotate over the key's five 64-bit words, then MurmurHash3's
 * 64-bit finaliser so that every key bit reaches every hash bit. The words
 * are assembled from u32 loads: the key on the stack is only 4-aligned.
 */
static __always_inline __u64 ct_hash(const struct flow_key *key)
{
	const __u32 *k = (const __u32 *)key;
	__u64 h = CT_SEED;

#pragma unroll
	for (int i = 0; i < FLOW_KEY_WORDS; i += 2) {
		h ^= (__u64)k[i] | (__u64)k[i + 1] << 32;
		h = rol64(h * 0x9e3779b97f4a7c15ULL, 31);
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

#define READ_ONCE64(x)	   (*(volatile __u64 *)&(x))
#define READ_ONCE32(x)	   (*(volatile __u32 *)&(x))
#define WRITE_ONCE32(x, v) (*(volatile __u32 *)&(x) = (v))

/* Where a flow lives in the table: its bucket and fingerprint. */
struct ct_where {
	struct ct_bucket *bucket;
	__u64 fp;
};

/* Hashes the flow; its low half becomes pkt->hash, which varies the outer source. */
static __always_inline bool ct_locate(struct packet *pkt, const struct lb_config *cfg,
				      struct ct_where *w)
{
	__u64 h = ct_hash(&pkt->flow);
	__u32 idx = (__u32)(h >> 32) & cfg->ct_mask;

	pkt->hash = (__u32)h;
	w->fp = h | CT_FP_MIN;
	w->bucket = bpf_map_lookup_elem(&ferry_ct, &idx);
	return w->bucket != NULL;
}

/*
 * An entry still holds while its backend takes existing flows (ACTIVE or
 * DRAINING), was not freed and reallocated since (same generation), and
 * still serves this VIP. Otherwise the flow is balanced afresh.
 */
static __always_inline bool ct_entry_valid(__u32 gen, const struct backend *be, __u32 vip_id)
{
	return (be->state == BACKEND_ACTIVE || be->state == BACKEND_DRAINING) && be->gen == gen &&
	       be->vip_id == vip_id;
}

/* Writing last_seen on every packet would bounce its cache line between CPUs. */
static __always_inline void ct_touch(struct ct_bucket *b, int way)
{
	__u32 now = bpf_jiffies64();

	if (now - b->last_seen[way] > FERRY_CT_TOUCH_JIFFIES)
		b->last_seen[way] = now;
}

/*
 * The backend conntrack holds for this flow, or NULL to balance afresh;
 * *stale is set when an entry existed but its backend is no longer valid.
 */
static __always_inline struct backend *ct_lookup(const struct packet *pkt, const struct ct_where *w,
						 __u32 vip_id, __u32 *backend_id, bool *stale)
{
	struct vip_stats *vs = vip_stats_of(vip_id);
	struct ct_bucket *b = w->bucket;
	struct backend *be;
	__u32 id, gen;

#pragma unroll
	for (int way = 0; way < FERRY_CT_WAYS; way++) {
		if (READ_ONCE64(b->e[way].fp) != w->fp)
			continue;
		id = READ_ONCE32(b->e[way].backend_id);
		gen = READ_ONCE32(b->e[way].backend_gen);
		if (READ_ONCE64(b->e[way].fp) != w->fp)
			break; /* replaced while we read it */
		be = bpf_map_lookup_elem(&ferry_backends, &id);
		if (!be || !ct_entry_valid(gen, be, vip_id)) {
			count_event(pkt, CNT_CT_STALE);
			*stale = true;
			return NULL;
		}
		if (vs)
			vs->ct_hits++;
		ct_touch(b, way);
		*backend_id = id;
		return be;
	}
	if (vs)
		vs->ct_misses++;
	return NULL;
}

/* The entry a new flow takes: its own (re-picked), a free one, or the least recently seen. */
static __always_inline int ct_victim(const struct ct_bucket *b, __u64 fp)
{
	int victim = 0;

#pragma unroll
	for (int way = 0; way < FERRY_CT_WAYS; way++) {
		__u64 have = READ_ONCE64(b->e[way].fp);

		if (have == fp || have == CT_FP_EMPTY)
			return way;
		if ((__s32)(b->last_seen[way] - b->last_seen[victim]) < 0)
			victim = way;
	}
	return victim;
}

static __always_inline void ct_record(const struct ct_where *w, __u32 backend_id,
				      const struct backend *be)
{
	struct ct_bucket *b = w->bucket;
	int way = ct_victim(b, w->fp);
	__u64 *fp;
	__u64 old;

	/* Bounded for the verifier: way is 0 .. FERRY_CT_WAYS-1. */
	if (way < 0 || way >= FERRY_CT_WAYS)
		return;
	fp = &b->e[way].fp;
	old = READ_ONCE64(*fp);
	if (old == CT_FP_BUSY || __sync_val_compare_and_swap(fp, old, CT_FP_BUSY) != old)
		return;
	/* Volatile stores: the compiler keeps them before the publishing one. */
	WRITE_ONCE32(b->e[way].backend_id, backend_id);
	WRITE_ONCE32(b->e[way].backend_gen, be->gen);
	b->last_seen[way] = bpf_jiffies64();
	*(volatile __u64 *)fp = w->fp;
}

#endif /* FERRY_CONNTRACK_H */
