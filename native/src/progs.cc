// SPDX-License-Identifier: Apache-2.0
//
// Programs: BPF_PROG_TEST_RUN, XDP attach through bpf links, tc attach
// through libbpf's netlink helpers, and interface lookup.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <limits.h>
#include <linux/if_link.h>
#include <net/if.h>

#include <string>
#include <vector>

#include "ops.h"
#include "util.h"

namespace ferry {

namespace {

// Upper bound for dataOutSize: far above any XDP or skb test packet, low
// enough that a wrong number from JS cannot make us allocate gigabytes.
constexpr int64_t kMaxTestData = 16 * 1024 * 1024;

std::string Fd(int fd) { return std::to_string(fd); }

enum bpf_tc_attach_point ArgDirection(const Napi::Value &v, const std::string &what) {
  std::string d = ArgString(v, what);
  if (d == "ingress") return BPF_TC_INGRESS;
  if (d == "egress") return BPF_TC_EGRESS;
  ThrowRange(v.Env(), what + " must be 'ingress' or 'egress', got '" + d + "'");
}

struct TcTarget {
  bpf_tc_hook hook;
  bpf_tc_opts opts;
  std::string desc;
};

// Arguments (ifindex, direction, {handle, priority}) at info[first...].
TcTarget ArgTcTarget(const Napi::CallbackInfo &info, size_t first, const std::string &fn) {
  TcTarget t;
  t.hook = Opts<bpf_tc_hook>();
  t.opts = Opts<bpf_tc_opts>();
  t.hook.ifindex = static_cast<int>(ArgInt(info[first], fn + ": ifindex", 1, INT_MAX));
  t.hook.attach_point = ArgDirection(info[first + 1], fn + ": direction");
  Napi::Object o = OptObject(info[first + 2], fn + ": options");
  t.opts.handle = static_cast<uint32_t>(OptInt(o, "handle", fn + ": options", 1, UINT32_MAX, 1));
  t.opts.priority =
      static_cast<uint32_t>(OptInt(o, "priority", fn + ": options", 1, UINT16_MAX, 1));
  t.desc = "ifindex " + std::to_string(t.hook.ifindex) + " " +
           (t.hook.attach_point == BPF_TC_INGRESS ? "ingress" : "egress") + " handle " +
           std::to_string(t.opts.handle) + " priority " + std::to_string(t.opts.priority);
  return t;
}

}  // namespace

Napi::Value ProgTestRun(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "progTestRun";
  int progFd = ArgFd(info[0], fn + ": progFd");
  if (!info[1].IsObject()) ThrowType(env, fn + ": options must be an object");
  Napi::Object o = OptObject(info[1], fn + ": options");
  const std::string w = fn + ": options";
  // Read every option before taking pointers into Buffers: a getter could
  // run JS that detaches a buffer already looked at.
  Napi::Value datav = o.Get("data");
  auto opts = Opts<bpf_test_run_opts>();
  opts.flags = static_cast<uint32_t>(OptInt(o, "flags", w, 0, UINT32_MAX, 0));
  opts.repeat = static_cast<int>(OptInt(o, "repeat", w, 0, INT_MAX, 0));
  opts.batch_size = static_cast<uint32_t>(OptInt(o, "batchSize", w, 0, UINT32_MAX, 0));
  const bool live = (opts.flags & BPF_F_TEST_XDP_LIVE_FRAMES) != 0;
  Napi::Value outv = o.Get("dataOutSize");
  Napi::Value ctxv = o.Get("ctxIn");
  Bytes data = ArgBuffer(datav, w + ".data");
  int64_t outSize = outv.IsUndefined() ? static_cast<int64_t>(data.size) + 256
                                       : ArgInt(outv, w + ".dataOutSize", 0, kMaxTestData);
  Bytes ctxIn{nullptr, 0};
  if (!IsAbsent(ctxv)) ctxIn = ArgBuffer(ctxv, w + ".ctxIn");

  std::vector<uint8_t> out;
  std::vector<uint8_t> ctxOut;
  opts.data_in = data.size ? data.data : nullptr;
  opts.data_size_in = static_cast<uint32_t>(data.size);
  if (ctxIn.size) {
    opts.ctx_in = ctxIn.data;
    opts.ctx_size_in = static_cast<uint32_t>(ctxIn.size);
  }
  // Live frames mode sends the frames for real and takes no output buffers.
  if (!live) {
    out.resize(static_cast<size_t>(outSize) + 1);
    opts.data_out = out.data();
    opts.data_size_out = static_cast<uint32_t>(outSize);
    if (ctxIn.size) {
      ctxOut.resize(ctxIn.size);
      opts.ctx_out = ctxOut.data();
      opts.ctx_size_out = static_cast<uint32_t>(ctxOut.size());
    }
  }
  int r = bpf_prog_test_run_opts(progFd, &opts);
  if (r < 0) {
    int err = ErrOf(r);
    std::string op = fn + ": bpf_prog_test_run_opts(prog fd " + Fd(progFd) + ")";
    // Checked only on failure: benchmarks call this in a loop.
    if (err == EINVAL || err == EBADF || err == EBADFD) ExpectFdKind(env, progFd, FdKind::Prog, fn);
    if (err == ENOSPC && !live)
      op += " (output is larger than dataOutSize " + std::to_string(outSize) + ")";
    if (err == EINVAL && data.size < 14)
      op += " (packet test runs need at least an Ethernet header, 14 bytes)";
    ThrowErrno(env, op, err);
  }
  Napi::Object res = Napi::Object::New(env);
  res.Set("retval", opts.retval);
  size_t got = live ? 0 : std::min<size_t>(opts.data_size_out, static_cast<size_t>(outSize));
  res.Set("data", CopyBuffer(env, out.data(), got));
  res.Set("durationNs", opts.duration);
  if (!ctxOut.empty()) {
    size_t cgot = std::min<size_t>(opts.ctx_size_out, ctxOut.size());
    res.Set("ctxOut", CopyBuffer(env, ctxOut.data(), cgot));
  }
  return res;
}

// Runs a BPF_PROG_TYPE_SYSCALL program once with ctx as its argument (the
// kernel copies the program's changes to ctx back); returns its retval.
Napi::Value ProgRunSyscall(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "progRunSyscall";
  int progFd = ArgFd(info[0], fn + ": progFd");
  Bytes ctx = ArgBuffer(info[1], fn + ": ctx");
  if (ctx.size == 0 || ctx.size > 65535) ThrowRange(env, fn + ": ctx must be 1 to 65535 bytes");
  auto opts = Opts<bpf_test_run_opts>();
  opts.ctx_in = ctx.data;
  opts.ctx_size_in = static_cast<uint32_t>(ctx.size);
  int r = bpf_prog_test_run_opts(progFd, &opts);
  if (r < 0) {
    int err = ErrOf(r);
    if (err == EINVAL || err == EBADF || err == EBADFD) ExpectFdKind(env, progFd, FdKind::Prog, fn);
    ThrowErrno(env, fn + ": bpf_prog_test_run_opts(prog fd " + Fd(progFd) + ")", err);
  }
  // A syscall program returns an int: negative values are its errors.
  return Napi::Number::New(env, static_cast<int32_t>(opts.retval));
}

Napi::Value XdpAttach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "xdpAttach";
  int progFd = ArgFd(info[0], fn + ": progFd");
  int ifindex = static_cast<int>(ArgInt(info[1], fn + ": ifindex", 1, INT_MAX));
  std::string mode = ArgString(info[2], fn + ": mode");
  auto opts = Opts<bpf_link_create_opts>();
  if (mode == "native")
    opts.flags = XDP_FLAGS_DRV_MODE;
  else if (mode == "generic")
    opts.flags = XDP_FLAGS_SKB_MODE;
  else if (mode == "auto")
    opts.flags = 0;
  else
    ThrowRange(env, fn + ": mode must be 'native', 'generic' or 'auto', got '" + mode + "'");
  ExpectFdKind(env, progFd, FdKind::Prog, fn);
  int link = bpf_link_create(progFd, ifindex, BPF_XDP, &opts);
  if (link < 0)
    ThrowErrno(env,
               fn + ": bpf_link_create(BPF_XDP, prog fd " + Fd(progFd) + ", ifindex " +
                   std::to_string(ifindex) + ", " + mode + ")",
               ErrOf(link));
  return Napi::Number::New(env, link);
}

