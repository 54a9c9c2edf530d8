// SPDX-License-Identifier: Apache-2.0
//
// BpfObject: one libbpf bpf_object (an opened ELF file, later loaded into the
// kernel). Map and program fds handed out belong to the object and become
// invalid when it is closed, explicitly or by the garbage collector.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>

#include <string>

#include "ops.h"
#include "util.h"

namespace ferry {

namespace {

// The verifier gives up with EAGAIN whenever a signal is pending for the
// loading thread, and libbpf retries a load only a few times: under a
// sampling profiler (SIGPROF every millisecond) a large program never
// loaded. The thread's signals wait until the load is done instead; those
// sent to the whole process go to another thread meanwhile.
int LoadWithSignalsHeld(struct bpf_object *obj) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int r = bpf_object__load(obj);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return r;
}

// Per-environment (main thread or worker) state of the addon.
struct AddonData {
  Napi::FunctionReference bpfObjectCtor;
  // Set by OpenObject for the duration of the constructor call; a
  // constructor call from JS finds it empty and fails.
  struct bpf_object *pending = nullptr;
};

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BpfObject",
                       {
                           InstanceMethod<&BpfObject::Load>("load"),
                           InstanceMethod<&BpfObject::Maps>("maps"),
                           InstanceMethod<&BpfObject::MapFd>("mapFd"),
                           InstanceMethod<&BpfObject::Programs>("programs"),
                           InstanceMethod<&BpfObject::ProgramFd>("programFd"),
                           InstanceMethod<&BpfObject::AttachCgroup>("attachCgroup"),
                           InstanceMethod<&BpfObject::Close>("close"),
                           InstanceAccessor<&BpfObject::Closed>("closed"),
                           InstanceAccessor<&BpfObject::Loaded>("loaded"),
                           InstanceAccessor<&BpfObject::Path>("path"),
                       });
  }

  BpfObject(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfObject>(info) {
    AddonData *data = info.Env().GetInstanceData<AddonData>();
    if (data == nullptr || data->pending == nullptr)
      ThrowType(info.Env(), "BpfObject cannot be constructed directly; use openObject()");
    obj_ = data->pending;
    data->pending = nullptr;
    if (info[0].IsString()) path_ = info[0].As<Napi::String>().Utf8Value();
  }

  ~BpfObject() override { Release(); }

 private:
  void Release() {
    if (obj_ != nullptr) {
      bpf_object__close(obj_);
      obj_ = nullptr;
    }
  }

  struct bpf_object *Live(Napi::Env env, const char *method) {
    if (obj_ == nullptr)
      throw MakeCodedError(
          env, std::string("BpfObject.") + method + ": object '" + path_ + "' is closed (EBADF)",
          EBADF, std::string("BpfObject.") + method);
    return obj_;
  }

  Napi::Value Load(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    struct bpf_object *obj = Live(env, "load");
    if (loaded_)
      throw MakeCodedError(env,
                           "BpfObject.load: object '" + path_ + "' is already loaded (EALREADY)",
                           EALREADY, "BpfObject.load");
    ClearLibbpfLog();
    int r = LoadWithSignalsHeld(obj);
    if (r < 0) ThrowErrno(env, "BpfObject.load: bpf_object__load('" + path_ + "')", ErrOf(r), true);
    loaded_ = true;
    return env.Undefined();
  }

  Napi::Value Maps(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    struct bpf_object *obj = Live(env, "maps");
    Napi::Array out = Napi::Array::New(env);
    struct bpf_map *map;
    bpf_object__for_each_map(map, obj) {
      int fd = bpf_map__fd(map);
      Napi::Object o;
      if (fd >= 0) {
        o = MapMetaToJs(env, GetMapMeta(env, fd, "BpfObject.maps"));
        // The kernel truncates names to 15 characters; keep libbpf's.
        o.Set("name", bpf_map__name(map));
      } else {
        o = Napi::Object::New(env);
        o.Set("id", 0);
        o.Set("name", bpf_map__name(map));
        o.Set("type", static_cast<uint32_t>(bpf_map__type(map)));
        o.Set("keySize", bpf_map__key_size(map));
        o.Set("valueSize", bpf_map__value_size(map));
        o.Set("maxEntries", bpf_map__max_entries(map));
        o.Set("flags", bpf_map__map_flags(map));
      }
      o.Set("fd", fd >= 0 ? fd : -1);
      const char *pin = bpf_map__pin_path(map);
      o.Set("pinPath", pin ? Napi::Value(Napi::String::New(env, pin)) : env.Null());
      out.Set(out.Length(), o);
    }
    return out;
  }

  Napi::Value MapFd(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info[0], "BpfObject.mapFd: name");
    struct bpf_object *obj = Live(env, "mapFd");
    struct bpf_map *map = bpf_object__find_map_by_name(obj, name.c_str());
    if (map == nullptr)
      throw MakeCodedError(env,
                           "BpfObject.mapFd: no map '" + name + "' in '" + path_ + "' (ENOENT)",
                           ENOENT, "BpfObject.mapFd");
    int fd = bpf_map__fd(map);
    if (fd < 0)
      throw MakeCodedError(
          env, "BpfObject.mapFd: map '" + name + "' has no fd; load the object first (EINVAL)",
          EINVAL, "BpfObject.mapFd");
    return Napi::Number::New(env, fd);
  }

  Napi::Value Programs(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    struct bpf_object *obj = Live(env, "programs");
    Napi::Array out = Napi::Array::New(env);
    struct bpf_program *prog;
    bpf_object__for_each_program(prog, obj) {
      Napi::Object o = Napi::Object::New(env);
      int fd = bpf_program__fd(prog);
      o.Set("name", bpf_program__name(prog));
      o.Set("section", bpf_program__section_name(prog));
      o.Set("fd", fd >= 0 ? fd : -1);
      o.Set("type", static_cast<uint32_t>(bpf_program__type(prog)));
      out.Set(out.Length(), o);
    }
    return out;
  }

  Napi::Value ProgramFd(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    std::string name = ArgString(info[0], "BpfObject.programFd: name");
    struct bpf_object *obj = Live(env, "programFd");
    struct bpf_program *prog = bpf_object__find_program_by_name(obj, name.c_str());
    if (prog == nullptr)
      throw MakeCodedError(
          env, "BpfObject.programFd: no program '" + name + "' in '" + path_ + "' (ENOENT)", ENOENT,
          "BpfObject.programFd");
    int fd = bpf_program__fd(prog);
    if (fd < 0)
      throw MakeCodedError(env,
                           "BpfObject.programFd: program '" + name + "' is not loaded (EINVAL)",
                           EINVAL, "BpfObject.programFd");
    return Napi::Number::New(env, fd);
  }

  // attachCgroup(program, cgroupPath) → link fd (the caller's: pin it to
  // outlive the process, closeFd it, linkDetach to detach).
  Napi::Value AttachCgroup(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    const std::string fn = "BpfObject.attachCgroup";
    std::string name = ArgString(info[0], fn + ": program");
    std::string path = ArgString(info[1], fn + ": cgroupPath");
    struct bpf_object *obj = Live(env, "attachCgroup");
    struct bpf_program *prog = bpf_object__find_program_by_name(obj, name.c_str());
    if (prog == nullptr)
      throw MakeCodedError(env, fn + ": no program '" + name + "' in '" + path_ + "' (ENOENT)",
                           ENOENT, fn);
    return Napi::Number::New(env, AttachCgroupLink(env, prog, path, fn));
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    Release();
    return info.Env().Undefined();
  }

  Napi::Value Closed(const Napi::CallbackInfo &info) {
    return Napi::Boolean::New(info.Env(), obj_ == nullptr);
  }
  Napi::Value Loaded(const Napi::CallbackInfo &info) {
    return Napi::Boolean::New(info.Env(), obj_ != nullptr && loaded_);
  }
  Napi::Value Path(const Napi::CallbackInfo &info) { return Napi::String::New(info.Env(), path_); }

  struct bpf_object *obj_ = nullptr;
  bool loaded_ = false;
  std::string path_;
};

}  // namespace

