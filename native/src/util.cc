// SPDX-License-Identifier: Apache-2.0
#include "util.h"

#include <bpf/libbpf.h>
#include <limits.h>
#include <unistd.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace ferry {

// ---- libbpf log capture ---------------------------------------------------

namespace {

// Keep at least this much of the most recent log; trim lazily at twice that.
constexpr size_t kLogKeep = 64 * 1024;
// How much of the log tail goes into an error message.
constexpr size_t kLogInMessage = 4 * 1024;

// libbpf calls the print callback on the thread that called into it, so a
// per-thread buffer keeps worker threads from mixing their logs.
thread_local std::string tLog;

bool gEcho = false;

int LibbpfPrint(enum libbpf_print_level level, const char *fmt, va_list ap) {
  if (level == LIBBPF_DEBUG && !gEcho) return 0;
  va_list ap2;
  va_copy(ap2, ap);
  char small[512];
  int n = std::vsnprintf(small, sizeof(small), fmt, ap);
  std::string line;
  if (n < 0) {
    va_end(ap2);
    return 0;
  }
  if (static_cast<size_t>(n) < sizeof(small)) {
    line.assign(small, static_cast<size_t>(n));
  } else {
    // The verifier log arrives as one huge "%s".
    line.resize(static_cast<size_t>(n) + 1);
    std::vsnprintf(&line[0], line.size(), fmt, ap2);
    line.resize(static_cast<size_t>(n));
  }
  va_end(ap2);
  if (gEcho) std::fputs(line.c_str(), stderr);
  if (level == LIBBPF_DEBUG) return 0;
  tLog += line;
  if (tLog.size() > 2 * kLogKeep) tLog.erase(0, tLog.size() - kLogKeep);
  return 0;
}

// The last `max` bytes of s, starting at a line boundary when possible.
std::string Tail(const std::string &s, size_t max) {
  if (s.size() <= max) return s;
  size_t start = s.size() - max;
  size_t nl = s.find('\n', start);
  if (nl != std::string::npos && nl + 1 < s.size()) start = nl + 1;
  return "[...]\n" + s.substr(start);
}

}  // namespace

void InstallLibbpfPrint() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char *e = std::getenv("FERRY_LIBBPF_DEBUG");
    gEcho = e != nullptr && *e != '\0' && std::strcmp(e, "0") != 0;
    libbpf_set_print(LibbpfPrint);
  });
}

void ClearLibbpfLog() { tLog.clear(); }

std::string LibbpfLog() {
  if (tLog.size() > kLogKeep) return tLog.substr(tLog.size() - kLogKeep);
  return tLog;
}

// ---- errors ---------------------------------------------------------------

std::string ErrnoName(int err) {
  switch (err) {
    // Kernel-internal codes that still reach user space through bpf(2).
    case 524:
      return "ENOTSUPP";
    case 525:
      return "ETOOSMALL";
    default:
      break;
  }
  if (err >= __LIBBPF_ERRNO__START && err < __LIBBPF_ERRNO__END) return "ELIBBPF";
  const char *name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "E" + std::to_string(err);
}

std::string ErrnoText(int err) {
  if (err == 524) return "Operation not supported";
  char buf[256];
  if (libbpf_strerror(err, buf, sizeof(buf)) == 0) return buf;
  return std::strerror(err);
}

Napi::Error MakeErrnoError(Napi::Env env, const std::string &op, int err, bool withLog) {
  if (err <= 0) err = EINVAL;
  std::string code = ErrnoName(err);
  std::string msg = op + ": " + ErrnoText(err) + " (" + code + ")";
  std::string log = withLog ? LibbpfLog() : std::string();
  if (!log.empty()) {
    msg += "\n" + Tail(log, kLogInMessage);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  }
  Napi::Error e = MakeCodedError(env, msg, err, op);
  if (!log.empty()) e.Set("libbpfLog", Napi::String::New(env, log));
  return e;
}

Napi::Error MakeCodedError(Napi::Env env, const std::string &message, int err,
                           const std::string &op) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("op", Napi::String::New(env, op));
  return e;
}

void ThrowErrno(Napi::Env env, const std::string &op, int err, bool withLog) {
  throw MakeErrnoError(env, op, err, withLog);
}

namespace {
template <class E>
[[noreturn]] void ThrowArg(Napi::Env env, const std::string &msg) {
  E e = E::New(env, msg);
  e.Set("errno", Napi::Number::New(env, EINVAL));
  e.Set("code", Napi::String::New(env, "EINVAL"));
  throw e;
}
}  // namespace

void ThrowType(Napi::Env env, const std::string &msg) { ThrowArg<Napi::TypeError>(env, msg); }

void ThrowRange(Napi::Env env, const std::string &msg) { ThrowArg<Napi::RangeError>(env, msg); }

