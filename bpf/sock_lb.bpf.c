// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sock_lb: Ferry's socket-level load balancer for Kubernetes ClusterIPs,
 * attached to a cgroup (v2) through bpf links.
 *
 *   connect4/6   TCP connect(), UDP connect(): ClusterIP -> a backend
 *   sendmsg4/6   UDP sendto()/sendmsg() with an address: the same, per datagram
 *   recvmsg4/6   UDP recvfrom(): a backend's reply is reported as the ClusterIP
 *   getpeername4/6  the peer of a translated socket is reported as the ClusterIP
 *   sock_release a closing socket's reverse entry is removed
 *
 * The logic lives in lib/socklb.h; the maps in lib/socklb_maps.h.
 */
#include "socklb.h"

SEC("cgroup/connect4")
int socklb_conn4(struct bpf_sock_addr *ctx)
{
	return sock_fwd4(ctx, SOCK_CNT_CONNECT);
}

SEC("cgroup/connect6")
int socklb_conn6(struct bpf_sock_addr *ctx)
{
	return sock_fwd6(ctx, SOCK_CNT_CONNECT);
}

SEC("cgroup/sendmsg4")
int socklb_send4(struct bpf_sock_addr *ctx)
{
	return sock_fwd4(ctx, SOCK_CNT_SENDMSG);
}

SEC("cgroup/sendmsg6")
int socklb_send6(struct bpf_sock_addr *ctx)
{
	return sock_fwd6(ctx, SOCK_CNT_SENDMSG);
}

SEC("cgroup/recvmsg4")
int socklb_recv4(struct bpf_sock_addr *ctx)
{
	return sock_rev4(ctx, SOCK_CNT_REV_RECVMSG);
}

SEC("cgroup/recvmsg6")
int socklb_recv6(struct bpf_sock_addr *ctx)
{
	return sock_rev6(ctx, SOCK_CNT_REV_RECVMSG);
}

SEC("cgroup/getpeername4")
int socklb_peer4(struct bpf_sock_addr *ctx)
{
	return sock_rev4(ctx, SOCK_CNT_REV_PEERNAME);
}

SEC("cgroup/getpeername6")
int socklb_peer6(struct bpf_sock_addr *ctx)
{
	return sock_rev6(ctx, SOCK_CNT_REV_PEERNAME);
}

SEC("cgroup/sock_release")
int socklb_release(struct bpf_sock *sk)
{
	revnat_release(sk);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
