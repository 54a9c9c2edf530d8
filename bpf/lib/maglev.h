/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maglev table lookup. ferry_maglev[vip_id] is an inner array of M+1 slots:
 * slot 0 holds M, slots 1..M the backend ids (see maps.h). The daemon
 * replaces a VIP's table by swapping the inner map, so the M read here and
 * the slots belong to the same table.
 */
#ifndef FERRY_MAGLEV_H
#define FERRY_MAGLEV_H

#include "common.h"
#include "maps.h"

/* The backend id in slot hash % M, or FERRY_BACKEND_NONE. */
static __always_inline __u32 maglev_backend_id(__u32 vip_id, __u32 hash)
{
	__u32 zero = 0, slot;
	__u32 *m, *id;
	void *table;

	table = bpf_map_lookup_elem(&ferry_maglev, &vip_id);
	if (!table)
		return FERRY_BACKEND_NONE;
	m = bpf_map_lookup_elem(table, &zero);
	if (!m || *m == 0)
		return FERRY_BACKEND_NONE;
	slot = hash % *m + 1;
	id = bpf_map_lookup_elem(table, &slot);
	return id ? *id : FERRY_BACKEND_NONE;
}

#endif /* FERRY_MAGLEV_H */
