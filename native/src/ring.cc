// SPDX-License-Identifier: Apache-2.0
//
// BPF ring buffers (BPF_MAP_TYPE_RINGBUF) through libbpf's ring_buffer:
// ringOpen(mapFd) → handle, ringConsume(handle, maxRecords) → Buffer[]
// (non-blocking: what is there now, at most maxRecords), ringClose(handle).
//
// A handle is a small integer naming a ring_buffer of this environment
// (main thread or worker); the table is freed with the environment, so a
// forgotten handle does not outlive it. The ring maps the map's pages
// itself: the map fd may be closed after ringOpen.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <limits.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ops.h"
#include "util.h"

namespace ferry {

namespace {

// Returned by the sample callback to stop a consume at maxRecords: libbpf
// then advances the consumer position past that record and returns it.
constexpr int kStop = -ECANCELED;
// Far above any sensible batch; bounds the memory one call may take.
constexpr int64_t kMaxRecords = 1 << 20;

struct Ring {
  struct ring_buffer *rb = nullptr;
  uint32_t mapId = 0;
  // Filled by the callback during one ringConsume.
  std::vector<std::vector<uint8_t>> batch;
  size_t max = 0;
  bool stopped = false;
};

struct Table {
  std::map<int32_t, std::unique_ptr<Ring>> rings;
  int32_t next = 1;
};

// One table per napi_env, freed by an environment cleanup hook.
std::mutex tablesMu;
std::map<napi_env, Table *> tables;

void FreeRing(Ring &r) {
  if (r.rb != nullptr) {
    ring_buffer__free(r.rb);
    r.rb = nullptr;
  }
}

void CleanupEnv(void *arg) {
  auto *env = static_cast<napi_env>(arg);
  Table *t = nullptr;
  {
    std::lock_guard<std::mutex> lock(tablesMu);
    auto it = tables.find(env);
    if (it == tables.end()) return;
    t = it->second;
    tables.erase(it);
  }
  for (auto &[h, r] : t->rings) FreeRing(*r);
  delete t;
}

Table &TableOf(Napi::Env env) {
  std::lock_guard<std::mutex> lock(tablesMu);
  auto it = tables.find(env);
  if (it != tables.end()) return *it->second;
  auto *t = new Table();
  tables.emplace(env, t);
  napi_add_env_cleanup_hook(env, CleanupEnv, static_cast<napi_env>(env));
  return *t;
}

int OnSample(void *ctx, void *data, size_t size) {
  auto *r = static_cast<Ring *>(ctx);
  const auto *p = static_cast<const uint8_t *>(data);
  r->batch.emplace_back(p, p + size);
  if (r->batch.size() >= r->max) {
    r->stopped = true;
    return kStop;
  }
  return 0;
}

int32_t ArgHandle(const Napi::Value &v, const std::string &what) {
  return static_cast<int32_t>(ArgInt(v, what, 1, INT32_MAX));
}

Ring &RingOf(Napi::Env env, int32_t h, const std::string &op) {
  Table &t = TableOf(env);
  auto it = t.rings.find(h);
  if (it == t.rings.end())
    throw MakeCodedError(
        env, op + ": no open ring buffer with handle " + std::to_string(h) + " (EBADF)", EBADF, op);
  return *it->second;
}

}  // namespace

Napi::Value RingOpen(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "ringOpen";
  int fd = ArgFd(info[0], fn + ": mapFd");
  MapMeta m = GetMapMeta(env, fd, fn, true);
  if (m.type != BPF_MAP_TYPE_RINGBUF)
    throw MakeCodedError(env,
                         fn + ": map '" + m.name + "' (id " + std::to_string(m.id) + ", fd " +
                             std::to_string(fd) + ") is not a ring buffer (EINVAL)",
                         EINVAL, fn);
  auto ring = std::make_unique<Ring>();
  ring->mapId = m.id;
  ClearLibbpfLog();
  errno = 0;
  ring->rb = ring_buffer__new(fd, OnSample, ring.get(), nullptr);
  if (ring->rb == nullptr)
    ThrowErrno(env, fn + ": ring_buffer__new(fd " + std::to_string(fd) + ")",
               errno ? errno : EINVAL, true);
  Table &t = TableOf(env);
  int32_t h = t.next++;
  if (t.next == INT32_MAX) t.next = 1;
  t.rings.emplace(h, std::move(ring));
  return Napi::Number::New(env, h);
}

Napi::Value RingConsume(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "ringConsume";
  int32_t h = ArgHandle(info[0], fn + ": handle");
  int64_t max = ArgInt(info[1], fn + ": maxRecords", 1, kMaxRecords);
  Ring &r = RingOf(env, h, fn);
  r.batch.clear();
  r.max = static_cast<size_t>(max);
  r.stopped = false;
  int n = ring_buffer__consume(r.rb);
  if (n < 0 && !(r.stopped && n == kStop)) {
    r.batch.clear();
    ThrowErrno(env, fn + ": ring_buffer__consume(map id " + std::to_string(r.mapId) + ")",
               ErrOf(n));
  }
  Napi::Array out = Napi::Array::New(env, r.batch.size());
  for (size_t i = 0; i < r.batch.size(); i++)
    out.Set(static_cast<uint32_t>(i), CopyBuffer(env, r.batch[i].data(), r.batch[i].size()));
  r.batch.clear();
  return out;
}

Napi::Value RingClose(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "ringClose";
  int32_t h = ArgHandle(info[0], fn + ": handle");
  Table &t = TableOf(env);
  auto it = t.rings.find(h);
  if (it == t.rings.end())
    throw MakeCodedError(
        env, fn + ": no open ring buffer with handle " + std::to_string(h) + " (EBADF)", EBADF, fn);
  FreeRing(*it->second);
  t.rings.erase(it);
  return env.Undefined();
}

}  // namespace ferry
