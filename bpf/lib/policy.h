/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-VIP source policy (allow/deny CIDRs) and new-flow rate limit.
 */
#ifndef FERRY_POLICY_H
#define FERRY_POLICY_H

#include "common.h"
#include "maps.h"
#include "stats.h"

/* vip_id leads the LPM key, so it is always matched in full. */
#define POLICY_FULL_PREFIX (32 + 128)

/*
 * Checked on every packet, not only new flows, so that a rule added for an
 * established flow takes effect at once. IPv4 sources are looked up as
 * ::ffff:a.b.c.d, which lets one trie hold both families.
 */
static __always_inline int policy_check(const struct packet *pkt, const struct vip_meta *vip)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.vip_id = bpf_htonl(vip->vip_id),
	};
	struct policy_value *rule;
	bool deny;

	if (!(vip->flags & VIP_F_POLICY))
		return CONTINUE;
	if (pkt->flow.family == FERRY_AF_INET) {
		key.addr[2] = bpf_htonl(0xffff);
		key.addr[3] = pkt->flow.src[0];
	} else {
		addr_copy(key.addr, pkt->flow.src);
	}

	rule = bpf_map_lookup_elem(&ferry_policy, &key);
	if (rule)
		deny = rule->action == POLICY_DENY;
	else
		deny = vip->flags & VIP_F_ALLOWLIST;
	return deny ? drop_vip_as(pkt, vip->vip_id, DROP_POLICY) : CONTINUE;
}

/*
 * GCRA: tat is the theoretical arrival time of the next flow. A flow is
 * admitted while tat runs at most rl_tolerance_ns ahead of now, and each
 * admitted flow pushes tat by rl_interval_ns. The read-modify-write is not
 * atomic: CPUs admitting flows at the same instant can lose an update, so
 * a burst may exceed the limit by up to one flow per CPU. That is accepted
 * for a DoS guard; a lock or atomics would cost every new flow.
 */
static __always_inline bool ratelimit_admit(const struct vip_meta *vip)
{
	struct ratelimit_state *rl;
	__u64 now, tat;

	if (!vip->rl_interval_ns)
		return true;
	/* Missing only for an out-of-range vip_id, which has no Maglev table either. */
	rl = bpf_map_lookup_elem(&ferry_ratelimit, &vip->vip_id);
	if (!rl)
		return true;

	now = bpf_ktime_get_ns(); /* only a limited VIP pays for the clock */
	tat = rl->tat_ns > now ? rl->tat_ns : now;
	if (tat - now > vip->rl_tolerance_ns)
		return false;
	rl->tat_ns = tat + vip->rl_interval_ns;
	return true;
}

#endif /* FERRY_POLICY_H */
