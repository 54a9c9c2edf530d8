// SPDX-License-Identifier: Apache-2.0
//
// Sockets carrying a firewall mark (SO_MARK), for health checks that take
// the direct-server-return path: Ferry's tc egress program recognises the
// mark and encapsulates the check to the backend's VIP. Node cannot set
// SO_MARK itself, and the mark must be on the socket before its first packet
// (the TCP SYN), so TCP sockets are created here and handed to net.Socket
// by fd; UDP sockets are marked after bind, before anything is sent.
#include <napi.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "ops.h"
#include "util.h"

namespace ferry {

static void SetMark(Napi::Env env, int fd, uint32_t mark, const std::string &fn) {
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
    ThrowErrno(env, fn + ": setsockopt(SO_MARK, fd " + std::to_string(fd) + ")", errno);
}

// socketOpen(family 4|6, kind "tcp"|"udp", mark) → fd: non-blocking,
// close-on-exec, marked, not connected; a TCP one bound to an ephemeral port.
Napi::Value SocketOpen(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "socketOpen";
  int64_t family = ArgInt(info[0], fn + ": family", 4, 6);
  if (family != 4 && family != 6) ThrowErrno(env, fn + ": family must be 4 or 6", EINVAL);
  std::string kind = ArgString(info[1], fn + ": kind");
  if (kind != "tcp" && kind != "udp")
    ThrowErrno(env, fn + ": kind must be \"tcp\" or \"udp\"", EINVAL);
  uint32_t mark = ArgU32(info[2], fn + ": mark");
  int type = (kind == "tcp" ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  int fd = socket(family == 4 ? AF_INET : AF_INET6, type, 0);
  if (fd < 0) ThrowErrno(env, fn + ": socket", errno);
  uint32_t m = mark;
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &m, sizeof(m)) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, fn + ": setsockopt(SO_MARK)", err);
  }
  // A TCP socket takes its local port now, by bind: a port taken by bind is
  // its alone, whereas connect() may give two sockets the same local port
  // towards different peers, and the DSR check path tells check connections
  // apart by (local address, local port, VIP, VIP port).
  if (kind == "tcp") {
    struct sockaddr_storage ss = {};
    socklen_t len;
    if (family == 4) {
      auto *a = reinterpret_cast<struct sockaddr_in *>(&ss);
      a->sin_family = AF_INET;
      len = sizeof(*a);
    } else {
      auto *a = reinterpret_cast<struct sockaddr_in6 *>(&ss);
      a->sin6_family = AF_INET6;
      len = sizeof(*a);
    }
    if (bind(fd, reinterpret_cast<struct sockaddr *>(&ss), len) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, fn + ": bind", err);
    }
  }
  return Napi::Number::New(env, fd);
}

// socketSetMark(fd, mark): marks an existing socket (a bound UDP socket).
Napi::Value SocketSetMark(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const std::string fn = "socketSetMark";
  int fd = ArgFd(info[0], fn + ": fd");
  uint32_t mark = ArgU32(info[1], fn + ": mark");
  SetMark(env, fd, mark, fn);
  return env.Undefined();
}

}  // namespace ferry
