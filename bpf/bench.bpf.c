// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The lab benchmark's two ends (bench/lab.ts, bench/lab-rig.ts):
 *
 *   xdp_gen   run by BPF_PROG_TEST_RUN in live-frames mode in the generator
 *             namespace: paces the frames to the offered rate, writes each
 *             from a TCP or UDP template with its own source address and
 *             port, then XDP_TX (the kernel turns that into a redirect out
 *             of the generator's veth, towards the load balancer).
 *   xdp_sink  on each backend's veth: counts the benchmark's packets (plain,
 *             or IPv4-in-IPv4 as xdp_lb sends them) and drops them, so the
 *             backends' CPU stays free for the load balancer under test. On
 *             the load balancer's own veth it is the benchmark's floor.
 *
 * Both assume IPv4 without options behind an untagged Ethernet header: the
 * generator builds exactly that, and the sink passes anything else.
 */
#include "common.h"
#include "csum.h"

/*
 * Every frame is GEN_FRAME_LEN bytes (Ethernet's minimum without FCS; a SYN
 * carries 6 bytes of Ethernet padding) and is written whole on every run:
 * live-frames mode recycles pages without restoring their contents, and the
 * receiver may have rewritten them (xdp_lb encapsulates in place, the stack
 * rewrites a forwarded packet's TTL and NATed addresses).
 */
#define GEN_FRAME_LEN 60

/* Mirrored by GenConfig in bench/lab-bpf.ts (a test checks it against BTF). */
struct gen_config {
	__u64 interval_ps; /* between frames at the offered rate; 0: as fast as possible */
	__u64 limit;	   /* emit while gen_state.seq < limit, drop every later run */
	__u64 max_lag_ps;  /* how far behind schedule the generator may catch up */
	__u32 src_base;	   /* first source address, host order */
	__u32 src_count;   /* sources src_base .. src_base + src_count - 1 */
	__u32 port_count;  /* source ports port_base .. port_base + port_count - 1 */
	__u16 port_base;   /* host order */
	__u16 ip_check;	   /* IPv4 header checksum of the template (src_base, port_base) */
	__u16 l4_check;	   /* TCP / UDP checksum of the template */
	__u16 group;	   /* frames emitted back to back, one group every group x interval */
	__u32 pad;
	__u8 frame[GEN_FRAME_LEN]; /* the template: Ethernet, IPv4, TCP or UDP (padded) */
	__u8 pad2[4];
};

/*
 * The generator's progress (one CPU runs it: a live-frames run stays on the
 * CPU that started it). Frame seq uses source seq % src_count and port
 * (seq / src_count) % port_count, so consecutive frames come from
 * different sources.
 */
struct gen_state {
	__u64 seq;	 /* frames emitted so far */
	__u64 next_ps;	 /* when the next group is due (0: at the next run) */
	__u64 first_ns;	 /* first group of this window, ktime */
	__u64 last_ns;	 /* latest group */
	__u64 lagged_ns; /* schedule skipped because the generator fell too far behind */
	__u32 in_group;	 /* frames of the current group still to emit */
	__u32 lags;	 /* how often that happened */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} bench_gen_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_state);
} bench_gen_state SEC(".maps");

/* Sink counters (packets), indexes below; mirrored by SINK_* in bench/lab-bpf.ts. */
enum sink_counter {
	SINK_TCP,    /* TCP to the benchmark port, plain or encapsulated */
	SINK_UDP,    /* UDP to the benchmark port, plain or encapsulated */
	SINK_IPIP,   /* of those, the ones that came IPv4-in-IPv4 */
	SINK_PASSED, /* everything else (ARP, ...), passed to the stack */
	SINK_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SINK_MAX);
	__type(key, __u32);
	__type(value, __u64);
} bench_sink_counters SEC(".maps");

/* Destination ports the sink takes (host order): [0] TCP, [1] UDP. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u16);
} bench_sink_ports SEC(".maps");

#define L4_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr))

/* Checksums are updated from the template's values (RFC 1624), one 16-bit word at a time. */
static __always_inline void csum_replace32(__u16 *check, __be32 old, __be32 now)
{
	csum_replace16(check, (__u16)old, (__u16)now);
	csum_replace16(check, (__u16)(old >> 16), (__u16)(now >> 16));
}

