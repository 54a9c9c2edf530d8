// SPDX-License-Identifier: Apache-2.0
//
// cgroup v2 attachment: opening a cgroup directory safely, attaching a
// loaded program through a bpf link (BpfObject.attachCgroup, in object.cc,
// calls AttachCgroupLink), and listing what is attached to a cgroup.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "ops.h"
#include "util.h"

namespace ferry {

namespace {

// Closes an fd when it goes out of scope (also when an exception passes).
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) close(fd_);
  }
  FdGuard(const FdGuard &) = delete;
  FdGuard &operator=(const FdGuard &) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// The program types the kernel attaches to cgroups.
bool IsCgroupProgType(enum bpf_prog_type t) {
  switch (t) {
    case BPF_PROG_TYPE_CGROUP_SKB:
    case BPF_PROG_TYPE_CGROUP_SOCK:
    case BPF_PROG_TYPE_CGROUP_SOCK_ADDR:
    case BPF_PROG_TYPE_SOCK_OPS:
    case BPF_PROG_TYPE_CGROUP_DEVICE:
    case BPF_PROG_TYPE_CGROUP_SYSCTL:
    case BPF_PROG_TYPE_CGROUP_SOCKOPT:
      return true;
    default:
      return false;
  }
}

}  // namespace

// A read-only fd of a cgroup v2 directory. open() errors keep their errno
// (ENOENT, ENOTDIR, EACCES); a directory elsewhere (a v1 hierarchy, /tmp)
// is EINVAL, checked here so the message says so rather than the kernel's
// bare EBADF.
int OpenCgroupDir(Napi::Env env, const std::string &path, const std::string &op) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, op + ": open('" + path + "')", errno);
  struct statfs sf;
  if (fstatfs(fd, &sf) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, op + ": fstatfs('" + path + "')", err);
  }
  if (sf.f_type != CGROUP2_SUPER_MAGIC) {
    close(fd);
    throw MakeCodedError(env, op + ": '" + path + "' is not a cgroup v2 directory (EINVAL)", EINVAL,
                         op);
  }
  return fd;
}

int AttachCgroupLink(Napi::Env env, struct bpf_program *prog, const std::string &cgroupPath,
                     const std::string &op) {
  const std::string name = bpf_program__name(prog);
  if (bpf_program__fd(prog) < 0)
    throw MakeCodedError(env, op + ": program '" + name + "' is not loaded (EINVAL)", EINVAL, op);
  if (!IsCgroupProgType(bpf_program__type(prog)))
    throw MakeCodedError(env,
                         op + ": program '" + name + "' (section '" +
                             bpf_program__section_name(prog) +
                             "') is not a cgroup program (EINVAL)",
                         EINVAL, op);
  FdGuard cg(OpenCgroupDir(env, cgroupPath, op));
  ClearLibbpfLog();
  errno = 0;
  struct bpf_link *link = bpf_program__attach_cgroup(prog, cg.get());
  if (link == nullptr)
    ThrowErrno(env, op + ": bpf_program__attach_cgroup('" + name + "', '" + cgroupPath + "')",
               errno ? errno : EINVAL, true);
  // The caller owns a duplicate of the link fd. The libbpf struct is
  // disconnected first, so destroying it only closes libbpf's own fd and
  // never detaches the link.
  int fd = fcntl(bpf_link__fd(link), F_DUPFD_CLOEXEC, 0);
  int err = errno;
  bpf_link__disconnect(link);
  bpf_link__destroy(link);
  if (fd < 0) ThrowErrno(env, op + ": dup of the link fd", err);
  return fd;
}

// cgroupQuery(cgroupPath, attachType) → {progIds, attachFlags}: the programs
// attached directly to this cgroup for the attach type (not inherited ones).
Napi::Value CgroupQuery(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "cgroupQuery";
  std::string path = ArgString(info[0], fn + ": cgroupPath");
  auto type = static_cast<enum bpf_attach_type>(
      ArgInt(info[1], fn + ": attachType", 0, __MAX_BPF_ATTACH_TYPE - 1));
  FdGuard cg(OpenCgroupDir(env, path, fn));
  std::vector<uint32_t> ids(64);
  for (;;) {
    uint32_t count = static_cast<uint32_t>(ids.size());
    uint32_t flags = 0;
    int r = bpf_prog_query(cg.get(), type, 0, &flags, ids.data(), &count);
    if (r < 0 && ErrOf(r) == ENOSPC && ids.size() < 65536) {
      ids.resize(ids.size() * 4);
      continue;
    }
    if (r < 0)
      ThrowErrno(env,
                 fn + ": bpf_prog_query('" + path + "', attach type " +
                     std::to_string(static_cast<int>(type)) + ")",
                 ErrOf(r));
    Napi::Array out = Napi::Array::New(env, count);
    for (uint32_t i = 0; i < count; i++) out.Set(i, ids[i]);
    Napi::Object o = Napi::Object::New(env);
    o.Set("progIds", out);
    o.Set("attachFlags", flags);
    return o;
  }
}

}  // namespace ferry
