/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Live events: sampled new flows and every drop, as struct ferry_event
 * records in the ferry_events ring buffer, which the daemon polls.
 *
 * Two limits keep a flood from overloading the daemon (or this program):
 *  - flows are sampled, 1 in lb_config.events_flow_sample (0 = none), by a
 *    random draw, so a periodic traffic pattern cannot hide from the sample;
 *  - every event, flow or drop, passes a hard cap on events per second.
 *    Events over the cap are counted (CNT_EVENTS_SUPPRESSED), not written.
 *
 * The cap is a GCRA (as the per-VIP rate limit in policy.h) kept per CPU in
 * ferry_event_budget: each CPU admits one event per events_interval_ns with
 * a tolerance of events_burst_ns. The daemon splits the configured cap over
 * the CPUs (interval = CPUs x 1 s / cap, tolerance = 1 s - interval), so the
 * sum over CPUs never exceeds the cap: at most cap x (t + 1 s) events in any
 * t seconds. Why not one shared bucket with atomic adds, which would let a
 * single CPU use the whole cap? During a flood every CPU drops at line rate
 * and every drop consults the bucket: one shared cache line bouncing between
 * CPUs on each packet costs the most exactly when the datapath can least
 * afford it, whereas a per-CPU state is a private, uncontended line. The
 * price is that a flood hitting one CPU (one RX queue) gets only that CPU's
 * share of the cap; the cap itself always holds.
 *
 * Records are submitted with BPF_RB_NO_WAKEUP: the daemon polls on a timer,
 * so the kernel's wakeup (irq_work) would be wasted work per event. A full
 * ring refuses the record (CNT_EVENTS_LOST); nothing here ever waits.
 *
 * Cost when events are off: new flows test events_flow_sample (one load
 * and branch on a config line already in cache); drops call event_drop(),
 * which looks at the config and returns. Forwarded packets of established
 * flows pay nothing.
 *
 * The emitting functions are BPF subprograms (__noinline): the drop path
 * is reached from some twenty call sites, which would otherwise each carry
 * a copy of the record-filling code.
 */
#ifndef FERRY_EVENTS_H
#define FERRY_EVENTS_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "vip.h"

/* stats.h's count_event, which cannot be included here (stats.h includes us). */
static __always_inline void events_count(const struct packet *pkt, enum ferry_counter cnt)
{
	counter_add(&ferry_counters, cnt, pkt->frame_len);
}

/* This CPU's share of the cap: true if an event may be written now. */
static __always_inline bool events_admit(const struct lb_config *cfg, __u64 now)
{
	__u32 zero = 0;
	struct event_budget *b = bpf_map_lookup_elem(&ferry_event_budget, &zero);
	__u64 tat;

	if (!b)
		return false;
	tat = b->tat_ns > now ? b->tat_ns : now;
	if (tat - now > cfg->events_burst_ns)
		return false;
	b->tat_ns = tat + cfg->events_interval_ns;
	return true;
}

/*
 * Fills a reserved record. A function of its own so that its prototype
 * puts struct ferry_event into the object's BTF (a ring buffer map has no
 * value type), where the ABI test compares it with src/datapath/abi.ts.
 */
static __noinline void event_fill(struct ferry_event *e, const struct packet *pkt,
				  __u32 kind_reason, __u32 backend_id, __u64 now)
{
	e->ts_ns = now;
	addr_copy(e->src, pkt->flow.src);
	addr_copy(e->dst, pkt->flow.dst);
	e->sport = pkt->flow.sport;
	e->dport = pkt->flow.dport;
	e->vip_id = pkt->vip_id;
	e->backend_id = backend_id;
	e->frame_len = pkt->frame_len;
	e->kind = kind_reason >> 8;
	e->reason = kind_reason & 0xff;
	e->proto = pkt->flow.proto;
	e->family = pkt->flow.family;
	e->pad = 0;
}

/* Writes one record, within the cap and if the ring has room. */
static __noinline void event_submit(const struct packet *pkt, const struct lb_config *cfg,
				    __u32 kind_reason, __u32 backend_id)
{
	__u64 now = bpf_ktime_get_ns();
	struct ferry_event *e;

	if (!cfg->events_interval_ns)
		return;
	if (!events_admit(cfg, now)) {
		events_count(pkt, CNT_EVENTS_SUPPRESSED);
		return;
	}
	e = bpf_ringbuf_reserve(&ferry_events, sizeof(*e), 0);
	if (!e) {
		events_count(pkt, CNT_EVENTS_LOST);
		return;
	}
	event_fill(e, pkt, kind_reason, backend_id, now);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	events_count(pkt, CNT_EVENTS);
}

/* A new flow got backend_id from Maglev: reported if sampled. */
static __always_inline void event_new_flow(const struct packet *pkt, const struct lb_config *cfg,
					   enum ferry_flow_reason reason, __u32 backend_id)
{
	__u32 n = cfg->events_flow_sample;

	if (!n)
		return;
	if (n > 1 && bpf_get_prandom_u32() % n)
		return;
	event_submit(pkt, cfg, FERRY_EVENT_FLOW << 8 | reason, backend_id);
}

/* Every drop is reported (within the cap). */
static __noinline void event_drop(const struct packet *pkt, __u32 reason)
{
	struct lb_config *cfg = config_get();

	if (cfg && cfg->events_interval_ns)
		event_submit(pkt, cfg, FERRY_EVENT_DROP << 8 | (reason & 0xff), FERRY_BACKEND_NONE);
}

#endif /* FERRY_EVENTS_H */
