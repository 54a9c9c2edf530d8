// SPDX-License-Identifier: Apache-2.0
//
// A traffic generator for the lab: IPv4 TCP SYNs or UDP datagrams to one
// address and port, written to an interface through an AF_PACKET socket with
// sendmmsg. Sources are random (inside a given prefix, random ports: the
// flood tests) or numbered as the packet-rate rig's xdp_gen numbers them
// (frame n from the n % srcCount-th address and the (n / srcCount) %
// portCount-th port), so that either generator makes the same flows. Paced to
// `rate` frames per second in groups, or as fast as the interface takes them.
// The kernel's live-frames test runs would be faster, but not every kernel
// allows them. Runs in the caller's thread until `count` frames were handed
// to the interface or `milliseconds` passed; frames the device queue refused
// (ENOBUFS) are counted apart and, when numbered, sent again.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "ops.h"
#include "util.h"

namespace ferry {

namespace {

constexpr size_t kBatch = 64;
constexpr size_t kFrameLen = 64;  // Ethernet + IPv4 + TCP (20) or UDP (8) with payload, padded
constexpr size_t kEth = 14, kIp = 20;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// One's-complement sum of 16-bit big-endian words.
uint32_t Sum16(const uint8_t *p, size_t n, uint32_t sum) {
  for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t(p[i]) << 8) | p[i + 1];
  if (n & 1) sum += uint32_t(p[n - 1]) << 8;
  return sum;
}

uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}

struct Spec {
  uint8_t dstMac[6], srcMac[6];
  uint8_t dstIp[4], srcNet[4];
  uint32_t hostMask;  // host bits of the source prefix
  uint16_t dstPort;
  bool tcp;
  // Numbered flows (srcCount > 0): sources from srcNet as given, ports from portBase.
  uint32_t srcCount, portCount;
  uint16_t portBase;
};

// Frame n's source address (host order) and port when flows are numbered.
void Numbered(const Spec &s, uint32_t net, uint64_t n, uint32_t *src, uint16_t *sport) {
  *src = net + uint32_t(n % s.srcCount);
  *sport = uint16_t(s.portBase + (n / s.srcCount) % s.portCount);
}

