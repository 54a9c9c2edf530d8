#!/usr/bin/env python3
"""Socket operations for the socket-LB tests and benchmark, run as a process
of its own so that it can be placed in a cgroup before it opens a socket.

  sockclient.py < OPS_JSON

OPS_JSON (on stdin: target lists outgrow a command line) is a list of
operations, done in order; prints a JSON list with one
result per operation. Families follow the address unless "family" (4 or 6)
says otherwise (a v6 socket to ::ffff:a.b.c.d is family 6).

  {"op": "tcp", "host", "port"}
      connect(), getpeername(), read until EOF.
      -> {"peer": [host, port], "reply": text} or {"error": "ECONNREFUSED"}
  {"op": "udp", "host", "port", "count": 1, "connect": false}
      one socket; count datagrams with sendto() (or connect() + send()),
      each answered: -> {"replies": [{"source": [host, port], "reply": text}],
      "peer": [host, port] when connected} or {"error": ...}
  {"op": "sleep", "seconds"}
  {"op": "loop", "proto": "tcp"|"udp", "targets": [[host, port], ...],
   "seconds": s, "max": n}
      as many new connections (TCP connect() + close() with RST, no
      TIME_WAIT) or new sockets each sending one datagram (UDP) as fit in s
      seconds (at most n), to targets in a fixed pseudo-random order
      -> {"count": n, "ns": elapsed, "errors": e, "firstError": name}
"""
import errno
import json
import random
import socket
import struct
import sys
import time


def family(op):
    f = op.get("family")
    if f == 6 or (f is None and ":" in op["host"]):
        return socket.AF_INET6
    return socket.AF_INET


def err_name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def addr(sockaddr):
    return [sockaddr[0], sockaddr[1]]


def op_tcp(op):
    s = socket.socket(family(op), socket.SOCK_STREAM)
    s.settimeout(op.get("timeout", 5))
    try:
        s.connect((op["host"], op["port"]))
        peer = addr(s.getpeername())
        data = b""
        while True:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        return {"peer": peer, "reply": data.decode()}
    except OSError as e:
        return {"error": err_name(e)}
    finally:
        s.close()


def op_udp(op):
    s = socket.socket(family(op), socket.SOCK_DGRAM)
    s.settimeout(op.get("timeout", 5))
    dst = (op["host"], op["port"])
    out = {"replies": []}
    try:
        if op.get("connect"):
            s.connect(dst)
            out["peer"] = addr(s.getpeername())
        for i in range(op.get("count", 1)):
            payload = b"ping %d" % i
            if op.get("connect"):
                s.send(payload)
            else:
                s.sendto(payload, dst)
            data, source = s.recvfrom(2048)
            out["replies"].append({"source": addr(source), "reply": data.decode()})
        return out
    except OSError as e:
        out["error"] = err_name(e)
        return out
    finally:
        s.close()


LINGER_RST = struct.pack("ii", 1, 0)


def op_loop(op):
    targets = [(h, p) for h, p in op["targets"]]
    fam = socket.AF_INET6 if ":" in targets[0][0] else socket.AF_INET
    rng = random.Random(op.get("seed", 1))
    order = [targets[rng.randrange(len(targets))] for _ in range(4096)]
    tcp = op["proto"] == "tcp"
    budget = int(op.get("seconds", 1) * 1e9)
    limit = op.get("max", 1 << 62)
    count = errors = 0
    first = None
    start = time.perf_counter_ns()
    elapsed = 0
    while count < limit:
        dst = order[count & 4095]
        try:
            if tcp:
                s = socket.socket(fam, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                s.connect(dst)
            else:
                s = socket.socket(fam, socket.SOCK_DGRAM)
                s.sendto(b"x", dst)
            s.close()
        except OSError as e:
            errors += 1
            first = first or err_name(e)
            s.close()
        count += 1
        if count & 63 == 0:
            elapsed = time.perf_counter_ns() - start
            if elapsed >= budget:
                break
    elapsed = time.perf_counter_ns() - start
    return {"count": count, "ns": elapsed, "errors": errors, "firstError": first}


def main():
    ops = json.loads(sys.stdin.read())
    out = []
    for op in ops:
        kind = op["op"]
        if kind == "tcp":
            out.append(op_tcp(op))
        elif kind == "udp":
            out.append(op_udp(op))
        elif kind == "sleep":
            time.sleep(op["seconds"])
            out.append({})
        elif kind == "loop":
            out.append(op_loop(op))
        else:
            raise SystemExit("unknown op %r" % kind)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
