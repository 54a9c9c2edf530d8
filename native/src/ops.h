// SPDX-License-Identifier: Apache-2.0
//
// The functions the addon exports, grouped by file. Each takes its arguments
// straight from JS and validates them itself.
#ifndef FERRY_NATIVE_OPS_H
#define FERRY_NATIVE_OPS_H

#include <napi.h>

struct bpf_program;

#include <cstdint>
#include <string>

namespace ferry {

// ---- maps.cc --------------------------------------------------------------

// What the kernel says about a map fd, plus the buffer size a value needs.
struct MapMeta {
  uint32_t id;
  uint32_t type;
  uint32_t keySize;
  uint32_t valueSize;
  uint32_t maxEntries;
  uint32_t flags;
  std::string name;
  bool perCpu;
  size_t valueBufSize;  // numPossibleCpus * roundup(valueSize, 8) if perCpu
};

// The map behind fd. strict: check with /proc that fd is a map (for calls
// that return the info); otherwise only that the kernel's answer is
// plausible for a map, leaving the rest to the kernel (see ThrowMapErr).
MapMeta GetMapMeta(Napi::Env env, int fd, const std::string &op, bool strict = false);
// Throws the error of a map operation on fd, naming fd's kind when the
// kernel refused it for not being a map.
[[noreturn]] void ThrowMapErr(Napi::Env env, int fd, const std::string &op, int err);
Napi::Object MapMetaToJs(Napi::Env env, const MapMeta &m);
int NumPossibleCpus(Napi::Env env);

Napi::Value ObjGet(const Napi::CallbackInfo &info);
Napi::Value ObjPin(const Napi::CallbackInfo &info);
Napi::Value CloseFd(const Napi::CallbackInfo &info);
Napi::Value MapInfo(const Napi::CallbackInfo &info);
Napi::Value ProgInfo(const Napi::CallbackInfo &info);
Napi::Value ProgFdById(const Napi::CallbackInfo &info);
Napi::Value EnableStats(const Napi::CallbackInfo &info);
Napi::Value MapCreate(const Napi::CallbackInfo &info);
Napi::Value MapLookup(const Napi::CallbackInfo &info);
Napi::Value MapUpdate(const Napi::CallbackInfo &info);
Napi::Value MapDelete(const Napi::CallbackInfo &info);
Napi::Value MapNextKey(const Napi::CallbackInfo &info);
Napi::Value MapLookupFd(const Napi::CallbackInfo &info);
Napi::Value MapDumpRaw(const Napi::CallbackInfo &info);
Napi::Value MapUpdateBatch(const Napi::CallbackInfo &info);
Napi::Value MapDeleteBatch(const Napi::CallbackInfo &info);
Napi::Value MapMmap(const Napi::CallbackInfo &info);
Napi::Value MapUpdateAsync(const Napi::CallbackInfo &info);

// ---- progs.cc -------------------------------------------------------------

Napi::Value ProgTestRun(const Napi::CallbackInfo &info);
Napi::Value ProgRunSyscall(const Napi::CallbackInfo &info);
Napi::Value XdpAttach(const Napi::CallbackInfo &info);
Napi::Value LinkUpdate(const Napi::CallbackInfo &info);
Napi::Value LinkDetach(const Napi::CallbackInfo &info);
Napi::Value LinkInfo(const Napi::CallbackInfo &info);
Napi::Value XdpQuery(const Napi::CallbackInfo &info);
Napi::Value TcAttach(const Napi::CallbackInfo &info);
Napi::Value TcDetach(const Napi::CallbackInfo &info);
Napi::Value TcQuery(const Napi::CallbackInfo &info);
Napi::Value IfNameToIndex(const Napi::CallbackInfo &info);
Napi::Value SdNotify(const Napi::CallbackInfo &info);

// ---- flood.cc -------------------------------------------------------------

Napi::Value PacketFlood(const Napi::CallbackInfo &info);

// ---- socket.cc ------------------------------------------------------------

Napi::Value SocketOpen(const Napi::CallbackInfo &info);
Napi::Value SocketSetMark(const Napi::CallbackInfo &info);

// ---- ring.cc --------------------------------------------------------------

Napi::Value RingOpen(const Napi::CallbackInfo &info);
Napi::Value RingConsume(const Napi::CallbackInfo &info);
Napi::Value RingClose(const Napi::CallbackInfo &info);

// ---- cgroup.cc ------------------------------------------------------------

// A read-only fd of a cgroup v2 directory (the caller closes it); throws
// ENOENT / ENOTDIR / EACCES from open(), EINVAL for a non-cgroup2 directory.
int OpenCgroupDir(Napi::Env env, const std::string &path, const std::string &op);
// bpf_program__attach_cgroup for a loaded cgroup program (the attach type
// comes from its section); returns a link fd the caller owns.
int AttachCgroupLink(Napi::Env env, struct bpf_program *prog, const std::string &cgroupPath,
                     const std::string &op);
Napi::Value CgroupQuery(const Napi::CallbackInfo &info);

// ---- btf.cc ---------------------------------------------------------------

Napi::Value BtfStructLayout(const Napi::CallbackInfo &info);

// ---- object.cc ------------------------------------------------------------

// Registers the BpfObject class in the addon's per-environment data.
void InitBpfObject(Napi::Env env);
Napi::Value OpenObject(const Napi::CallbackInfo &info);

}  // namespace ferry

#endif