// linkUpdate(linkFd, progFd, oldProgFd?): with oldProgFd the replacement
// only happens if the link still runs that program (BPF_F_REPLACE).
Napi::Value LinkUpdate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "linkUpdate";
  int linkFd = ArgFd(info[0], fn + ": linkFd");
  int progFd = ArgFd(info[1], fn + ": progFd");
  auto opts = Opts<bpf_link_update_opts>();
  if (!IsAbsent(info[2])) {
    opts.old_prog_fd = static_cast<uint32_t>(ArgFd(info[2], fn + ": oldProgFd"));
    opts.flags = BPF_F_REPLACE;
  }
  ExpectFdKind(env, linkFd, FdKind::Link, fn);
  ExpectFdKind(env, progFd, FdKind::Prog, fn);
  int r = bpf_link_update(linkFd, progFd, &opts);
  if (r < 0)
    ThrowErrno(env,
               fn + ": bpf_link_update(link fd " + Fd(linkFd) + ", prog fd " + Fd(progFd) + ")",
               ErrOf(r));
  return env.Undefined();
}

Napi::Value LinkDetach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int linkFd = ArgFd(info[0], "linkDetach: linkFd");
  ExpectFdKind(env, linkFd, FdKind::Link, "linkDetach");
  int r = bpf_link_detach(linkFd);
  if (r < 0) ThrowErrno(env, "linkDetach: bpf_link_detach(link fd " + Fd(linkFd) + ")", ErrOf(r));
  return env.Undefined();
}

