// SPDX-License-Identifier: Apache-2.0
//
// Ferry's native addon: a thin N-API layer over the system libbpf. It knows
// BPF objects, maps, programs and links, never load balancing. The typed
// loader is src/datapath/native.ts.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <napi.h>

#include <exception>
#include <new>
#include <string>

#include "ops.h"
#include "util.h"

namespace ferry {

namespace {

Napi::Value LibbpfVersion(const Napi::CallbackInfo &info) {
  return Napi::String::New(info.Env(), libbpf_version_string());
}

Napi::Value NumPossibleCpusJs(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), NumPossibleCpus(info.Env()));
}

// The kernel ABI values native.ts hard-codes, straight from the headers the
// addon was built with; a test checks that both agree.
Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
#define C(name) c.Set(#name, Napi::Number::New(env, static_cast<double>(name)))
  C(BPF_MAP_TYPE_HASH);
  C(BPF_MAP_TYPE_ARRAY);
  C(BPF_MAP_TYPE_PROG_ARRAY);
  C(BPF_MAP_TYPE_PERCPU_HASH);
  C(BPF_MAP_TYPE_PERCPU_ARRAY);
  C(BPF_MAP_TYPE_LRU_HASH);
  C(BPF_MAP_TYPE_LRU_PERCPU_HASH);
  C(BPF_MAP_TYPE_LPM_TRIE);
  C(BPF_MAP_TYPE_ARRAY_OF_MAPS);
  C(BPF_MAP_TYPE_HASH_OF_MAPS);
  C(BPF_MAP_TYPE_DEVMAP);
  C(BPF_MAP_TYPE_CPUMAP);
  C(BPF_MAP_TYPE_XSKMAP);
  C(BPF_MAP_TYPE_DEVMAP_HASH);
  C(BPF_MAP_TYPE_RINGBUF);
  C(BPF_ANY);
  C(BPF_NOEXIST);
  C(BPF_EXIST);
  C(BPF_F_LOCK);
  C(BPF_F_NO_PREALLOC);
  C(BPF_F_RDONLY_PROG);
  C(BPF_F_INNER_MAP);
  C(BPF_F_TEST_XDP_LIVE_FRAMES);
  C(BPF_PROG_TYPE_XDP);
  C(BPF_PROG_TYPE_SCHED_CLS);
  C(BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
  C(BPF_LINK_TYPE_XDP);
  C(BPF_LINK_TYPE_CGROUP);
  C(BPF_PROG_TYPE_CGROUP_SOCK);
  C(BPF_CGROUP_INET4_CONNECT);
  C(BPF_CGROUP_INET6_CONNECT);
  C(BPF_CGROUP_UDP4_SENDMSG);
  C(BPF_CGROUP_UDP6_SENDMSG);
  C(BPF_CGROUP_UDP4_RECVMSG);
  C(BPF_CGROUP_UDP6_RECVMSG);
  C(BPF_CGROUP_INET4_GETPEERNAME);
  C(BPF_CGROUP_INET6_GETPEERNAME);
  C(BPF_CGROUP_INET_SOCK_RELEASE);
  C(XDP_ABORTED);
  C(XDP_DROP);
  C(XDP_PASS);
  C(XDP_TX);
  C(XDP_REDIRECT);
#undef C
  return c;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfPrint();
  InitBpfObject(env);
  using Handler = Napi::Value (*)(const Napi::CallbackInfo &);
  struct Fn {
    const char *name;
    Handler fn;
  };
  static const Fn fns[] = {
      {"libbpfVersion", LibbpfVersion},
      {"numPossibleCpus", NumPossibleCpusJs},
      {"openObject", OpenObject},
      {"objGet", ObjGet},
      {"objPin", ObjPin},
      {"closeFd", CloseFd},
      {"mapInfo", MapInfo},
      {"progInfo", ProgInfo},
      {"progFdById", ProgFdById},
      {"enableStats", EnableStats},
      {"mapCreate", MapCreate},
      {"mapLookup", MapLookup},
      {"mapUpdate", MapUpdate},
      {"mapDelete", MapDelete},
      {"mapNextKey", MapNextKey},
      {"mapLookupFd", MapLookupFd},
      {"mapDumpRaw", MapDumpRaw},
      {"mapUpdateBatch", MapUpdateBatch},
      {"mapDeleteBatch", MapDeleteBatch},
      {"mapMmap", MapMmap},
      {"mapUpdateAsync", MapUpdateAsync},
      {"progTestRun", ProgTestRun},
      {"progRunSyscall", ProgRunSyscall},
      {"xdpAttach", XdpAttach},
      {"linkUpdate", LinkUpdate},
      {"linkDetach", LinkDetach},
      {"linkInfo", LinkInfo},
      {"cgroupQuery", CgroupQuery},
      {"xdpQuery", XdpQuery},
      {"tcAttach", TcAttach},
      {"tcDetach", TcDetach},
      {"tcQuery", TcQuery},
      {"ringOpen", RingOpen},
      {"ringConsume", RingConsume},
      {"ringClose", RingClose},
      {"btfStructLayout", BtfStructLayout},
      {"ifNameToIndex", IfNameToIndex},
      {"sdNotify", SdNotify},
      {"socketOpen", SocketOpen},
      {"socketSetMark", SocketSetMark},
      {"packetFlood", PacketFlood},
  };
  for (const Fn &f : fns) {
    const char *name = f.name;
    Handler fn = f.fn;
    // Napi errors pass through; anything else C++ throws (bad_alloc) becomes
    // an errno error instead of terminating the process.
    auto guarded = [name, fn](const Napi::CallbackInfo &info) -> Napi::Value {
      try {
        return fn(info);
      } catch (const Napi::Error &) {
        throw;
      } catch (const std::bad_alloc &) {
        ThrowErrno(info.Env(), std::string(name) + ": out of memory", ENOMEM);
      } catch (const std::exception &e) {
        ThrowErrno(info.Env(), std::string(name) + ": " + e.what(), EIO);
      }
    };
    exports.Set(name, Napi::Function::New(env, guarded, name));
  }
  exports.Set("constants", Constants(env));
  return exports;
}

}  // namespace

}  // namespace ferry

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return ferry::Init(env, exports);
}

NODE_API_MODULE(ferry_native, InitModule)
