// SPDX-License-Identifier: Apache-2.0
//
// btfStructLayout: the layout of a C struct as the compiler laid it out,
// read from an object file's BTF. Tests compare it with the TypeScript
// encoders that mirror the struct.
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <memory>
#include <string>

#include "ops.h"
#include "util.h"

namespace ferry {

namespace {

struct BtfFree {
  void operator()(struct btf *b) const { btf__free(b); }
};

// Skips typedefs and const/volatile/restrict.
const struct btf_type *Resolve(const struct btf *btf, uint32_t id, uint32_t *outId) {
  const struct btf_type *t = btf__type_by_id(btf, id);
  for (int guard = 0; t != nullptr && guard < 64; guard++) {
    if (!btf_is_typedef(t) && !btf_is_mod(t)) break;
    id = t->type;
    t = btf__type_by_id(btf, id);
  }
  if (outId) *outId = id;
  return t;
}

// Appends the members of composite t at byte offset base; members of
// anonymous structs and unions are flattened into the parent, as C names them.
void AddMembers(Napi::Env env, const struct btf *btf, const struct btf_type *t, uint32_t baseBits,
                Napi::Array &out, int depth) {
  if (depth > 16) return;
  const struct btf_member *m = btf_members(t);
  uint16_t n = btf_vlen(t);
  for (uint16_t i = 0; i < n; i++, m++) {
    const char *name = btf__name_by_offset(btf, m->name_off);
    uint32_t bitOff = baseBits + btf_member_bit_offset(t, i);
    uint32_t bitSize = btf_member_bitfield_size(t, i);
    uint32_t typeId = 0;
    const struct btf_type *mt = Resolve(btf, m->type, &typeId);
    if ((name == nullptr || *name == '\0') && mt != nullptr && btf_is_composite(mt)) {
      AddMembers(env, btf, mt, bitOff, out, depth + 1);
      continue;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", name ? name : "");
    o.Set("offset", bitOff / 8);
    int64_t size = btf__resolve_size(btf, m->type);
    if (bitSize != 0) {
      o.Set("size", (bitSize + (bitOff % 8) + 7) / 8);
      o.Set("bitOffset", bitOff);
      o.Set("bitSize", bitSize);
    } else {
      o.Set("size", Napi::Number::New(env, size < 0 ? 0 : static_cast<double>(size)));
    }
    out.Set(out.Length(), o);
  }
}

}  // namespace

Napi::Value BtfStructLayout(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info[0], "btfStructLayout: objPath");
  std::string name = ArgString(info[1], "btfStructLayout: structName");
  ClearLibbpfLog();
  errno = 0;
  std::unique_ptr<struct btf, BtfFree> btf(btf__parse(path.c_str(), nullptr));
  if (!btf)
    ThrowErrno(env, "btfStructLayout: btf__parse('" + path + "')", errno ? errno : EINVAL, true);
  int32_t id = btf__find_by_name_kind(btf.get(), name.c_str(), BTF_KIND_STRUCT);
  if (id < 0) id = btf__find_by_name_kind(btf.get(), name.c_str(), BTF_KIND_UNION);
  if (id < 0) id = btf__find_by_name_kind(btf.get(), name.c_str(), BTF_KIND_TYPEDEF);
  if (id < 0)
    throw MakeCodedError(env,
                         "btfStructLayout: no struct, union or typedef '" + name +
                             "' in the BTF of '" + path + "' (ENOENT)",
                         ENOENT, "btfStructLayout");
  uint32_t rid = 0;
  const struct btf_type *t = Resolve(btf.get(), static_cast<uint32_t>(id), &rid);
  if (t == nullptr || !btf_is_composite(t))
    throw MakeCodedError(
        env, "btfStructLayout: '" + name + "' in '" + path + "' is not a struct or union (EINVAL)",
        EINVAL, "btfStructLayout");
  Napi::Array members = Napi::Array::New(env);
  AddMembers(env, btf.get(), t, 0, members, 0);
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", t->size);
  o.Set("members", members);
  return o;
}

}  // namespace ferry
