// SPDX-License-Identifier: Apache-2.0
//
// Map and generic fd operations. Every map call first asks the kernel for the
// map's key and value sizes (BPF_OBJ_GET_INFO_BY_FD) and checks the caller's
// buffers against them, so the kernel never reads or writes past a Buffer.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <limits.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ops.h"
#include "util.h"

namespace ferry {

namespace {

constexpr int kENOTSUPP = 524;  // kernel-internal, returned by bpf(2)
// Far above what the kernel accepts for any map (keys: 512 bytes for hash
// maps; values: KMALLOC_MAX_SIZE, 32 KiB per CPU).
constexpr uint32_t kMaxKeySize = 64 * 1024;
constexpr uint32_t kMaxValueSize = 64 * 1024 * 1024;

bool IsPerCpuType(uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return true;
    default:
      return false;
  }
}

bool IsUnsupported(int err) { return err == kENOTSUPP || err == EOPNOTSUPP || err == EINVAL; }

std::string Describe(const MapMeta &m, int fd) {
  return "map '" + m.name + "' (id " + std::to_string(m.id) + ", fd " + std::to_string(fd) + ")";
}

void CheckSize(Napi::Env env, const std::string &what, size_t got, size_t want, const MapMeta &m,
               int fd) {
  if (got == want) return;
  ThrowRange(env, what + " must be " + std::to_string(want) + " bytes for " + Describe(m, fd) +
                      ", got " + std::to_string(got));
}

const uint8_t *KeyPtr(const Bytes &b) {
  // Maps without keys (queue, stack, bloom filter) take a NULL key.
  return b.size == 0 ? nullptr : b.data;
}

}  // namespace

int NumPossibleCpus(Napi::Env env) {
  int n = libbpf_num_possible_cpus();
  if (n <= 0) ThrowErrno(env, "libbpf_num_possible_cpus", n < 0 ? -n : EINVAL);
  return n;
}

void ThrowMapErr(Napi::Env env, int fd, const std::string &op, int err) {
  // The kernel answers EINVAL when the fd is not a map, EBADF or (6.18's
  // BPF_OBJ_GET_INFO_BY_FD) EBADFD when it is not open; say what it is.
  if (err == EINVAL || err == EBADF || err == EBADFD) ExpectFdKind(env, fd, FdKind::Map, op);
  ThrowErrno(env, op, err);
}

MapMeta GetMapMeta(Napi::Env env, int fd, const std::string &op, bool strict) {
  // Asking /proc what the fd is costs more than the map operation itself, so
  // the hot paths trust BPF_OBJ_GET_INFO_BY_FD when its answer looks like a
  // map; for any other fd the kernel then refuses the operation, and
  // ThrowMapErr names the fd's kind.
  if (strict) ExpectFdKind(env, fd, FdKind::Map, op);
  struct bpf_map_info info;
  std::memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  int r = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (r < 0)
    ThrowMapErr(env, fd, op + ": bpf_obj_get_info_by_fd(fd " + std::to_string(fd) + ")", ErrOf(r));
  bool plausible = info.type > BPF_MAP_TYPE_UNSPEC && info.type < 256 &&
                   info.key_size <= kMaxKeySize && info.value_size <= kMaxValueSize &&
                   strnlen(info.name, sizeof(info.name)) < sizeof(info.name);
  if (!plausible) {  // never true for a real map
    ExpectFdKind(env, fd, FdKind::Map, op);
    throw MakeCodedError(
        env, op + ": fd " + std::to_string(fd) + " reports implausible map sizes (EINVAL)", EINVAL,
        op);
  }
  MapMeta m;
  m.id = info.id;
  m.type = info.type;
  m.keySize = info.key_size;
  m.valueSize = info.value_size;
  m.maxEntries = info.max_entries;
  m.flags = info.map_flags;
  m.name.assign(info.name, strnlen(info.name, sizeof(info.name)));
  m.perCpu = IsPerCpuType(info.type);
  m.valueBufSize = m.perCpu ? static_cast<size_t>(NumPossibleCpus(env)) *
                                  ((static_cast<size_t>(m.valueSize) + 7) & ~size_t{7})
                            : m.valueSize;
  return m;
}

