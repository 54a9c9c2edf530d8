// SPDX-License-Identifier: Apache-2.0
//
// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. It lives
// here, outside the BPF surface, only because Node has no unix datagram
// sockets and ferryd runs as a Type=notify service.
#include <napi.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ops.h"
#include "util.h"

namespace ferry {

Napi::Value SdNotify(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string state = ArgString(info[0], "sdNotify: state");
  const char *path = getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return Napi::Boolean::New(env, false);

  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  size_t len = strlen(path);
  // '@' names an abstract socket: its first byte is NUL.
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path))
    ThrowErrno(env, "sdNotify: NOTIFY_SOCKET is not a usable socket path", EINVAL);
  memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t alen = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + len);

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "sdNotify: socket", errno);
  ssize_t n = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                     reinterpret_cast<struct sockaddr *>(&addr), alen);
  int err = errno;
  close(fd);
  if (n < 0) ThrowErrno(env, std::string("sdNotify: sendto ") + path, err);
  return Napi::Boolean::New(env, true);
}

}  // namespace ferry
