// SPDX-License-Identifier: Apache-2.0
//
// Shared helpers of the Ferry native addon: argument validation, errors that
// carry errno / code / libbpf's log, and small fd utilities.
//
// Every exported function validates its arguments before touching the kernel
// and reports failures by throwing a JS exception (C++ exceptions are enabled,
// NAPI_CPP_EXCEPTIONS), so a bad call from JS never crashes the process.
#ifndef FERRY_NATIVE_UTIL_H
#define FERRY_NATIVE_UTIL_H

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace ferry {

// ---- libbpf log capture ---------------------------------------------------

// Installs the libbpf print callback (once per process). libbpf's warnings
// and info lines, including the verifier log of a failed load, go to a
// per-thread buffer. FERRY_LIBBPF_DEBUG=1 in the environment also echoes every
// line, debug level included, to stderr.
void InstallLibbpfPrint();

// Clears this thread's captured log; call before a libbpf operation whose
// failure should quote the log.
void ClearLibbpfLog();

// The captured log (at most the last kLogKeep bytes).
std::string LibbpfLog();

// ---- errors ---------------------------------------------------------------

// Name of an errno value ("ENOENT"), including the kernel-internal ENOTSUPP
// (524) and libbpf's own codes (4000+); "E<number>" when unknown.
std::string ErrnoName(int err);

// Text of an errno value, using libbpf_strerror for libbpf's own codes.
std::string ErrnoText(int err);

// A JS Error for a failed operation: message "<op>: <strerror> (<CODE>)",
// properties errno (positive), code and op. When withLog is set and libbpf
// logged something, the tail of the log is appended to the message and the
// whole captured log is attached as `libbpfLog`.
Napi::Error MakeErrnoError(Napi::Env env, const std::string &op, int err, bool withLog = false);

// An Error with a message of the caller's choosing and errno / code / op.
Napi::Error MakeCodedError(Napi::Env env, const std::string &message, int err,
                           const std::string &op);

[[noreturn]] void ThrowErrno(Napi::Env env, const std::string &op, int err, bool withLog = false);

// Argument errors: TypeError (wrong JS type) and RangeError (bad value or
// size). Both carry errno EINVAL and code "EINVAL" like kernel errors do, so
// callers can treat every failure of the addon alike.
[[noreturn]] void ThrowType(Napi::Env env, const std::string &msg);
[[noreturn]] void ThrowRange(Napi::Env env, const std::string &msg);

// libbpf 1.x returns -errno and also sets errno; normalise to positive.
inline int ErrOf(int ret) {
  if (ret < 0) return -ret;
  return errno != 0 ? errno : EINVAL;
}

// ---- arguments ------------------------------------------------------------

// `what` names the argument in messages, e.g. "mapLookup: fd".
int64_t ArgInt(const Napi::Value &v, const std::string &what, int64_t min, int64_t max);
int64_t OptInt(const Napi::Object &o, const char *key, const std::string &what, int64_t min,
               int64_t max, int64_t dflt);
int ArgFd(const Napi::Value &v, const std::string &what);
uint32_t ArgU32(const Napi::Value &v, const std::string &what);
std::string ArgString(const Napi::Value &v, const std::string &what, bool allowEmpty = false);
// Accepts a Buffer or any Uint8Array; the view stays valid for the call.
struct Bytes {
  uint8_t *data;
  size_t size;
};
Bytes ArgBuffer(const Napi::Value &v, const std::string &what);
// Undefined or null → an empty object; anything but a plain object throws.
Napi::Object OptObject(const Napi::Value &v, const std::string &what);
bool IsAbsent(const Napi::Value &v);

// ---- fds --------------------------------------------------------------------

enum class FdKind { Map, Prog, Link, Btf, OtherBpf, NotBpf, Unknown };

// What an fd refers to, from /proc/self/fd. Throws EBADF for a closed fd;
// Unknown when /proc is not available (the kernel then validates alone).
FdKind KindOfFd(Napi::Env env, int fd, const std::string &op);
const char *FdKindName(FdKind k);
// Throws EINVAL unless fd is of the wanted kind (or Unknown).
void ExpectFdKind(Napi::Env env, int fd, FdKind want, const std::string &op);

// Zeroed libbpf opts struct with sz set (padding included, as libbpf checks
// that unknown trailing bytes are zero).
template <class T>
T Opts() {
  T o;
  std::memset(&o, 0, sizeof(o));
  o.sz = sizeof(o);
  return o;
}

Napi::Buffer<uint8_t> CopyBuffer(Napi::Env env, const void *data, size_t len);

}  // namespace ferry

#endif