Napi::Object MapMetaToJs(Napi::Env env, const MapMeta &m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", m.id);
  o.Set("name", m.name);
  o.Set("type", m.type);
  o.Set("keySize", m.keySize);
  o.Set("valueSize", m.valueSize);
  o.Set("maxEntries", m.maxEntries);
  o.Set("flags", m.flags);
  return o;
}

// ---- fds --------------------------------------------------------------------

Napi::Value ObjGet(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info[0], "objGet: path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(env, "objGet: bpf_obj_get('" + path + "')", ErrOf(fd));
  return Napi::Number::New(env, fd);
}

Napi::Value ObjPin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "objPin: fd");
  std::string path = ArgString(info[1], "objPin: path");
  int r = bpf_obj_pin(fd, path.c_str());
  if (r < 0)
    ThrowErrno(env, "objPin: bpf_obj_pin(fd " + std::to_string(fd) + ", '" + path + "')", ErrOf(r));
  return env.Undefined();
}

// Closes only BPF fds: a stale number from JS must not close a socket or a
// file libuv owns.
Napi::Value CloseFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "closeFd: fd");
  FdKind k = KindOfFd(env, fd, "closeFd");
  if (k == FdKind::NotBpf)
    throw MakeCodedError(env,
                         "closeFd: fd " + std::to_string(fd) +
                             " is not a BPF object; refusing to close it "
                             "(EBADF)",
                         EBADF, "closeFd");
  if (close(fd) != 0) ThrowErrno(env, "closeFd: close(" + std::to_string(fd) + ")", errno);
  return env.Undefined();
}

Napi::Value MapInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapInfo: fd");
  return MapMetaToJs(env, GetMapMeta(env, fd, "mapInfo", true));
}

Napi::Value ProgInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "progInfo: fd");
  ExpectFdKind(env, fd, FdKind::Prog, "progInfo");
  struct bpf_prog_info pi;
  std::memset(&pi, 0, sizeof(pi));
  uint32_t len = sizeof(pi);
  int r = bpf_obj_get_info_by_fd(fd, &pi, &len);
  if (r < 0)
    ThrowErrno(env, "progInfo: bpf_obj_get_info_by_fd(fd " + std::to_string(fd) + ")", ErrOf(r));
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", pi.id);
  o.Set("name", std::string(pi.name, strnlen(pi.name, sizeof(pi.name))));
  o.Set("type", pi.type);
  // Zero unless run-time statistics are on (enableStats or kernel.bpf_stats_enabled).
  o.Set("runTimeNs", static_cast<double>(pi.run_time_ns));
  o.Set("runCount", static_cast<double>(pi.run_cnt));
  return o;
}

Napi::Value ProgFdById(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t id = static_cast<uint32_t>(ArgInt(info[0], "progFdById: id", 1, UINT32_MAX));
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0)
    ThrowErrno(env, "progFdById: bpf_prog_get_fd_by_id(" + std::to_string(id) + ")", ErrOf(fd));
  return Napi::Number::New(env, fd);
}

// Run-time statistics of every BPF program while the returned fd stays open.
Napi::Value EnableStats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) ThrowErrno(env, "enableStats: bpf_enable_stats(BPF_STATS_RUN_TIME)", ErrOf(fd));
  return Napi::Number::New(env, fd);
}

// ---- single-element operations ---------------------------------------------