void InitBpfObject(Napi::Env env) {
  auto *data = new AddonData();
  data->bpfObjectCtor = Napi::Persistent(BpfObject::Define(env));
  env.SetInstanceData<AddonData>(data);
}

// openObject(path, {pinRoot?, maxEntries?}) → BpfObject (opened, not loaded)
Napi::Value OpenObject(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "openObject";
  std::string path = ArgString(info[0], fn + ": path");
  Napi::Object o = OptObject(info[1], fn + ": options");
  std::string pinRoot;
  Napi::Value pr = o.Get("pinRoot");
  if (!IsAbsent(pr)) pinRoot = ArgString(pr, fn + ": options.pinRoot");

  // Validate maxEntries before opening anything.
  std::vector<std::pair<std::string, uint32_t>> sizes;
  Napi::Value me = o.Get("maxEntries");
  if (!IsAbsent(me)) {
    Napi::Object m = OptObject(me, fn + ": options.maxEntries");
    Napi::Array names = m.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).ToString().Utf8Value();
      uint32_t v = static_cast<uint32_t>(
          ArgInt(m.Get(name), fn + ": options.maxEntries." + name, 1, UINT32_MAX));
      sizes.emplace_back(name, v);
    }
  }

  auto opts = Opts<bpf_object_open_opts>();
  if (!pinRoot.empty()) opts.pin_root_path = pinRoot.c_str();
  ClearLibbpfLog();
  errno = 0;
  struct bpf_object *obj = bpf_object__open_file(path.c_str(), &opts);
  if (obj == nullptr)
    ThrowErrno(env, fn + ": bpf_object__open_file('" + path + "')", errno ? errno : EINVAL, true);

  // Without a pin root nothing is pinned or reused: libbpf would otherwise
  // pin LIBBPF_PIN_BY_NAME maps under /sys/fs/bpf and share them with
  // every other user of the same object file.
  if (pinRoot.empty()) {
    struct bpf_map *map;
    bpf_object__for_each_map(map, obj) {
      if (bpf_map__pin_path(map) == nullptr) continue;
      int r = bpf_map__set_pin_path(map, nullptr);
      if (r < 0) {
        int err = ErrOf(r);
        bpf_object__close(obj);
        ThrowErrno(env,
                   fn + ": bpf_map__set_pin_path('" + std::string(bpf_map__name(map)) + "', NULL)",
                   err, true);
      }
    }
  }

  for (const auto &[name, v] : sizes) {
    struct bpf_map *map = bpf_object__find_map_by_name(obj, name.c_str());
    if (map == nullptr) {
      bpf_object__close(obj);
      throw MakeCodedError(env,
                           fn + ": options.maxEntries names map '" + name + "', which '" + path +
                               "' does not have (ENOENT)",
                           ENOENT, fn);
    }
    int r = bpf_map__set_max_entries(map, v);
    if (r < 0) {
      int err = ErrOf(r);
      bpf_object__close(obj);
      ThrowErrno(env, fn + ": bpf_map__set_max_entries('" + name + "', " + std::to_string(v) + ")",
                 err, true);
    }
  }

  AddonData *data = env.GetInstanceData<AddonData>();
  data->pending = obj;
  Napi::Object wrapped;
  try {
    wrapped = data->bpfObjectCtor.New({Napi::String::New(env, path)});
  } catch (...) {
    if (data->pending != nullptr) {
      bpf_object__close(data->pending);
      data->pending = nullptr;
    }
    throw;
  }
  return wrapped;
}

}  // namespace ferry
