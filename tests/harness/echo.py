# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A tiny server and client that say who answered and whom it saw, for the NAT tests.

    python3 echo.py serve NAME PORT/PROTO...     listen on [::] (IPv4 too) for each port; print "ready" once bound;
                                                 answer each TCP connection or UDP datagram with "NAME PEER_ADDRESS"
    python3 echo.py ask HOST PORT PROTO [SECONDS [SPORT]]   print the answer; exit 1 with the reason on a timeout
                                                 or a refusal (SPORT: a fixed source port)

Run inside a network namespace with ``ip netns exec``.  No third-party modules, any Python 3.
"""

import ipaddress
import selectors
import socket
import struct
import sys


def _peer(address):
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


IP_PKTINFO, IPV6_RECVPKTINFO, IPV6_PKTINFO = 8, 49, 50  # linux/in.h, linux/in6.h


def _udp_socket(family):
    """A UDP socket that learns each datagram's destination, so the answer leaves from it (a multi-homed host
    would otherwise answer from the address routing picks, and a connected client would ignore it)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _answer_udp(sock, name):
    data, ancillary, _flags, peer = sock.recvmsg(2048, 256)
    reply = []
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:  # ifindex, spec_dst, addr: answer from addr
            reply.append((level, kind, struct.pack("=i4s4s", 0, value[8:12], b"\0" * 4)))
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
            reply.append((level, kind, value[:16] + struct.pack("=i", 0)))
    sock.sendmsg([("%s %s\n" % (name, _peer(peer[0]))).encode()], reply, 0, peer)


def serve(name, specs):
    selector = selectors.DefaultSelector()
    for spec in specs:
        port, proto = (spec.split("/", 1) + ["tcp"])[:2]
        if proto == "udp":
            for family, any_address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                sock = _udp_socket(family)
                sock.bind((any_address, int(port)))
                selector.register(sock, selectors.EVENT_READ, "udp")
            continue
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", int(port)))
        sock.listen(64)
        selector.register(sock, selectors.EVENT_READ, "tcp")
    print("ready", flush=True)
    while True:
        for key, _events in selector.select():
            sock = key.fileobj
            if key.data == "udp":
                _answer_udp(sock, name)
                continue
            conn, peer = sock.accept()
            with conn:
                conn.settimeout(5)
                try:
                    conn.sendall(("%s %s\n" % (name, _peer(peer[0]))).encode())
                except OSError:
                    pass


def ask(host, port, proto, seconds, sport=0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(seconds)
        if sport:  # a fixed source port: the same conntrack entry on every ask
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", sport))
        try:
            if kind == socket.SOCK_DGRAM:
                sock.connect((host, port))
                sock.send(b"hello\n")
                data = sock.recv(2048)
            else:
                sock.connect((host, port))
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(2048)
                    if not chunk:
                        break
                    data += chunk
        except (OSError, socket.timeout) as exc:
            print("no answer from %s %s/%s: %s" % (host, port, proto, exc))
            return 1
    print(data.decode().strip())
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "serve":
        serve(argv[1], argv[2:])
        return 0
    if len(argv) in (4, 5, 6) and argv[0] == "ask":
        return ask(argv[1], int(argv[2]), argv[3], float(argv[4]) if len(argv) >= 5 else 5.0,
                   int(argv[5]) if len(argv) == 6 else 0)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