Napi::Value MapCreate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowType(env, "mapCreate: options must be an object");
  Napi::Object o = OptObject(info[0], "mapCreate: options");
  const std::string w = "mapCreate: options";
  for (const char *k : {"type", "keySize", "valueSize", "maxEntries"})
    if (o.Get(k).IsUndefined()) ThrowType(env, w + "." + k + " is required");
  uint32_t type = static_cast<uint32_t>(OptInt(o, "type", w, 1, UINT32_MAX, 0));
  std::string name = ArgString(o.Get("name"), w + ".name");
  if (name.size() >= BPF_OBJ_NAME_LEN)
    ThrowRange(env,
               w + ".name must be at most " + std::to_string(BPF_OBJ_NAME_LEN - 1) + " characters");
  uint32_t keySize = static_cast<uint32_t>(OptInt(o, "keySize", w, 0, UINT32_MAX, 0));
  uint32_t valueSize = static_cast<uint32_t>(OptInt(o, "valueSize", w, 0, UINT32_MAX, 0));
  uint32_t maxEntries = static_cast<uint32_t>(OptInt(o, "maxEntries", w, 0, UINT32_MAX, 0));
  auto opts = Opts<bpf_map_create_opts>();
  opts.map_flags = static_cast<uint32_t>(OptInt(o, "flags", w, 0, UINT32_MAX, 0));
  int inner = static_cast<int>(OptInt(o, "innerMapFd", w, -1, INT_MAX, -1));
  if (inner >= 0) {
    ExpectFdKind(env, inner, FdKind::Map, "mapCreate: innerMapFd");
    opts.inner_map_fd = static_cast<uint32_t>(inner);
  }
  int fd = bpf_map_create(static_cast<enum bpf_map_type>(type), name.c_str(), keySize, valueSize,
                          maxEntries, &opts);
  if (fd < 0)
    ThrowErrno(env, "mapCreate: bpf_map_create('" + name + "', type " + std::to_string(type) + ")",
               ErrOf(fd));
  return Napi::Number::New(env, fd);
}

Napi::Value MapLookup(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapLookup: fd");
  Bytes key = ArgBuffer(info[1], "mapLookup: key");
  MapMeta m = GetMapMeta(env, fd, "mapLookup");
  CheckSize(env, "mapLookup: key", key.size, m.keySize, m, fd);
  auto value = Napi::Buffer<uint8_t>::New(env, m.valueBufSize);
  int r = bpf_map_lookup_elem(fd, KeyPtr(key), value.Data());
  if (r < 0) {
    int err = ErrOf(r);
    if (err == ENOENT) return env.Null();
    ThrowMapErr(env, fd, "mapLookup: bpf_map_lookup_elem on " + Describe(m, fd), err);
  }
  return value;
}

// The arguments of mapUpdate and mapUpdateAsync: fd, key, value, flags,
// checked against the map's sizes.
struct UpdateArgs {
  int fd;
  Bytes key;
  Bytes value;
  uint64_t flags;
  MapMeta meta;
};

static UpdateArgs ArgsOfUpdate(const Napi::CallbackInfo &info, const std::string &fn) {
  Napi::Env env = info.Env();
  UpdateArgs a{ArgFd(info[0], fn + ": fd"),
               ArgBuffer(info[1], fn + ": key"),
               ArgBuffer(info[2], fn + ": value"),
               IsAbsent(info[3]) ? 0 : ArgU32(info[3], fn + ": flags"),
               {}};
  a.meta = GetMapMeta(env, a.fd, fn);
  CheckSize(env, fn + ": key", a.key.size, a.meta.keySize, a.meta, a.fd);
  CheckSize(env, fn + ": value", a.value.size, a.meta.valueBufSize, a.meta, a.fd);
  return a;
}

