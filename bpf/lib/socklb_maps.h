/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the socket-level load balancer. All but ferry_sock_grace are
 * pinned by name under the loader's pin root (the daemon's, e.g.
 * /sys/fs/bpf/ferry), so a restarted daemon adopts services, reverse
 * entries and affinities with their contents.
 */
#ifndef FERRY_SOCKLB_MAPS_H
#define FERRY_SOCKLB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "socklb_types.h"

/* Written by the daemon only: no preallocation, memory follows the services. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SOCKLB_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sock_svc_key);
	__type(value, struct sock_svc);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_sock_svcs SEC(".maps");

/*
 * Backend slots of both buffers. A hash rather than one big array: services
 * grow and shrink independently, and a hash needs no range allocator.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SOCKLB_MAX_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sock_slot_key);
	__type(value, struct sock_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_sock_slots SEC(".maps");

/* (socket, backend) -> service, for recvmsg() and getpeername(). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SOCKLB_REVNAT_SIZE);
	__type(key, struct sock_rev_key);
	__type(value, struct sock_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_sock_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SOCKLB_AFFINITY_SIZE);
	__type(key, struct sock_affinity_key);
	__type(value, struct sock_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_sock_affinity SEC(".maps");

/* One entry per (affinity service, backend); sized like the slots. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SOCKLB_MAX_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sock_member_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_sock_members SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SOCK_CNT_MAX);
	__type(key, __u32);
	__type(value, struct sock_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ferry_sock_counters SEC(".maps");

/*
 * Never read by a program. Updating an array of maps makes the kernel wait
 * for an RCU grace period before the syscall returns (every program that
 * might still use the old value has finished), so the daemon updates this
 * map to know that no connect still reads a buffer it is about to reuse.
 */
struct sock_grace_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct sock_grace_inner);
} ferry_sock_grace SEC(".maps");

#endif /* FERRY_SOCKLB_MAPS_H */