/*
 * Pacing: the live-frames loop runs the program millions of times a second
 * and only due runs emit; the others drop their frame at once. Frames leave
 * in groups, as a NIC's interrupt coalescing hands them over. A generator
 * that fell behind (its CPU was taken away for a moment) catches up on at
 * most max_lag_ps of its schedule, back to back, and skips the rest, so a
 * burst never exceeds what a veth ring (256 frames) holds.
 */
static __always_inline bool gen_due(const struct gen_config *cfg, struct gen_state *st)
{
	__u64 now_ps;

	if (cfg->interval_ps == 0)
		return true;
	if (st->in_group) {
		st->in_group--;
		return true;
	}
	now_ps = bpf_ktime_get_ns() * 1000;
	if (st->next_ps == 0) {
		st->next_ps = now_ps;
		st->first_ns = now_ps / 1000;
	}
	if (now_ps < st->next_ps)
		return false;
	if (now_ps > st->next_ps + cfg->max_lag_ps) {
		st->lagged_ns += (now_ps - st->next_ps) / 1000;
		st->lags++;
		st->next_ps = now_ps;
	}
	st->next_ps += cfg->interval_ps * cfg->group;
	st->last_ns = now_ps / 1000;
	st->in_group = cfg->group > 0 ? cfg->group - 1 : 0;
	return true;
}

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *l4 = data + L4_OFF; /* TCP and UDP start alike: ports, then UDP's check */
	struct tcphdr *tcp = data + L4_OFF;
	__u32 zero = 0;
	struct gen_config *cfg = bpf_map_lookup_elem(&bench_gen_config, &zero);
	struct gen_state *st = bpf_map_lookup_elem(&bench_gen_state, &zero);
	__be32 src, src0;
	__be16 port, port0;
	__u16 ipc, l4c;
	__u64 n;

	if (!cfg || !st || cfg->src_count == 0 || cfg->port_count == 0)
		return XDP_ABORTED;
	if (data + GEN_FRAME_LEN > data_end)
		return XDP_ABORTED;
	if (st->seq >= cfg->limit || !gen_due(cfg, st))
		return XDP_DROP;
	__builtin_memcpy(data, cfg->frame, GEN_FRAME_LEN);
	n = st->seq++;
	src = bpf_htonl(cfg->src_base + (__u32)(n % cfg->src_count));
	port = bpf_htons(cfg->port_base + (__u16)((n / cfg->src_count) % cfg->port_count));
	src0 = bpf_htonl(cfg->src_base);
	port0 = bpf_htons(cfg->port_base);

	ipc = cfg->ip_check;
	csum_replace32(&ipc, src0, src);
	l4c = cfg->l4_check;
	csum_replace32(&l4c, src0, src); /* the pseudo-header's source */
	csum_replace16(&l4c, port0, port);

	ip->saddr = src;
	ip->check = ipc;
	l4->source = port;
	if (ip->protocol == IPPROTO_TCP) {
		tcp->check = l4c;
	} else {
		/* UDP sends a computed zero as all ones (zero means "no checksum"). */
		l4->check = l4c ? l4c : 0xffff;
	}
	return XDP_TX;
}

static __always_inline void sink_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&bench_sink_counters, &idx);

	if (c)
		*c += 1;
}

/* The benchmark's TCP / UDP packet at ip: its counter, or -1. */
static __always_inline int sink_classify(struct iphdr *ip, void *data_end)
{
	struct udphdr *l4 = (void *)(ip + 1);
	__u32 key;
	__u16 *port;

	if ((void *)(l4 + 1) > data_end || ip->ihl != 5)
		return -1;
	if (ip->protocol == IPPROTO_TCP)
		key = 0;
	else if (ip->protocol == IPPROTO_UDP)
		key = 1;
	else
		return -1;
	port = bpf_map_lookup_elem(&bench_sink_ports, &key);
	if (!port || bpf_ntohs(l4->dest) != *port)
		return -1;
	return key == 0 ? SINK_TCP : SINK_UDP;
}

SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	void *data = xdp_data(ctx), *data_end = xdp_data_end(ctx);
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	bool ipip = false;
	int kind;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	if (ip->protocol == IPPROTO_IPIP && ip->ihl == 5) {
		ipip = true;
		ip = ip + 1;
		if ((void *)(ip + 1) > data_end)
			goto pass;
	}
	kind = sink_classify(ip, data_end);
	if (kind < 0)
		goto pass;
	sink_count(kind);
	if (ipip)
		sink_count(SINK_IPIP);
	return XDP_DROP;
pass:
	sink_count(SINK_PASSED);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