Napi::Value MapUpdate(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  UpdateArgs a = ArgsOfUpdate(info, "mapUpdate");
  int r = bpf_map_update_elem(a.fd, KeyPtr(a.key), a.value.data, a.flags);
  if (r < 0)
    ThrowMapErr(env, a.fd, "mapUpdate: bpf_map_update_elem on " + Describe(a.meta, a.fd), ErrOf(r));
  return env.Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapDelete: fd");
  Bytes key = ArgBuffer(info[1], "mapDelete: key");
  MapMeta m = GetMapMeta(env, fd, "mapDelete");
  CheckSize(env, "mapDelete: key", key.size, m.keySize, m, fd);
  int r = bpf_map_delete_elem(fd, KeyPtr(key));
  if (r < 0) {
    int err = ErrOf(r);
    if (err == ENOENT) return Napi::Boolean::New(env, false);
    ThrowMapErr(env, fd, "mapDelete: bpf_map_delete_elem on " + Describe(m, fd), err);
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value MapNextKey(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapNextKey: fd");
  bool first = IsAbsent(info[1]);
  Bytes key{nullptr, 0};
  if (!first) key = ArgBuffer(info[1], "mapNextKey: key");
  MapMeta m = GetMapMeta(env, fd, "mapNextKey");
  if (!first) CheckSize(env, "mapNextKey: key", key.size, m.keySize, m, fd);
  auto next = Napi::Buffer<uint8_t>::New(env, m.keySize);
  int r = bpf_map_get_next_key(fd, first ? nullptr : key.data, next.Data());
  if (r < 0) {
    int err = ErrOf(r);
    if (err == ENOENT) return env.Null();
    ThrowMapErr(env, fd, "mapNextKey: bpf_map_get_next_key on " + Describe(m, fd), err);
  }
  return next;
}

Napi::Value MapLookupFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapLookupFd: fd");
  Bytes key = ArgBuffer(info[1], "mapLookupFd: key");
  MapMeta m = GetMapMeta(env, fd, "mapLookupFd", true);
  bool progs = m.type == BPF_MAP_TYPE_PROG_ARRAY;
  if (m.type != BPF_MAP_TYPE_ARRAY_OF_MAPS && m.type != BPF_MAP_TYPE_HASH_OF_MAPS && !progs)
    throw MakeCodedError(
        env, "mapLookupFd: " + Describe(m, fd) + " is not a map-in-map or program array (EINVAL)",
        EINVAL, "mapLookupFd");
  CheckSize(env, "mapLookupFd: key", key.size, m.keySize, m, fd);
  uint32_t id = 0;
  if (m.valueBufSize != sizeof(id))
    ThrowMapErr(env, fd, "mapLookupFd: unexpected value size of " + Describe(m, fd), EINVAL);
  int r = bpf_map_lookup_elem(fd, key.data, &id);
  if (r < 0) {
    int err = ErrOf(r);
    if (err == ENOENT) return env.Null();
    ThrowMapErr(env, fd, "mapLookupFd: bpf_map_lookup_elem on " + Describe(m, fd), err);
  }
  int inner = progs ? bpf_prog_get_fd_by_id(id) : bpf_map_get_fd_by_id(id);
  if (inner < 0) {
    int err = ErrOf(inner);
    // The entry was replaced and the old object freed in between.
    if (err == ENOENT) return env.Null();
    ThrowMapErr(env, fd,
                std::string("mapLookupFd: ") +
                    (progs ? "bpf_prog_get_fd_by_id(" : "bpf_map_get_fd_by_id(") +
                    std::to_string(id) + ")",
                err);
  }
  return Napi::Number::New(env, inner);
}

// ---- whole-map and batch operations ----------------------------------------

namespace {

struct Dump {
  std::vector<uint8_t> keys;
  std::vector<uint8_t> values;
  size_t count = 0;
};

// Returns false when the map type has no batch lookup (nothing appended).
bool DumpBatch(Napi::Env env, int fd, const MapMeta &m, Dump &out) {
  const size_t ks = m.keySize, vs = m.valueBufSize;
  const size_t entry = std::max<size_t>(ks + vs, 1);
  const uint32_t maxEntries = std::max<uint32_t>(m.maxEntries, 1);
  // About 1 MiB per call, at least 16 and at most 8192 entries.
  uint32_t chunk = static_cast<uint32_t>(std::clamp<size_t>((1u << 20) / entry, 16, 8192));
  chunk = std::min(chunk, maxEntries);
  // Hash maps use a u32 bucket index as token, the generic code a key.
  std::vector<uint8_t> inTok(std::max<size_t>(ks, 8)), outTok(inTok.size());
  std::vector<uint8_t> kbuf, vbuf;
  auto opts = Opts<bpf_map_batch_opts>();
  bool first = true;
  for (;;) {
    kbuf.resize(static_cast<size_t>(chunk) * ks + 1);
    vbuf.resize(static_cast<size_t>(chunk) * vs + 1);
    uint32_t n = chunk;
    int r = bpf_map_lookup_batch(fd, first ? nullptr : inTok.data(), outTok.data(), kbuf.data(),
                                 vbuf.data(), &n, &opts);
    int err = r < 0 ? ErrOf(r) : 0;
    if (err != 0 && err != ENOENT) {
      if (first && IsUnsupported(err)) return false;
      if (err == ENOSPC && chunk < maxEntries) {
        // A hash bucket holds more entries than fit in one call.
        chunk = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{chunk} * 2, maxEntries));
        continue;
      }
      ThrowMapErr(env, fd, "mapDump: bpf_map_lookup_batch on " + Describe(m, fd), err);
    }
    if (n > chunk) n = chunk;
    out.keys.insert(out.keys.end(), kbuf.begin(), kbuf.begin() + n * ks);
    out.values.insert(out.values.end(), vbuf.begin(), vbuf.begin() + n * vs);
    out.count += n;
    if (err == ENOENT) return true;
    inTok.swap(outTok);
    first = false;
  }
}