Napi::Value LinkInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "linkInfo: fd");
  ExpectFdKind(env, fd, FdKind::Link, "linkInfo");
  struct bpf_link_info li;
  std::memset(&li, 0, sizeof(li));
  uint32_t len = sizeof(li);
  int r = bpf_obj_get_info_by_fd(fd, &li, &len);
  if (r < 0) ThrowErrno(env, "linkInfo: bpf_obj_get_info_by_fd(fd " + Fd(fd) + ")", ErrOf(r));
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", li.id);
  o.Set("progId", li.prog_id);
  o.Set("type", li.type);
  o.Set("ifindex", li.type == BPF_LINK_TYPE_XDP ? li.xdp.ifindex : 0);
  // cgroup ids are the cgroup directory's inode number: well below 2^53.
  const bool cg = li.type == BPF_LINK_TYPE_CGROUP;
  o.Set("cgroupId", cg ? static_cast<double>(li.cgroup.cgroup_id) : 0);
  o.Set("attachType", cg ? static_cast<int>(li.cgroup.attach_type) : -1);
  return o;
}

Napi::Value XdpQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int ifindex = static_cast<int>(ArgInt(info[0], "xdpQuery: ifindex", 1, INT_MAX));
  auto opts = Opts<bpf_xdp_query_opts>();
  ClearLibbpfLog();
  int r = bpf_xdp_query(ifindex, 0, &opts);
  if (r < 0)
    ThrowErrno(env, "xdpQuery: bpf_xdp_query(ifindex " + std::to_string(ifindex) + ")", ErrOf(r),
               true);
  const char *mode = "none";
  uint32_t progId = opts.prog_id;
  switch (opts.attach_mode) {
    case XDP_ATTACHED_DRV:
      mode = "native";
      break;
    case XDP_ATTACHED_SKB:
      mode = "generic";
      break;
    case XDP_ATTACHED_HW:
      mode = "offload";
      break;
    case XDP_ATTACHED_MULTI:
      mode = "multi";
      // Several modes at once: prog_id is 0; report the driver program.
      progId = opts.drv_prog_id ? opts.drv_prog_id
                                : (opts.skb_prog_id ? opts.skb_prog_id : opts.hw_prog_id);
      break;
    default:
      break;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("progId", progId);
  o.Set("mode", mode);
  o.Set("driverProgId", opts.drv_prog_id);
  o.Set("genericProgId", opts.skb_prog_id);
  o.Set("offloadProgId", opts.hw_prog_id);
  return o;
}

Napi::Value TcAttach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "tcAttach";
  int progFd = ArgFd(info[0], fn + ": progFd");
  TcTarget t = ArgTcTarget(info, 1, fn);
  ExpectFdKind(env, progFd, FdKind::Prog, fn);
  ClearLibbpfLog();
  int r = bpf_tc_hook_create(&t.hook);
  if (r < 0 && ErrOf(r) != EEXIST)
    ThrowErrno(env, fn + ": bpf_tc_hook_create(" + t.desc + ")", ErrOf(r), true);
  t.opts.prog_fd = progFd;
  t.opts.flags = BPF_TC_F_REPLACE;
  r = bpf_tc_attach(&t.hook, &t.opts);
  if (r < 0)
    ThrowErrno(env, fn + ": bpf_tc_attach(prog fd " + Fd(progFd) + ", " + t.desc + ")", ErrOf(r),
               true);
  return env.Undefined();
}

// Removes the filter only: the clsact qdisc stays, since other filters may
// hang off it.
Napi::Value TcDetach(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  TcTarget t = ArgTcTarget(info, 0, "tcDetach");
  ClearLibbpfLog();
  int r = bpf_tc_detach(&t.hook, &t.opts);
  if (r < 0) ThrowErrno(env, "tcDetach: bpf_tc_detach(" + t.desc + ")", ErrOf(r), true);
  return env.Undefined();
}

// tcQuery(ifindex, direction, opts?) → {progId} or null when no such filter.
Napi::Value TcQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  TcTarget t = ArgTcTarget(info, 0, "tcQuery");
  ClearLibbpfLog();
  int r = bpf_tc_query(&t.hook, &t.opts);
  if (r < 0) {
    int err = ErrOf(r);
    // No filter, or no clsact qdisc at all.
    if (err == ENOENT || err == EINVAL) return env.Null();
    ThrowErrno(env, "tcQuery: bpf_tc_query(" + t.desc + ")", err, true);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("progId", t.opts.prog_id);
  return o;
}

Napi::Value IfNameToIndex(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info[0], "ifNameToIndex: name");
  if (name.size() >= IF_NAMESIZE)
    ThrowRange(
        env, "ifNameToIndex: name longer than " + std::to_string(IF_NAMESIZE - 1) + " characters");
  errno = 0;
  unsigned idx = if_nametoindex(name.c_str());
  if (idx == 0)
    ThrowErrno(env, "ifNameToIndex: if_nametoindex('" + name + "')", errno ? errno : ENODEV);
  return Napi::Number::New(env, idx);
}

}  // namespace ferry
