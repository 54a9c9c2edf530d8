/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The socket-level load balancer's ABI (sock_lb.bpf.c): constants, map keys
 * and values. src/datapath/socket-lb-abi.ts mirrors every struct byte for byte
 * and test/unit/datapath/socket-lb-abi.test.ts compares them with this object's BTF and the
 * constants with this file.
 *
 * Rules as in types.h: addresses and ports in network byte order, an IPv4
 * address in word 0 of a 4-word array with the other words zero, every
 * padding byte named and zero (hash keys are compared as bytes).
 */
#ifndef FERRY_SOCKLB_TYPES_H
#define FERRY_SOCKLB_TYPES_H

#include <linux/types.h>

/* Default map capacities (load-time parameters, SocketLb.open({ sizes })). */
#ifndef SOCKLB_MAX_SERVICES
#define SOCKLB_MAX_SERVICES 65536 /* ClusterIP x port x protocol entries */
#endif
#ifndef SOCKLB_MAX_SLOTS
#define SOCKLB_MAX_SLOTS 262144 /* backend slots, both buffers of every service */
#endif
#ifndef SOCKLB_REVNAT_SIZE
#define SOCKLB_REVNAT_SIZE 262144 /* LRU: (socket, backend) -> service */
#endif
#ifndef SOCKLB_AFFINITY_SIZE
#define SOCKLB_AFFINITY_SIZE 65536 /* LRU: (client netns, service) -> backend */
#endif

/* Address families as stored in keys (the same numbers as FERRY_AF_*). */
#define SOCKLB_AF_INET	4
#define SOCKLB_AF_INET6 6

/* sock_svc.flags */
#define SOCK_SVC_F_AFFINITY (1U << 0) /* sessionAffinity ClientIP */

/* An affinity entry's last_ns is refreshed at most this often, so that a
 * busy client does not write the entry's cache line on every connect. */
#define SOCKLB_AFFINITY_TOUCH_NS 1000000000ULL

/* An address:port as the application sees it: a backend, or a service. */
struct sock_endpoint {
	__u32 addr[4];
	__u16 port;  /* network order */
	__u8 family; /* SOCKLB_AF_INET / SOCKLB_AF_INET6 */
	__u8 pad;
};

/* ferry_sock_svcs key: what the application passed to connect()/sendmsg(). */
struct sock_svc_key {
	__u32 addr[4];
	__u16 port; /* network order */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;
};

/*
 * ferry_sock_svcs value. The whole backend set a connect may use is named
 * by this one value: slots {id, gen & 1, 0 .. count-1}. The daemon fills
 * the other buffer, then replaces this value in one map update, so a
 * connect sees the old set or the new one, never a mix (socklb.h).
 */
struct sock_svc {
	__u32 id;		  /* stable for the key's life: slot, affinity and member keys */
	__u32 count;		  /* backends in the live buffer; 0 = refuse (ECONNREFUSED) */
	__u32 gen;		  /* +1 per backend set change; bit 0 names the live buffer */
	__u32 affinity_timeout_s; /* sessionAffinity ClientIP timeout; 0 without affinity */
	__u32 flags;		  /* SOCK_SVC_F_* */
};

/* ferry_sock_slots key: backend number `index` of a service's buffer `buf`. */
struct sock_slot_key {
	__u32 svc_id;
	__u32 buf;   /* 0 or 1 */
	__u32 index; /* 0 .. count-1 */
};

/*
 * ferry_sock_revnat key: a socket (its cookie) and the backend it was sent
 * to, in the form the application sees it; IPv4-mapped IPv6 addresses are
 * stored as IPv4, so v4 and v6 sockets of a dual-stack program agree.
 */
struct sock_rev_key {
	__u64 cookie;
	struct sock_endpoint backend;
	__u32 pad;
};

/* ferry_sock_affinity key: a client (its network namespace) of a service. */
struct sock_affinity_key {
	__u64 netns_cookie;
	__u32 svc_id;
	__u32 pad;
};

struct sock_affinity {
	struct sock_endpoint backend;
	__u32 pad;
	__u64 last_ns; /* bpf_ktime_get_ns() of the last use */
};

/* ferry_sock_members key: backend is in the service's current set. Checked
 * before an affinity entry is honoured, so a client never sticks to a
 * backend that left. Only services with affinity have members. */
struct sock_member_key {
	__u32 svc_id;
	struct sock_endpoint backend;
};

struct sock_counter {
	__u64 count;
};

/* ferry_sock_counters index (per CPU). */
enum sock_counter_id {
	SOCK_CNT_CONNECT,      /* connect() to a service, translated */
	SOCK_CNT_SENDMSG,      /* sendmsg() to a service, translated */
	SOCK_CNT_NO_BACKEND,   /* refused: the service has no backend */
	SOCK_CNT_SLOT_MISSING, /* refused: a slot the service names is absent */
	SOCK_CNT_AFFINITY_HIT, /* backend taken from a live affinity entry */
	SOCK_CNT_AFFINITY_NEW, /* affinity entry written (new, expired or stale) */
	SOCK_CNT_REVNAT_FAIL,  /* reverse entry could not be written (translated anyway) */
	SOCK_CNT_REV_RECVMSG,  /* recvmsg() source reported as the service */
	SOCK_CNT_REV_PEERNAME, /* getpeername() reported as the service */
	SOCK_CNT_RELEASED,     /* reverse entry removed when its socket closed */
	SOCK_CNT_MAX,
};

#endif /* FERRY_SOCKLB_TYPES_H */
