/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Conntrack: an LRU map from the 5-tuple to the backend chosen for it, so
 * that established flows keep their backend when the Maglev table changes.
 * The LRU evicts idle flows by itself; last_seen_ns is for the daemon.
 */
#ifndef FERRY_CONNTRACK_H
#define FERRY_CONNTRACK_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"

/*
 * An entry still holds while its backend takes existing flows (ACTIVE or
 * DRAINING), was not freed and reallocated since (same generation), and
 * still serves this VIP. Otherwise the flow is balanced afresh.
 */
static __always_inline bool ct_entry_valid(const struct ct_value *ct, const struct backend *be,
					   __u32 vip_id)
{
	return (be->state == BACKEND_ACTIVE || be->state == BACKEND_DRAINING) &&
	       be->gen == ct->backend_gen && be->vip_id == vip_id;
}

/* Writing last_seen on every packet would bounce its cache line between CPUs. */
static __always_inline void ct_touch(struct ct_value *ct)
{
	__u64 now = bpf_ktime_get_ns();

	if (now - ct->last_seen_ns > FERRY_CT_TOUCH_NS)
		ct->last_seen_ns = now;
}

/*
 * The backend conntrack holds for this flow, or NULL to balance afresh;
 * *stale is set when an entry existed but its backend is no longer valid.
 */
static __always_inline struct backend *ct_lookup(const struct packet *pkt, __u32 vip_id,
						 __u32 *backend_id, bool *stale)
{
	struct vip_stats *vs = vip_stats_of(vip_id);
	struct ct_value *ct;
	struct backend *be;

	ct = bpf_map_lookup_elem(&ferry_ct, &pkt->flow);
	if (!ct) {
		if (vs)
			vs->ct_misses++;
		return NULL;
	}
	be = bpf_map_lookup_elem(&ferry_backends, &ct->backend_id);
	if (!be || !ct_entry_valid(ct, be, vip_id)) {
		count_event(pkt, CNT_CT_STALE);
		*stale = true;
		return NULL;
	}

	if (vs)
		vs->ct_hits++;
	ct_touch(ct);
	*backend_id = ct->backend_id;
	return be;
}

static __always_inline void ct_record(const struct flow_key *flow, __u32 backend_id,
				      const struct backend *be, __u64 now)
{
	struct ct_value ct = {
		.backend_id = backend_id,
		.backend_gen = be->gen,
		.last_seen_ns = now,
	};

	bpf_map_update_elem(&ferry_ct, flow, &ct, BPF_ANY);
}

#endif /* FERRY_CONNTRACK_H */