// Sleeps until CLOCK_MONOTONIC reaches `ns`.
void SleepUntil(uint64_t ns) {
  timespec ts{time_t(ns / 1000000000ull), long(ns % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// Writes one frame from source address `src` (host order) and port `sport`.
void Build(uint8_t *f, const Spec &s, uint32_t src, uint16_t sport) {
  std::memset(f, 0, kFrameLen);
  std::memcpy(f, s.dstMac, 6);
  std::memcpy(f + 6, s.srcMac, 6);
  f[12] = 0x08;  // IPv4
  uint8_t *ip = f + kEth;
  size_t l4len = s.tcp ? 20 : kFrameLen - kEth - kIp;
  ip[0] = 0x45;
  uint16_t total = uint16_t(kIp + l4len);
  ip[2] = total >> 8, ip[3] = total & 0xff;
  ip[6] = 0x40;  // DF
  ip[8] = 64;
  ip[9] = s.tcp ? IPPROTO_TCP : IPPROTO_UDP;
  uint32_t srcBe = htonl(src);
  std::memcpy(ip + 12, &srcBe, 4);
  std::memcpy(ip + 16, s.dstIp, 4);
  uint16_t c = Fold(Sum16(ip, kIp, 0));
  ip[10] = c >> 8, ip[11] = c & 0xff;
  uint8_t *l4 = ip + kIp;
  l4[0] = sport >> 8, l4[1] = sport & 0xff;
  l4[2] = s.dstPort >> 8, l4[3] = s.dstPort & 0xff;
  if (s.tcp) {
    uint32_t seq = src ^ (uint32_t(sport) << 16);
    std::memcpy(l4 + 4, &seq, 4);
    l4[12] = 5 << 4;               // data offset
    l4[13] = 0x02;                 // SYN
    l4[14] = 0xfa, l4[15] = 0xf0;  // window 64240
  } else {
    l4[4] = uint8_t(l4len >> 8), l4[5] = uint8_t(l4len & 0xff);
    std::memcpy(l4 + 8, "ferry-flood", 11);
  }
  // Pseudo-header: addresses, protocol, L4 length.
  uint32_t sum = Sum16(ip + 12, 8, 0) + ip[9] + uint32_t(l4len);
  c = Fold(Sum16(l4, l4len, sum));
  if (!s.tcp && c == 0) c = 0xffff;
  uint8_t *cs = l4 + (s.tcp ? 16 : 6);
  cs[0] = c >> 8, cs[1] = c & 0xff;
}

void Bytes6(const Napi::Object &o, const char *key, uint8_t *out, size_t n, const std::string &fn) {
  Bytes b = ArgBuffer(o.Get(key), fn + ": " + key);
  if (b.size != n)
    ThrowRange(o.Env(), fn + ": " + key + " must be " + std::to_string(n) + " bytes");
  std::memcpy(out, b.data, n);
}

}  // namespace

// packetFlood({ifname, dstMac, srcMac, dstIp, srcNet, srcPrefix, dstPort,
// proto: "tcp"|"udp", count, milliseconds, seed, rate, group, srcCount,
// portCount, portBase, first}) → {sent, refused, ns}.
Napi::Value PacketFlood(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "packetFlood";
  Napi::Object o = OptObject(info[0], fn + ": options");
  Spec s{};
  std::string ifname = ArgString(o.Get("ifname"), fn + ": ifname");
  Bytes6(o, "dstMac", s.dstMac, 6, fn);
  Bytes6(o, "srcMac", s.srcMac, 6, fn);
  Bytes6(o, "dstIp", s.dstIp, 4, fn);
  Bytes6(o, "srcNet", s.srcNet, 4, fn);
  int64_t prefix = OptInt(o, "srcPrefix", fn + ": srcPrefix", 8, 32, 16);
  s.hostMask = prefix == 32 ? 0 : (0xffffffffu >> prefix);
  s.dstPort = uint16_t(OptInt(o, "dstPort", fn + ": dstPort", 1, 65535, 80));
  std::string proto = ArgString(o.Get("proto"), fn + ": proto");
  if (proto != "tcp" && proto != "udp") ThrowRange(env, fn + ": proto must be \"tcp\" or \"udp\"");
  s.tcp = proto == "tcp";
  uint64_t count =
      uint64_t(OptInt(o, "count", fn + ": count", 1, int64_t(1) << 40, int64_t(1) << 40));
  uint64_t limitNs =
      uint64_t(OptInt(o, "milliseconds", fn + ": milliseconds", 1, 3600000, 1000)) * 1000000ull;
  uint32_t rnd = uint32_t(OptInt(o, "seed", fn + ": seed", 1, 0xffffffffll, 1));
  uint64_t rate = uint64_t(OptInt(o, "rate", fn + ": rate", 0, 100000000, 0));
  size_t group = size_t(OptInt(o, "group", fn + ": group", 1, int64_t(kBatch), int64_t(kBatch)));
  s.srcCount = uint32_t(OptInt(o, "srcCount", fn + ": srcCount", 0, 1 << 24, 0));
  s.portCount = uint32_t(OptInt(o, "portCount", fn + ": portCount", 1, 65535, 1));
  s.portBase = uint16_t(OptInt(o, "portBase", fn + ": portBase", 1, 65535, 1024));
  uint64_t first = uint64_t(OptInt(o, "first", fn + ": first", 0, int64_t(1) << 52, 0));

  unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) ThrowErrno(env, fn + ": no interface " + ifname, errno);
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);  // protocol 0: send only
  if (fd < 0) ThrowErrno(env, fn + ": socket(AF_PACKET)", errno);
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_ifindex = int(ifindex);
  int one = 1;
  // Straight to the driver: the flood measures the load balancer, not this host's qdisc.
  setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr *>(&sll), sizeof(sll)) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, fn + ": bind " + ifname, err);
  }

  uint32_t addr = uint32_t(s.srcNet[0]) << 24 | uint32_t(s.srcNet[1]) << 16 |
                  uint32_t(s.srcNet[2]) << 8 | s.srcNet[3];
  uint32_t net = s.srcCount ? addr : addr & ~s.hostMask;
  std::vector<uint8_t> frames(kBatch * kFrameLen);
  iovec iov[kBatch];
  mmsghdr msgs[kBatch];
  uint64_t sent = 0, refused = 0;
  uint64_t t0 = NowNs(), now = t0;
  while (sent < count && now - t0 < limitNs) {
    // Paced: group k leaves at t0 + k * group / rate.
    // (Whole seconds first: sent * 1e9 would overflow past ~1.8e10 frames.)
    if (rate) SleepUntil(t0 + sent / rate * 1000000000ull + sent % rate * 1000000000ull / rate);
    size_t n = size_t(std::min<uint64_t>(group, count - sent));
    for (size_t i = 0; i < n; i++) {
      uint32_t src;
      uint16_t sport;
      if (s.srcCount) {
        Numbered(s, net, first + sent + i, &src, &sport);
      } else {
        rnd ^= rnd << 13, rnd ^= rnd >> 17, rnd ^= rnd << 5;  // xorshift32
        src = net | (rnd & s.hostMask);
        sport = uint16_t(1024 + (rnd >> 8) % 64000);
      }
      uint8_t *f = &frames[i * kFrameLen];
      Build(f, s, src, sport);
      iov[i] = {f, kFrameLen};
      std::memset(&msgs[i], 0, sizeof(msgs[i]));
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int r = sendmmsg(fd, msgs, unsigned(n), 0);
    if (r < 0) {
      if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR) {
        int err = errno;
        close(fd);
        ThrowErrno(env, fn + ": sendmmsg on " + ifname, err);
      }
      refused += n;
    } else {
      sent += uint64_t(r);
      refused += n - size_t(r);
    }
    now = NowNs();
  }
  close(fd);
  Napi::Object out = Napi::Object::New(env);
  out.Set("sent", Napi::Number::New(env, double(sent)));
  out.Set("refused", Napi::Number::New(env, double(refused)));
  out.Set("ns", Napi::Number::New(env, double(now - t0)));
  return out;
}

}  // namespace ferry
