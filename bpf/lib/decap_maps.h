/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the backend-side decap programs (xdp_decap, tc_decap), pinned by
 * name like the load balancer's. A backend runs these instead of xdp_lb,
 * so the two sets never share a pin directory's names.
 */
#ifndef FERRY_DECAP_MAPS_H
#define FERRY_DECAP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "types.h"

/* VIP addresses this backend serves: the inner destinations to decap. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FERRY_MAX_VIP_ADDRS);
	__type(key, struct vip_addr_key);
	__type(value, struct vip_addr_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_decap_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_CNT_MAX);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_decap_counters SEC(".maps");

#endif /* FERRY_DECAP_MAPS_H */
