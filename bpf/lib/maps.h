/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of xdp_lb, in one place. All are pinned by name under the pin
 * root the loader chooses (default /sys/fs/bpf/ferry), so they outlive the
 * daemon and a restarted daemon re-opens them with their contents.
 */
#ifndef FERRY_MAPS_H
#define FERRY_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_config SEC(".maps");

/*
 * The VIP index (index.h): buckets probed inline. Bucket counts are powers
 * of 2 (lb_config holds the masks), at least the entries they are for, so
 * each index is at most a quarter full.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FERRY_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_vip_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FERRY_MAX_VIP_ADDRS);
	__type(key, __u32);
	__type(value, struct vip_addr_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_addr_index SEC(".maps");

/* The keys neither of whose buckets had room (see struct vip_bucket). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FERRY_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FERRY_MAX_VIP_ADDRS);
	__type(key, struct vip_addr_key);
	__type(value, struct vip_addr_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_vip_addrs SEC(".maps");

/*
 * Maglev tables (maglev.h): every VIP's table lives in ferry_maglev, one
 * flat run of u32 slots, as M+1 consecutive slots (M, then the M backend
 * ids); ferry_maglev_at[vip_id] is the slot where the VIP's table starts,
 * 0 for none (slot 0 always holds 0, an empty table). The daemon writes a
 * new table into free slots, then points the VIP at it with one 4-byte
 * store (ferry_maglev_publish), and reuses the old slots only after an RCU
 * grace period. Both are mmapable: the daemon reads and fills tables as
 * memory. Slots come in blocks of FERRY_MAGLEV_BLOCK, because the kernel
 * spaces array elements 8 bytes apart at least: u32 elements would take
 * twice the memory and leave gaps in the mapping.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FERRY_MAGLEV_SLOTS / FERRY_MAGLEV_BLOCK);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct maglev_block);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FERRY_MAX_VIPS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_maglev_at SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FERRY_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_backends SEC(".maps");

/*
 * Conntrack (conntrack.h): buckets of one cache line each. Mmapable, because
 * the kernel then places the values page-aligned, so no bucket straddles
 * two cache lines.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FERRY_CT_BUCKETS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct ct_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_ct SEC(".maps");

/* Next hops from bpf_fib_lookup, reused for lb_config.nexthop_ttl (fib.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FERRY_NEXTHOP_SLOTS);
	__type(key, __u32);
	__type(value, struct nexthop);
} ferry_nexthops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FERRY_MAX_POLICY_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FERRY_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct ratelimit_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_ratelimit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FERRY_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FERRY_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_counters SEC(".maps");

/*
 * Source NAT (snat.h): the port each translated flow took, and the way
 * back for its replies. LRU: a connection nobody uses any more is evicted
 * when room is needed.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FERRY_SNAT_ENTRIES);
	__type(key, struct flow_key);
	__type(value, struct snat_fwd);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_snat_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FERRY_SNAT_ENTRIES);
	__type(key, struct snat_rev_key);
	__type(value, struct snat_rev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_snat_rev SEC(".maps");

/*
 * Live events (events.h): struct ferry_event records for the daemon, which
 * polls the ring (no wakeups are sent). Size in bytes, a load-time
 * parameter like the other capacities.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FERRY_EVENTS_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_events SEC(".maps");

/* The events cap's per-CPU state (one GCRA per CPU: no shared cache line). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_budget);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_event_budget SEC(".maps");

#endif /* FERRY_MAPS_H */
