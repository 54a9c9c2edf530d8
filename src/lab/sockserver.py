#!/usr/bin/env python3
"""Backends for the socket-LB tests and benchmark. Run inside a namespace.

  sockserver.py SPEC...      SPEC = tcp|udp|udpsink,ADDRESS,PORT,NAME

Every TCP listener writes NAME to each connection and closes it; every UDP
socket answers each datagram with NAME, from the address it is bound to; a
udpsink socket reads datagrams and answers nothing (benchmarks).
Prints "ready" once every socket is bound; exits when stdin closes (so it
dies with the process that started it) or on SIGTERM.
"""
import selectors
import socket
import sys


def bind(proto, address, port):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if proto == "udpsink":
        # Room for bursts while this process serves other sockets.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((address, port))
    if proto == "tcp":
        s.listen(65535)  # capped by net.core.somaxconn
    s.setblocking(False)
    return s


def main():
    sel = selectors.DefaultSelector()
    for spec in sys.argv[1:]:
        proto, address, port, name = spec.split(",", 3)
        s = bind(proto, address, int(port))
        sel.register(s, selectors.EVENT_READ, (proto, name.encode()))
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                if not sys.stdin.readline():
                    return
                continue
            proto, name = key.data
            try:
                if proto == "tcp":
                    # Drain the backlog: the benchmark connects fast.
                    while True:
                        conn, _ = key.fileobj.accept()
                        try:
                            conn.send(name)
                        except OSError:
                            pass
                        conn.close()
                elif proto == "udp":
                    while True:
                        data, peer = key.fileobj.recvfrom(2048)
                        key.fileobj.sendto(name, peer)
                else:
                    while True:
                        key.fileobj.recv(2048)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                # A peer that reset before we answered.
                pass


if __name__ == "__main__":
    main()
