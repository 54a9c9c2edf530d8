/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The socket-level load balancer: where a connect() or sendmsg() to a
 * Kubernetes ClusterIP gets its backend, and how recvmsg()/getpeername()
 * report the ClusterIP again. Runs at the socket, before any packet exists,
 * so there is no per-packet NAT and no conntrack entry.
 *
 * Addresses travel as struct sock_endpoint in the form the application used,
 * except that IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are normalised to
 * IPv4: a v6 socket reaching an IPv4 ClusterIP finds the IPv4 service, and
 * its reverse entries match those the kernel's v4 hooks see (a v6 UDP socket
 * sending to a mapped address runs the sendmsg4 hook, but receives through
 * recvmsg6).
 */
#ifndef FERRY_SOCKLB_H
#define FERRY_SOCKLB_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "socklb_types.h"
#include "socklb_maps.h"

/* Verdicts of cgroup sock_addr programs. */
#define SYS_REJECT  0
#define SYS_PROCEED 1

#define ECONNREFUSED 111
#define NSEC_PER_SEC 1000000000ULL

/* bpf_sock.family (linux/socket.h is not UAPI-clean for the BPF target). */
#define SOCKLB_SYS_AF_INET  2
#define SOCKLB_SYS_AF_INET6 10

/* What the forward path decided. */
enum sock_verdict {
	SOCK_PASS,   /* not a service: leave the address alone */
	SOCK_XLATE,  /* rewritten to a backend */
	SOCK_REFUSE, /* a service without a usable backend */
};

static __always_inline void sock_count(enum sock_counter_id id)
{
	__u32 idx = id;
	struct sock_counter *c = bpf_map_lookup_elem(&ferry_sock_counters, &idx);

	if (c)
		c->count++;
}

/*
 * user_port is a __u32 holding the network-order port in its first two
 * bytes. Read all four (volatile keeps clang from narrowing the load, which
 * older kernels refuse) and keep the low 16 bits, which on a little-endian
 * host are exactly those two bytes.
 */
static __always_inline __u16 ctx_port(const struct bpf_sock_addr *ctx)
{
	volatile __u32 port = ctx->user_port;

	return (__u16)port;
}

static __always_inline bool endpoint_equal(const struct sock_endpoint *a,
					   const struct sock_endpoint *b)
{
	/* clang 14 does not inline __builtin_memcmp for BPF: word by word. */
	return ((a->addr[0] ^ b->addr[0]) | (a->addr[1] ^ b->addr[1]) | (a->addr[2] ^ b->addr[2]) |
		(a->addr[3] ^ b->addr[3])) == 0 &&
	       a->port == b->port && a->family == b->family;
}

/* ---- the application's address, in and out ------------------------------- */

static __always_inline void ctx_get4(const struct bpf_sock_addr *ctx, struct sock_endpoint *ep)
{
	ep->addr[0] = ctx->user_ip4;
	ep->addr[1] = 0;
	ep->addr[2] = 0;
	ep->addr[3] = 0;
	ep->port = ctx_port(ctx);
	ep->family = SOCKLB_AF_INET;
	ep->pad = 0;
}

/* Only IPv4 fits a v4 socket; anything else is left alone (returns false). */
static __always_inline bool ctx_set4(struct bpf_sock_addr *ctx, const struct sock_endpoint *ep)
{
	if (ep->family != SOCKLB_AF_INET)
		return false;
	ctx->user_ip4 = ep->addr[0];
	ctx->user_port = (__u32)ep->port;
	return true;
}

static __always_inline bool ip6_is_v4_mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return (w0 | w1) == 0 && w2 == bpf_htonl(0x0000ffff);
}

/* IPv6, or IPv4 for a v4-mapped address (::ffff:a.b.c.d). */
static __always_inline void ctx_get6(const struct bpf_sock_addr *ctx, struct sock_endpoint *ep)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1];
	__u32 w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];

	ep->port = ctx_port(ctx);
	ep->pad = 0;
	if (ip6_is_v4_mapped(w0, w1, w2)) {
		ep->addr[0] = w3;
		ep->addr[1] = 0;
		ep->addr[2] = 0;
		ep->addr[3] = 0;
		ep->family = SOCKLB_AF_INET;
		return;
	}
	ep->addr[0] = w0;
	ep->addr[1] = w1;
	ep->addr[2] = w2;
	ep->addr[3] = w3;
	ep->family = SOCKLB_AF_INET6;
}

/* A v6 socket takes IPv6, or IPv4 written back as v4-mapped. */
static __always_inline bool ctx_set6(struct bpf_sock_addr *ctx, const struct sock_endpoint *ep)
{
	if (ep->family == SOCKLB_AF_INET) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = ep->addr[0];
	} else {
		ctx->user_ip6[0] = ep->addr[0];
		ctx->user_ip6[1] = ep->addr[1];
		ctx->user_ip6[2] = ep->addr[2];
		ctx->user_ip6[3] = ep->addr[3];
	}
	ctx->user_port = (__u32)ep->port;
	return true;
}

