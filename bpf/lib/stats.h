/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Counters. Every map here is per-CPU, so plain increments are exact: no
 * atomics, no shared cache lines. The daemon sums the CPUs when it reads.
 *
 * Global counters and drops count the frame as received (packets, bytes);
 * per-VIP and per-backend traffic counts the IP packet that is forwarded.
 */
#ifndef FERRY_STATS_H
#define FERRY_STATS_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "events.h"

static __always_inline void count_event(const struct packet *pkt, enum ferry_counter cnt)
{
	counter_add(&ferry_counters, cnt, pkt->frame_len);
}

static __always_inline int pass_as(const struct packet *pkt, enum ferry_counter cnt)
{
	count_event(pkt, cnt);
	return XDP_PASS;
}

/* Every drop is counted by reason and reported as an event (events.h). */
static __always_inline int drop_as(const struct packet *pkt, enum ferry_drop_reason reason)
{
	counter_add(&ferry_drops, reason, pkt->frame_len);
	event_drop(pkt, reason);
	return XDP_DROP;
}

static __always_inline struct vip_stats *vip_stats_of(__u32 vip_id)
{
	return bpf_map_lookup_elem(&ferry_vip_stats, &vip_id);
}

static __always_inline struct backend_stats *backend_stats_of(__u32 backend_id)
{
	return bpf_map_lookup_elem(&ferry_backend_stats, &backend_id);
}

/* A drop the VIP is answerable for (policy, rate limit, no usable backend). */
static __always_inline int drop_vip_as(const struct packet *pkt, __u32 vip_id,
				       enum ferry_drop_reason reason)
{
	struct vip_stats *vs = vip_stats_of(vip_id);

	if (vs)
		vs->drops++;
	return drop_as(pkt, reason);
}

static __always_inline void count_new_flow(__u32 vip_id, __u32 backend_id)
{
	struct vip_stats *vs = vip_stats_of(vip_id);
	struct backend_stats *bs = backend_stats_of(backend_id);

	if (vs)
		vs->new_flows++;
	if (bs)
		bs->new_flows++;
}

static __always_inline void count_forward(const struct packet *pkt, __u32 vip_id, __u32 backend_id)
{
	struct vip_stats *vs = vip_stats_of(vip_id);
	struct backend_stats *bs = backend_stats_of(backend_id);

	if (vs) {
		vs->packets++;
		vs->bytes += pkt->ip_len;
	}
	if (bs) {
		bs->packets++;
		bs->bytes += pkt->ip_len;
	}
}

#endif /* FERRY_STATS_H */
