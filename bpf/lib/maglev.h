/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maglev table lookup (maps.h has the layout): ferry_maglev_at[vip_id] is
 * where the VIP's table starts in ferry_maglev; there, M, then the M
 * backend ids. Two inlined array lookups, no helper call.
 *
 * A table is replaced by pointing the VIP at a new, complete one with a
 * single 4-byte store, and the old one is rewritten only after an RCU grace
 * period, when no program can still be reading it: a packet sees the old
 * table or the new one, never a mix, and M always belongs to the table.
 */
#ifndef FERRY_MAGLEV_H
#define FERRY_MAGLEV_H

#include "common.h"
#include "maps.h"

/* Slot n of ferry_maglev, or NULL past its end. */
static __always_inline __u32 *maglev_slot(__u32 n)
{
	__u32 block = n / FERRY_MAGLEV_BLOCK;
	struct maglev_block *b = bpf_map_lookup_elem(&ferry_maglev, &block);

	return b ? &b->slot[n % FERRY_MAGLEV_BLOCK] : NULL;
}

/* The backend id in slot hash % M, or FERRY_BACKEND_NONE. */
static __always_inline __u32 maglev_backend_id(__u32 vip_id, __u32 hash)
{
	__u32 *at = bpf_map_lookup_elem(&ferry_maglev_at, &vip_id);
	__u32 start, m;
	__u32 *mp, *id;

	if (!at)
		return FERRY_BACKEND_NONE;
	start = *(volatile __u32 *)at;
	mp = maglev_slot(start);
	if (!mp)
		return FERRY_BACKEND_NONE;
	m = *mp;
	if (m == 0)
		return FERRY_BACKEND_NONE;
	id = maglev_slot(start + 1 + hash % m);
	return id ? *id : FERRY_BACKEND_NONE;
}

/*
 * Run by the daemon (BPF_PROG_RUN): points VIPs at their new tables, each
 * with one aligned 4-byte store, which a reader sees whole. (A map update
 * from userspace copies with memcpy, which may store byte by byte.)
 * Returns 0, or -1 - i for the first item i naming a VIP id out of range
 * (the others are still set; the daemon checks ids first). Unrolled:
 * the verifier lets a program read its context only at constant offsets.
 */
static __always_inline int maglev_publish(const struct maglev_publish *args)
{
	__u32 n = args->count;
	int ret = 0;

#pragma unroll
	for (int i = 0; i < FERRY_MAGLEV_PUBLISH_MAX; i++) {
		__u32 vip_id = args->item[i].vip_id;
		__u32 *at;

		if (i >= n)
			continue;
		at = bpf_map_lookup_elem(&ferry_maglev_at, &vip_id);
		if (at)
			*(volatile __u32 *)at = args->item[i].at;
		else if (ret == 0)
			ret = -1 - i;
	}
	return ret;
}

#endif /* FERRY_MAGLEV_H */