/* ---- forward: service -> backend ------------------------------------------ */

/*
 * Copies the service value at once: everything below works on the copy,
 * so one connect uses one consistent (buffer, count) pair.
 */
static __always_inline bool svc_lookup(const struct sock_endpoint *dst, __u8 proto,
				       struct sock_svc *out)
{
	struct sock_svc_key key = {
		.addr = {dst->addr[0], dst->addr[1], dst->addr[2], dst->addr[3]},
		.port = dst->port,
		.proto = proto,
		.family = dst->family,
	};
	struct sock_svc *svc = bpf_map_lookup_elem(&ferry_sock_svcs, &key);

	if (!svc)
		return false;
	*out = *svc;
	return true;
}

/*
 * TCP: uniformly at random per connection, like kube-proxy. UDP: by socket
 * (a hash of its cookie), so the datagrams of one socket stay on one backend
 * as they would on one conntrack entry; different sockets spread.
 */
static __always_inline __u32 pick_index(struct bpf_sock_addr *ctx, const struct sock_svc *svc)
{
	__u64 h;

	if (ctx->protocol == IPPROTO_TCP)
		return bpf_get_prandom_u32() % svc->count;
	h = bpf_get_socket_cookie(ctx) * 0x9E3779B97F4A7C15ULL;
	return (__u32)(h >> 32) % svc->count;
}

/*
 * A live affinity entry of this client for this service, whose backend is
 * still a member of the service, decides the backend.
 */
static __always_inline bool affinity_get(const struct sock_svc *svc,
					 const struct sock_affinity_key *akey, __u64 now,
					 struct sock_endpoint *be)
{
	struct sock_member_key mk = {.svc_id = svc->id};
	struct sock_affinity *a = bpf_map_lookup_elem(&ferry_sock_affinity, akey);
	__u64 last;

	if (!a)
		return false;
	last = a->last_ns;
	/* Signed: another CPU may have refreshed the entry after `now` was read. */
	if ((__s64)(now - last) > (__s64)((__u64)svc->affinity_timeout_s * NSEC_PER_SEC))
		return false;
	mk.backend = a->backend;
	if (!bpf_map_lookup_elem(&ferry_sock_members, &mk))
		return false;
	/* Refreshed in place, at most once a second: a timeout counts from
	 * the client's last connection, as kube-proxy's "recent" match. */
	if ((__s64)(now - last) > (__s64)SOCKLB_AFFINITY_TOUCH_NS)
		a->last_ns = now;
	*be = mk.backend;
	return true;
}

static __always_inline bool select_backend(struct bpf_sock_addr *ctx, const struct sock_svc *svc,
					   __u8 family, struct sock_endpoint *be)
{
	struct sock_slot_key sk = {.svc_id = svc->id, .buf = svc->gen & 1};
	struct sock_affinity_key akey = {};
	struct sock_affinity aval = {};
	struct sock_endpoint *slot;
	bool affinity = svc->flags & SOCK_SVC_F_AFFINITY;
	__u64 now = 0;

	if (affinity) {
		/* The client is the socket's network namespace: a pod. */
		akey.netns_cookie = bpf_get_netns_cookie(ctx);
		akey.svc_id = svc->id;
		now = bpf_ktime_get_ns();
		if (affinity_get(svc, &akey, now, be)) {
			sock_count(SOCK_CNT_AFFINITY_HIT);
			return true;
		}
	}
	sk.index = pick_index(ctx, svc);
	slot = bpf_map_lookup_elem(&ferry_sock_slots, &sk);
	if (!slot || slot->family != family) {
		sock_count(SOCK_CNT_SLOT_MISSING);
		return false;
	}
	*be = *slot;
	if (affinity) {
		aval.backend = *be;
		aval.last_ns = now;
		bpf_map_update_elem(&ferry_sock_affinity, &akey, &aval, BPF_ANY);
		sock_count(SOCK_CNT_AFFINITY_NEW);
	}
	return true;
}

/*
 * Remembers that this socket reached `svc` at `be`. Written only when it
 * differs, so a UDP socket sending many datagrams writes it once.
 */
static __always_inline void revnat_store(struct bpf_sock_addr *ctx, const struct sock_endpoint *be,
					 const struct sock_endpoint *svc)
{
	struct sock_rev_key key = {.cookie = bpf_get_socket_cookie(ctx)};
	struct sock_endpoint *cur;

	key.backend = *be;
	cur = bpf_map_lookup_elem(&ferry_sock_revnat, &key);
	if (cur && endpoint_equal(cur, svc))
		return;
	if (bpf_map_update_elem(&ferry_sock_revnat, &key, svc, BPF_ANY) != 0)
		sock_count(SOCK_CNT_REVNAT_FAIL);
}