// ---- arguments ------------------------------------------------------------

int64_t ArgInt(const Napi::Value &v, const std::string &what, int64_t min, int64_t max) {
  Napi::Env env = v.Env();
  if (!v.IsNumber()) ThrowType(env, what + " must be an integer");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::trunc(d) != d) ThrowType(env, what + " must be an integer");
  if (d < static_cast<double>(min) || d > static_cast<double>(max))
    ThrowRange(env, what + " out of range [" + std::to_string(min) + ", " + std::to_string(max) +
                        "]: " + v.ToString().Utf8Value());
  return static_cast<int64_t>(d);
}

bool IsAbsent(const Napi::Value &v) { return v.IsUndefined() || v.IsNull(); }

int64_t OptInt(const Napi::Object &o, const char *key, const std::string &what, int64_t min,
               int64_t max, int64_t dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return dflt;
  return ArgInt(v, what + "." + key, min, max);
}

int ArgFd(const Napi::Value &v, const std::string &what) {
  return static_cast<int>(ArgInt(v, what, 0, INT_MAX));
}

uint32_t ArgU32(const Napi::Value &v, const std::string &what) {
  return static_cast<uint32_t>(ArgInt(v, what, 0, UINT32_MAX));
}

std::string ArgString(const Napi::Value &v, const std::string &what, bool allowEmpty) {
  if (!v.IsString()) ThrowType(v.Env(), what + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (!allowEmpty && s.empty()) ThrowRange(v.Env(), what + " must not be empty");
  if (s.find('\0') != std::string::npos)
    ThrowRange(v.Env(), what + " must not contain NUL characters");
  return s;
}

Bytes ArgBuffer(const Napi::Value &v, const std::string &what) {
  // A Buffer is a Uint8Array; other views (Uint16Array, DataView) are refused
  // so that lengths always count bytes.
  if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
    auto u8 = v.As<Napi::Uint8Array>();  // Data() includes the byte offset
    return Bytes{u8.Data(), u8.ElementLength()};
  }
  ThrowType(v.Env(), what + " must be a Buffer or Uint8Array");
}

Napi::Object OptObject(const Napi::Value &v, const std::string &what) {
  if (IsAbsent(v)) return Napi::Object::New(v.Env());
  if (!v.IsObject() || v.IsArray() || v.IsFunction() || v.IsBuffer())
    ThrowType(v.Env(), what + " must be an object");
  return v.As<Napi::Object>();
}

Napi::Buffer<uint8_t> CopyBuffer(Napi::Env env, const void *data, size_t len) {
  if (len == 0) return Napi::Buffer<uint8_t>::New(env, 0);
  return Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t *>(data), len);
}

// ---- fds --------------------------------------------------------------------

FdKind KindOfFd(Napi::Env env, int fd, const std::string &op) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  char target[256];
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n < 0) {
    int err = errno;
    if (err == ENOENT) {
      // Either the fd is not open, or /proc is not mounted at all.
      if (access("/proc/self/fd", X_OK) != 0) return FdKind::Unknown;
      ThrowErrno(env, op + ": fd " + std::to_string(fd), EBADF);
    }
    return FdKind::Unknown;
  }
  target[n] = '\0';
  const char *t = target;
  if (std::strcmp(t, "anon_inode:bpf-map") == 0) return FdKind::Map;
  if (std::strcmp(t, "anon_inode:bpf-prog") == 0) return FdKind::Prog;
  if (std::strcmp(t, "anon_inode:bpf_link") == 0 || std::strcmp(t, "anon_inode:bpf-link") == 0)
    return FdKind::Link;
  if (std::strcmp(t, "anon_inode:btf") == 0) return FdKind::Btf;
  if (std::strncmp(t, "anon_inode:bpf", 14) == 0) return FdKind::OtherBpf;
  return FdKind::NotBpf;
}

const char *FdKindName(FdKind k) {
  switch (k) {
    case FdKind::Map:
      return "a BPF map";
    case FdKind::Prog:
      return "a BPF program";
    case FdKind::Link:
      return "a BPF link";
    case FdKind::Btf:
      return "a BTF object";
    case FdKind::OtherBpf:
      return "another BPF object";
    case FdKind::NotBpf:
      return "not a BPF object";
    case FdKind::Unknown:
      break;
  }
  return "unknown";
}

void ExpectFdKind(Napi::Env env, int fd, FdKind want, const std::string &op) {
  FdKind k = KindOfFd(env, fd, op);
  if (k == want || k == FdKind::Unknown) return;
  throw MakeCodedError(env,
                       op + ": fd " + std::to_string(fd) + " is " + FdKindName(k) + ", expected " +
                           FdKindName(want) + " (EINVAL)",
                       EINVAL, op);
}

}  // namespace ferry