// get_next_key + lookup. Keys deleted meanwhile are skipped; a hash map
// restarts from its first key when the current key vanished, so remember the
// keys already taken and bound the walk.
void DumpIterate(Napi::Env env, int fd, const MapMeta &m, Dump &out) {
  const size_t ks = m.keySize, vs = m.valueBufSize;
  std::vector<uint8_t> cur(ks + 1), next(ks + 1), val(vs + 1);
  std::set<std::string> seen;
  const uint64_t bound = uint64_t{m.maxEntries} * 2 + 16;
  bool first = true;
  for (uint64_t steps = 0; steps < bound; steps++) {
    int r = bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data());
    if (r < 0) {
      int err = ErrOf(r);
      if (err == ENOENT) return;
      ThrowMapErr(env, fd, "mapDump: bpf_map_get_next_key on " + Describe(m, fd), err);
    }
    first = false;
    cur.swap(next);
    std::string k(reinterpret_cast<const char *>(cur.data()), ks);
    if (!seen.insert(k).second) continue;
    r = bpf_map_lookup_elem(fd, cur.data(), val.data());
    if (r < 0) {
      int err = ErrOf(r);
      if (err == ENOENT) continue;
      ThrowMapErr(env, fd, "mapDump: bpf_map_lookup_elem on " + Describe(m, fd), err);
    }
    out.keys.insert(out.keys.end(), cur.begin(), cur.begin() + ks);
    out.values.insert(out.values.end(), val.begin(), val.begin() + vs);
    out.count++;
  }
}

}  // namespace

// mapDumpRaw(fd, {batch?}) → {keys, values, count, keySize, valueSize,
// batched}: keys and values concatenated; native.ts splits them.
Napi::Value MapDumpRaw(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapDump: fd");
  Napi::Object o = OptObject(info[1], "mapDump: options");
  bool tryBatch = true;
  Napi::Value b = o.Get("batch");
  if (!b.IsUndefined()) {
    if (!b.IsBoolean()) ThrowType(env, "mapDump: options.batch must be a boolean");
    tryBatch = b.As<Napi::Boolean>().Value();
  }
  MapMeta m = GetMapMeta(env, fd, "mapDump", true);
  if (m.keySize == 0)
    throw MakeCodedError(
        env, "mapDump: " + Describe(m, fd) + " has no keys and cannot be iterated (EINVAL)", EINVAL,
        "mapDump");
  Dump d;
  bool batched = tryBatch && DumpBatch(env, fd, m, d);
  if (!batched) DumpIterate(env, fd, m, d);
  Napi::Object r = Napi::Object::New(env);
  r.Set("keys", CopyBuffer(env, d.keys.data(), d.count * m.keySize));
  r.Set("values", CopyBuffer(env, d.values.data(), d.count * m.valueBufSize));
  r.Set("count", Napi::Number::New(env, static_cast<double>(d.count)));
  r.Set("keySize", m.keySize);
  r.Set("valueSize", Napi::Number::New(env, static_cast<double>(m.valueBufSize)));
  r.Set("batched", batched);
  return r;
}

