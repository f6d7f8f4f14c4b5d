# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: conntrack entries over ctnetlink (dump, delete), with ``struct``.

Why it is needed: NAT is decided on a connection's first packet only.  After a
published port is removed, its conntrack entries keep translating the flows
that exist; and a UDP "flow" towards a host port, seen before the port was
published, keeps bypassing the new mapping for as long as packets keep coming.
So both are deleted, as Docker and kube-proxy do.

The messages (include/uapi/linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h)
go over a NETLINK_NETFILTER socket through ``_sys.netlink.Netlink``:

* a dump of one address family (IPCTNL_MSG_CT_GET + NLM_F_DUMP), filtered by the
  kernel on protocol and original destination port (CTA_FILTER, Linux 5.8+) and
  again here, so an older kernel that ignores the filter gives the same answer;
* a delete by the entry's original tuple (IPCTNL_MSG_CT_DELETE), with its zone.

The pure encoders and decoders are unit-tested on recorded kernel messages.
"""

from __future__ import annotations

import errno
import socket
import struct
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import netlink

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NFGENMSG = struct.Struct("=BBH")  # family, version (NFNETLINK_V0), res_id (big endian)
NLA_F_NESTED = 0x8000
# enum ctattr_type, ctattr_tuple, ctattr_ip, ctattr_l4proto, ctattr_filter
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_ZONE, CTA_FILTER = 1, 2, 3, 18, 25
CTA_TUPLE_IP, CTA_TUPLE_PROTO, CTA_TUPLE_ZONE = 1, 2, 3
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_FILTER_ORIG_FLAGS = 1
FILTER_PROTO_NUM, FILTER_PROTO_DST_PORT = 1 << 3, 1 << 5  # net/netfilter/nf_conntrack_netlink.c
IPS_DST_NAT = 0x20  # include/uapi/linux/netfilter/nf_conntrack_common.h


@dataclass(frozen=True)
class Flow:
    """One conntrack entry: the original direction, and where the replies come from."""

    family: int  # 4 or 6
    protocol: int  # IPPROTO_TCP / IPPROTO_UDP
    source: str
    destination: str
    sport: int
    dport: int
    reply_source: str  # the DNAT target when the flow was translated
    reply_sport: int
    status: int
    zone: t.Optional[int] = None
    tuple_orig: bytes = b""  # the kernel's own encoding, sent back to delete the entry

    @property
    def translated(self) -> bool:
        return bool(self.status & IPS_DST_NAT)


def _message_type(command: int) -> int:
    return (NFNL_SUBSYS_CTNETLINK << 8) | command


def _af(family: int) -> int:
    return socket.AF_INET if family == 4 else socket.AF_INET6


def _nested(kind: int, *attrs: bytes) -> bytes:
    return netlink.pack_attr(kind | NLA_F_NESTED, b"".join(attrs))


def dump_request(family: int, protocol: int, dport: t.Optional[int]) -> bytes:
    """The body of a dump request for one family, filtered by protocol (and destination port) when the kernel can."""
    body = NFGENMSG.pack(_af(family), 0, 0)
    proto = [netlink.pack_attr(CTA_PROTO_NUM, struct.pack("=B", protocol))]
    flags = FILTER_PROTO_NUM
    if dport is not None:
        proto.append(netlink.pack_attr(CTA_PROTO_DST_PORT, struct.pack("!H", dport)))
        flags |= FILTER_PROTO_DST_PORT
    body += _nested(CTA_TUPLE_ORIG, _nested(CTA_TUPLE_PROTO, *proto))
    body += _nested(CTA_FILTER, netlink.pack_u32(CTA_FILTER_ORIG_FLAGS, flags))
    return body


def delete_request(flow: Flow) -> bytes:
    body = NFGENMSG.pack(_af(flow.family), 0, 0) + netlink.pack_attr(CTA_TUPLE_ORIG | NLA_F_NESTED, flow.tuple_orig)
    if flow.zone is not None:
        body += netlink.pack_attr(CTA_ZONE, struct.pack("!H", flow.zone))
    return body


def _tuple(family: int, data: bytes) -> t.Tuple[str, str, int, int, int]:
    """(source, destination, protocol, sport, dport) of a CTA_TUPLE_* payload."""
    attrs = netlink.parse_attrs(data)
    address = netlink.parse_attrs(attrs.get(CTA_TUPLE_IP, b""))
    proto = netlink.parse_attrs(attrs.get(CTA_TUPLE_PROTO, b""))
    src, dst = (CTA_IP_V4_SRC, CTA_IP_V4_DST) if family == 4 else (CTA_IP_V6_SRC, CTA_IP_V6_DST)

    def ip(kind: int) -> str:
        value = address.get(kind)
        return socket.inet_ntop(_af(family), value) if value else ""

    def port(kind: int) -> int:
        value = proto.get(kind)
        return struct.unpack("!H", value[:2])[0] if value and len(value) >= 2 else 0
    number = proto.get(CTA_PROTO_NUM)
    return ip(src), ip(dst), number[0] if number else 0, port(CTA_PROTO_SRC_PORT), port(CTA_PROTO_DST_PORT)


def parse_flow(family: int, body: bytes) -> t.Optional[Flow]:
    """An IPCTNL_MSG_CT_NEW body as a Flow, or None without both tuples."""
    attrs = netlink.parse_attrs(body, NFGENMSG.size)
    if CTA_TUPLE_ORIG not in attrs or CTA_TUPLE_REPLY not in attrs:
        return None
    source, destination, protocol, sport, dport = _tuple(family, attrs[CTA_TUPLE_ORIG])
    reply_source, _reply_destination, _protocol, reply_sport, _reply_dport = _tuple(family, attrs[CTA_TUPLE_REPLY])
    status = attrs.get(CTA_STATUS)
    zone = attrs.get(CTA_ZONE)
    return Flow(family, protocol, source, destination, sport, dport, reply_source, reply_sport,
                struct.unpack("!I", status[:4])[0] if status and len(status) >= 4 else 0,
                struct.unpack("!H", zone[:2])[0] if zone and len(zone) >= 2 else None, attrs[CTA_TUPLE_ORIG])


def delete_flows(protocol: int, family: int, predicate: t.Callable[[Flow], bool],
                 dport: t.Optional[int] = None) -> int:
    """Delete the ``protocol`` entries of ``family`` (4 or 6) that ``predicate`` picks; how many.

    With ``dport`` the kernel sends only the entries whose original destination port it is.
    """
    handle = netlink.Netlink(netlink.open_socket(NETLINK_NETFILTER))
    deleted = 0
    try:
        answers = handle.dump(_message_type(IPCTNL_MSG_CT_GET), dump_request(family, protocol, dport),
                              "dump conntrack entries")
        flows = (parse_flow(family, body) for kind, body in answers if kind & 0xFF == IPCTNL_MSG_CT_NEW)
        for flow in flows:
            if flow is None or flow.protocol != protocol or (dport is not None and flow.dport != dport):
                continue
            if not predicate(flow):
                continue
            try:
                handle.request(_message_type(IPCTNL_MSG_CT_DELETE), 0, delete_request(flow),
                               "delete conntrack entry", "%s:%d" % (flow.destination, flow.dport))
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # it expired meanwhile
                raise
            deleted += 1
    finally:
        handle.close()
    return deleted
