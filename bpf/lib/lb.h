/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Where a packet to a VIP gets its backend: conntrack first, Maglev for a
 * new flow (or one whose backend went away).
 */
#ifndef FERRY_LB_H
#define FERRY_LB_H

#include "common.h"
#include "maps.h"
#include "conntrack.h"
#include "events.h"
#include "hash.h"
#include "maglev.h"
#include "policy.h"
#include "stats.h"

/* What balancing a packet afresh does besides picking its backend. */
#define LB_ADMIT  (1U << 0) /* takes a token of the VIP's new-flow rate limit */
#define LB_RECORD (1U << 1) /* recorded in conntrack, counted and reported as a new flow */

/*
 * A steered ICMP error is not a flow of its own: neither admitted nor
 * recorded. With CFG_F_RECORD_AFTER_HANDSHAKE a TCP SYN is admitted and
 * balanced but not recorded, and the flow is recorded by its first packet
 * without SYN (the table still names the same backend): a SYN flood from
 * spoofed sources then writes nothing into conntrack. That packet takes no
 * token, its SYN took one; packets without SYN that no handshake preceded
 * (an ACK flood) are recorded unlimited, as no state tells them apart.
 */
static __always_inline __u32 lb_duties(const struct packet *pkt, const struct lb_config *cfg)
{
	if (pkt->steered)
		return 0;
	if (!(cfg->flags & CFG_F_RECORD_AFTER_HANDSHAKE) || pkt->flow.proto != IPPROTO_TCP)
		return LB_ADMIT | LB_RECORD;
	return pkt->syn ? LB_ADMIT : LB_RECORD;
}

/*
 * A new flow: rate limit, flow hash, Maglev slot, then the backend it
 * names must be ACTIVE and belong to this VIP (a table computed for the old
 * owner of a reused id must not leak flows to the new one).
 */
static __always_inline int lb_new_flow(const struct packet *pkt, const struct vip_meta *vip,
				       const struct lb_config *cfg, const struct ct_where *ct,
				       enum ferry_flow_reason why, __u32 duties,
				       struct backend **be_out, __u32 *id_out)
{
	struct backend *be;
	__u32 id;

	if ((duties & LB_ADMIT) && !ratelimit_admit(vip))
		return drop_vip_as(pkt, vip->vip_id, DROP_RATE_LIMIT);

	id = maglev_backend_id(vip->vip_id, flow_hash(&pkt->flow, vip->flags, cfg->hash_seed));
	if (id == FERRY_BACKEND_NONE)
		return drop_vip_as(pkt, vip->vip_id, DROP_NO_BACKEND);
	be = bpf_map_lookup_elem(&ferry_backends, &id);
	if (!be || be->state != BACKEND_ACTIVE || be->vip_id != vip->vip_id)
		return drop_vip_as(pkt, vip->vip_id, DROP_BAD_BACKEND);

	if (duties & LB_RECORD) {
		if (ct)
			ct_record(ct, id, be);
		count_new_flow(vip->vip_id, id);
		event_new_flow(pkt, cfg, why, id);
	} else if (duties & LB_ADMIT) {
		count_event(pkt, CNT_SYN_UNRECORDED);
	}
	*be_out = be;
	*id_out = id;
	return CONTINUE;
}

/*
 * A SYN starts a new connection: it never reuses a (possibly stale) entry.
 * Sets pkt->hash (conntrack's hash of the flow) for the outer header.
 */
static __always_inline int lb_select_backend(struct packet *pkt, const struct vip_meta *vip,
					     const struct lb_config *cfg, struct backend **be_out,
					     __u32 *id_out)
{
	struct ct_where ct;
	bool have_ct = ct_locate(pkt, cfg, &ct);
	struct backend *be;
	bool stale = false;

	if (!pkt->syn && have_ct) {
		be = ct_lookup(pkt, &ct, vip->vip_id, id_out, &stale);
		if (be) {
			*be_out = be;
			return CONTINUE;
		}
	}
	return lb_new_flow(pkt, vip, cfg, have_ct ? &ct : NULL,
			   stale ? FLOW_REASON_CT_STALE : FLOW_REASON_MAGLEV, lb_duties(pkt, cfg),
			   be_out, id_out);
}

#endif /* FERRY_LB_H */