Napi::Value MapUpdateBatch(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapUpdateBatch: fd");
  Bytes keys = ArgBuffer(info[1], "mapUpdateBatch: keys");
  Bytes values = ArgBuffer(info[2], "mapUpdateBatch: values");
  uint32_t count = ArgU32(info[3], "mapUpdateBatch: count");
  uint64_t flags = IsAbsent(info[4]) ? 0 : ArgU32(info[4], "mapUpdateBatch: flags");
  MapMeta m = GetMapMeta(env, fd, "mapUpdateBatch", true);
  CheckSize(env, "mapUpdateBatch: keys", keys.size, static_cast<size_t>(count) * m.keySize, m, fd);
  CheckSize(env, "mapUpdateBatch: values", values.size, static_cast<size_t>(count) * m.valueBufSize,
            m, fd);
  if (count == 0) return env.Undefined();
  auto opts = Opts<bpf_map_batch_opts>();
  opts.elem_flags = flags;
  uint32_t n = count;
  int r = bpf_map_update_batch(fd, keys.data, values.data, &n, &opts);
  if (r == 0) return env.Undefined();
  int err = ErrOf(r);
  if (!IsUnsupported(err))
    ThrowMapErr(env, fd,
                "mapUpdateBatch: bpf_map_update_batch on " + Describe(m, fd) + " (element " +
                    std::to_string(n) + " of " + std::to_string(count) + ")",
                err);
  // No batch support (count is then left as passed), or EINVAL at element n:
  // continue one by one, which names the failing element precisely.
  uint32_t from = n < count ? n : 0;
  for (uint32_t i = from; i < count; i++) {
    r = bpf_map_update_elem(fd, keys.data + size_t{i} * m.keySize,
                            values.data + size_t{i} * m.valueBufSize, flags);
    if (r < 0)
      ThrowMapErr(env, fd,
                  "mapUpdateBatch: bpf_map_update_elem on " + Describe(m, fd) + " (element " +
                      std::to_string(i) + " of " + std::to_string(count) + ")",
                  ErrOf(r));
  }
  return env.Undefined();
}

// Deletes count keys; keys that are already gone are skipped. Returns how
// many were deleted.
Napi::Value MapDeleteBatch(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapDeleteBatch: fd");
  Bytes keys = ArgBuffer(info[1], "mapDeleteBatch: keys");
  uint32_t count = ArgU32(info[2], "mapDeleteBatch: count");
  MapMeta m = GetMapMeta(env, fd, "mapDeleteBatch", true);
  CheckSize(env, "mapDeleteBatch: keys", keys.size, static_cast<size_t>(count) * m.keySize, m, fd);
  auto opts = Opts<bpf_map_batch_opts>();
  uint32_t i = 0, deleted = 0;
  bool loop = false;
  while (i < count) {
    uint32_t rest = count - i;
    uint32_t n = rest;
    int r = bpf_map_delete_batch(fd, keys.data + size_t{i} * m.keySize, &n, &opts);
    if (r == 0) {
      deleted += rest;
      i = count;
      break;
    }
    int err = ErrOf(r);
    if (n > rest) n = rest;
    if (err == ENOENT && n < rest) {  // key i+n is missing: skip it
      deleted += n;
      i += n + 1;
      continue;
    }
    if (IsUnsupported(err)) {
      if (n < rest) {  // element i+n failed; the loop below reports it
        deleted += n;
        i += n;
      }
      loop = true;
      break;
    }
    ThrowMapErr(env, fd,
                "mapDeleteBatch: bpf_map_delete_batch on " + Describe(m, fd) + " (element " +
                    std::to_string(i + n) + " of " + std::to_string(count) + ")",
                err);
  }
  for (; loop && i < count; i++) {
    int r = bpf_map_delete_elem(fd, keys.data + size_t{i} * m.keySize);
    if (r == 0) {
      deleted++;
      continue;
    }
    int err = ErrOf(r);
    if (err == ENOENT) continue;
    ThrowMapErr(env, fd,
                "mapDeleteBatch: bpf_map_delete_elem on " + Describe(m, fd) + " (element " +
                    std::to_string(i) + " of " + std::to_string(count) + ")",
                err);
  }
  return Napi::Number::New(env, deleted);
}

}  // namespace ferry