/* dst: the application's destination in, the backend out (on SOCK_XLATE). */
static __always_inline enum sock_verdict sock_fwd(struct bpf_sock_addr *ctx,
						  struct sock_endpoint *dst)
{
	__u32 proto = ctx->protocol;
	struct sock_endpoint be;
	struct sock_svc svc;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SOCK_PASS;
	if (!svc_lookup(dst, proto, &svc))
		return SOCK_PASS;
	if (svc.count == 0) {
		sock_count(SOCK_CNT_NO_BACKEND);
		return SOCK_REFUSE;
	}
	if (!select_backend(ctx, &svc, dst->family, &be))
		return SOCK_REFUSE;
	revnat_store(ctx, &be, dst);
	*dst = be;
	return SOCK_XLATE;
}

/*
 * The program's answer: a refused connect()/sendmsg() fails with
 * ECONNREFUSED, as a Service without endpoints does under kube-proxy
 * (its REJECT rule answers with ICMP port unreachable).
 */
static __always_inline int fwd_verdict(enum sock_verdict v, enum sock_counter_id done)
{
	if (v == SOCK_REFUSE) {
		bpf_set_retval(-ECONNREFUSED);
		return SYS_REJECT;
	}
	if (v == SOCK_XLATE)
		sock_count(done);
	return SYS_PROCEED;
}

static __always_inline int sock_fwd4(struct bpf_sock_addr *ctx, enum sock_counter_id done)
{
	struct sock_endpoint dst;
	enum sock_verdict v;

	ctx_get4(ctx, &dst);
	v = sock_fwd(ctx, &dst);
	if (v == SOCK_XLATE && !ctx_set4(ctx, &dst))
		v = SOCK_REFUSE;
	return fwd_verdict(v, done);
}

static __always_inline int sock_fwd6(struct bpf_sock_addr *ctx, enum sock_counter_id done)
{
	struct sock_endpoint dst;
	enum sock_verdict v;

	ctx_get6(ctx, &dst);
	v = sock_fwd(ctx, &dst);
	if (v == SOCK_XLATE)
		ctx_set6(ctx, &dst);
	return fwd_verdict(v, done);
}

/* ---- reverse: backend -> service ------------------------------------------ */

/* src: the peer the kernel reports in, the service out (returns true). */
static __always_inline bool sock_rev(struct bpf_sock_addr *ctx, struct sock_endpoint *src)
{
	struct sock_rev_key key = {.cookie = bpf_get_socket_cookie(ctx)};
	struct sock_endpoint *svc;

	key.backend = *src;
	svc = bpf_map_lookup_elem(&ferry_sock_revnat, &key);
	if (!svc)
		return false;
	*src = *svc;
	return true;
}

static __always_inline int sock_rev4(struct bpf_sock_addr *ctx, enum sock_counter_id done)
{
	struct sock_endpoint src;

	ctx_get4(ctx, &src);
	if (sock_rev(ctx, &src) && ctx_set4(ctx, &src))
		sock_count(done);
	return SYS_PROCEED;
}

static __always_inline int sock_rev6(struct bpf_sock_addr *ctx, enum sock_counter_id done)
{
	struct sock_endpoint src;

	ctx_get6(ctx, &src);
	if (sock_rev(ctx, &src) && ctx_set6(ctx, &src))
		sock_count(done);
	return SYS_PROCEED;
}

/*
 * A closing connected socket's reverse entry is removed, so that connection
 * churn does not push the entries of long-lived connections out of the LRU.
 * Unconnected UDP sockets do not know their peers here: their entries age
 * out of the LRU.
 */
static __always_inline void revnat_release(struct bpf_sock *sk)
{
	struct sock_rev_key key = {.cookie = bpf_get_socket_cookie(sk)};
	__u32 w0, w1, w2;

	if (sk->protocol != IPPROTO_TCP && sk->protocol != IPPROTO_UDP)
		return;
	key.backend.port = sk->dst_port;
	if (key.backend.port == 0)
		return;
	if (sk->family == SOCKLB_SYS_AF_INET) {
		key.backend.addr[0] = sk->dst_ip4;
		key.backend.family = SOCKLB_AF_INET;
	} else if (sk->family == SOCKLB_SYS_AF_INET6) {
		w0 = sk->dst_ip6[0];
		w1 = sk->dst_ip6[1];
		w2 = sk->dst_ip6[2];
		if (ip6_is_v4_mapped(w0, w1, w2)) {
			key.backend.addr[0] = sk->dst_ip6[3];
			key.backend.family = SOCKLB_AF_INET;
		} else {
			key.backend.addr[0] = w0;
			key.backend.addr[1] = w1;
			key.backend.addr[2] = w2;
			key.backend.addr[3] = sk->dst_ip6[3];
			key.backend.family = SOCKLB_AF_INET6;
		}
	} else {
		return;
	}
	if (bpf_map_delete_elem(&ferry_sock_revnat, &key) == 0)
		sock_count(SOCK_CNT_RELEASED);
}

#endif /* FERRY_SOCKLB_H */
