#!/usr/bin/env python3
"""ICMP for the lab, with raw sockets (Node has none). Run inside a namespace.

  icmp.py echo SRC DST COUNT TIMEOUT_S
      Sends COUNT echo requests from SRC to DST and prints
      {"sent": n, "received": n, "from": {address: count}} (replies with our id).

  icmp.py toobig SRC DST QSRC QDST PROTO QSPORT QDPORT MTU COUNT
      Sends COUNT ICMP "fragmentation needed" (IPv4) / "packet too big" (IPv6)
      from SRC (a router on the path) to DST, quoting a packet QSRC:QSPORT ->
      QDST:QDPORT of PROTO (tcp|udp) that did not fit in MTU. Prints {"sent": n}.

Both families follow DST. IPv4 checksums are computed here; the kernel fills
in ICMPv6 checksums itself.
"""
import json
import os
import select
import socket
import struct
import sys
import time


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def v6(addr: str) -> bool:
    return ":" in addr


def raw_socket(src: str) -> socket.socket:
    if v6(src):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.bind((src, 0))
    return s


def echo(src: str, dst: str, count: int, timeout: float) -> dict:
    s = raw_socket(src)
    ident = os.getpid() & 0xFFFF
    six = v6(dst)
    got = set()
    frm: dict = {}
    for seq in range(count):
        payload = b"ferrylab-echo" + struct.pack("!H", seq)
        if six:
            pkt = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload
        else:
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, seq) + payload
        s.sendto(pkt, (dst, 0))
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        data, addr = s.recvfrom(65535)
        if not six:
            data = data[(data[0] & 0x0F) * 4:]  # IPv4 raw sockets see the IP header
        if len(data) < 8:
            continue
        typ, _code, _ck, rid, rseq = struct.unpack("!BBHHH", data[:8])
        if typ == (129 if six else 0) and rid == ident and rseq not in got and rseq < count:
            got.add(rseq)
            frm[addr[0]] = frm.get(addr[0], 0) + 1
    return {"sent": count, "received": len(got), "from": frm}


def toobig(src, dst, qsrc, qdst, proto, qsport, qdport, mtu, count) -> dict:
    s = raw_socket(src)
    pnum = 6 if proto == "tcp" else 17
    # The first 8 bytes of the quoted transport header: ports and TCP seq / UDP length+checksum.
    l4 = struct.pack("!HHI", qsport, qdport, 1)
    if v6(dst):
        quoted = struct.pack("!IHBB", 6 << 28, 1400, pnum, 64)
        quoted += socket.inet_pton(socket.AF_INET6, qsrc) + socket.inet_pton(socket.AF_INET6, qdst) + l4
        pkt = struct.pack("!BBHI", 2, 0, 0, mtu) + quoted
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, mtu + 100, 0, 0x4000, 64, pnum, 0,
                         socket.inet_aton(qsrc), socket.inet_aton(qdst))
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        body = struct.pack("!HH", 0, mtu) + ip + l4
        pkt = struct.pack("!BBH", 3, 4, 0) + body
        pkt = pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:]
    for _ in range(count):
        s.sendto(pkt, (dst, 0))
    return {"sent": count}


def main(argv):
    if len(argv) >= 5 and argv[0] == "echo":
        out = echo(argv[1], argv[2], int(argv[3]), float(argv[4]))
    elif len(argv) == 10 and argv[0] == "toobig":
        _, src, dst, qsrc, qdst, proto, qsport, qdport, mtu, count = argv
        out = toobig(src, dst, qsrc, qdst, proto, int(qsport), int(qdport), int(mtu), int(count))
    else:
        sys.stderr.write(__doc__)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