namespace ferry {

// ---- mmap and asynchronous update ---------------------------------------------

// Maps the values of a BPF_F_MMAPABLE array into this process: an
// ArrayBuffer over the kernel's own memory, unmapped when the ArrayBuffer is
// collected. The kernel spaces elements by the value size rounded up to 8
// bytes: element i is at i * roundup(valueSize, 8). Reads and writes are plain
// memory accesses, concurrent with the programs using the map.
Napi::Value MapMmap(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info[0], "mapMmap: fd");
  MapMeta m = GetMapMeta(env, fd, "mapMmap", true);
  if (m.type != BPF_MAP_TYPE_ARRAY || (m.flags & BPF_F_MMAPABLE) == 0)
    ThrowRange(env,
               "mapMmap: " + Describe(m, fd) + " is not an array map created with BPF_F_MMAPABLE");
  long page = sysconf(_SC_PAGESIZE);
  size_t elem = (static_cast<size_t>(m.valueSize) + 7) / 8 * 8;
  size_t bytes = static_cast<size_t>(m.maxEntries) * elem;
  size_t len = (bytes + page - 1) / page * page;
  void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) ThrowMapErr(env, fd, "mapMmap: mmap of " + Describe(m, fd), errno);
  return Napi::ArrayBuffer::New(
      env, p, bytes,
      [](Napi::Env, void *data, size_t *len) {
        munmap(data, *len);
        delete len;
      },
      new size_t(len));
}

namespace {

// bpf_map_update_elem on a thread of the libuv pool: an update that waits
// (a map-in-map update waits for an RCU grace period) without blocking JS.
class UpdateWorker : public Napi::AsyncWorker {
 public:
  UpdateWorker(Napi::Env env, int fd, std::vector<uint8_t> key, std::vector<uint8_t> value,
               uint64_t flags, std::string what)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        key_(std::move(key)),
        value_(std::move(value)),
        flags_(flags),
        what_(std::move(what)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    int r = bpf_map_update_elem(fd_, key_.empty() ? nullptr : key_.data(), value_.data(), flags_);
    err_ = r < 0 ? ErrOf(r) : 0;
  }
  void OnOK() override {
    if (err_ == 0)
      deferred_.Resolve(Env().Undefined());
    else
      deferred_.Reject(MakeErrnoError(Env(), what_, err_).Value());
  }
  void OnError(const Napi::Error &e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  std::vector<uint8_t> key_, value_;
  uint64_t flags_;
  std::string what_;
  int err_ = 0;
};

}  // namespace

// mapUpdate on the thread pool: resolves once the kernel has answered.
Napi::Value MapUpdateAsync(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  UpdateArgs a = ArgsOfUpdate(info, "mapUpdateAsync");
  auto *w =
      new UpdateWorker(env, a.fd, std::vector<uint8_t>(a.key.data, a.key.data + a.key.size),
                       std::vector<uint8_t>(a.value.data, a.value.data + a.value.size), a.flags,
                       "mapUpdateAsync: bpf_map_update_elem on " + Describe(a.meta, a.fd));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace ferry
