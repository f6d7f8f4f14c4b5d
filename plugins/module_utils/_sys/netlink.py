# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the one rtnetlink adapter (links, addresses, default routes, netns ids).

It speaks rtnetlink itself, over a ``socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)``, with ``struct``:
the handful of messages the collection needs are small and fixed (include/uapi/linux/netlink.h,
rtnetlink.h, if_link.h, if_addr.h, net_namespace.h, veth.h).  Importing pyroute2 cost more than the
work of a whole module call (0.1 to 0.5 s, and more under load: it pulls in asyncio, unittest.mock and
importlib.metadata), and it is never needed for these few messages.

* Lookups are direct: a link by name or ifindex (RTM_GETLINK), a namespace's id by fd (RTM_GETNSID).
* Dumps filtered by ifindex or bridge (``addresses``, ``ports``) are filtered by the kernel
  (NETLINK_GET_STRICT_CHK), so their cost does not grow with the number of interfaces.
* A socket for another namespace is opened by entering it with setns for the duration of the
  ``socket()`` call only (a netlink socket stays bound to the namespace it was created in); the
  caller's namespace is restored in ``finally``.
* Kernel refusals become ``OSError(errno, "<what> failed: <strerror>[: <kernel's extended ack>]", name)``.
* RTM_GETNSID answers "no id" as -1.

Callers get plain dataclasses.  The pure encoders and decoders (``pack_*``, ``parse_*``) are unit-tested
on recorded kernel messages.  ``Netlink`` (request, dump) and ``open_socket(protocol)`` serve other
netlink families too (ctnetlink in _sys/conntrack.py).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

IFF_UP = 0x1  # include/uapi/linux/if.h

# include/uapi/linux/netlink.h
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # flags of an NLMSG_ERROR
NLMSGERR_ATTR_MSG = 1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

# include/uapi/linux/rtnetlink.h
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNSID, RTM_GETNSID = 88, 90
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15

# include/uapi/linux/if_link.h, veth.h, if_addr.h, net_namespace.h
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_LINK_NETNSID = 16, 18, 28, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
NETNSA_NSID, NETNSA_FD = 1, 3
NSID_NOT_ASSIGNED = (-1, 0xFFFFFFFF)  # NETNSA_NSID_NOT_ASSIGNED, signed or unsigned

OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")  # IF_OPER_*

NLMSGHDR = struct.Struct("=IHHII")   # len, type, flags, seq, pid
RTATTR = struct.Struct("=HH")        # len, type
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTGENMSG = struct.Struct("=Bxxx")    # family (padded to 4 bytes, as iproute2 sends it)
RECV_SIZE = 65536


@dataclass
class Link:
    """A network interface as the kernel reports it."""

    index: int
    name: str
    kind: t.Optional[str]  # IFLA_INFO_KIND: 'veth', 'bridge', None for physical
    mtu: int
    up: bool
    mac: t.Optional[str]
    master: t.Optional[int] = None  # ifindex of the bridge it is attached to
    peer_index: t.Optional[int] = None  # IFLA_LINK: a veth's peer ifindex (in the peer's namespace)
    peer_netnsid: t.Optional[int] = None  # IFLA_LINK_NETNSID: where the peer lives, if elsewhere
    operstate: str = ""


@dataclass
class Address:
    index: int
    cidr: str  # 'addr/prefix' as the kernel prints it (IFA_LOCAL, else IFA_ADDRESS)
    family: int


@dataclass
class Route:
    dst: str  # 'default' or 'net/prefix'
    gateway: t.Optional[str]
    oif: t.Optional[int]
    family: int
    extra: t.Dict[str, t.Any] = field(default_factory=dict)
    proto: int = field(default=0, compare=False)  # RTPROT_*: 9 (RTPROT_RA) when learned from a router advertisement


# --- encoding (pure) ---------------------------------------------------------------

def _align(length: int) -> int:
    return (length + 3) & ~3


def pack_attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes (the length field excludes the padding)."""
    length = RTATTR.size + len(payload)
    return RTATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def pack_nested(kind: int, *attrs: bytes) -> bytes:
    """A nested attribute, without NLA_F_NESTED, as iproute2 sends IFLA_LINKINFO and VETH_INFO_PEER."""
    return pack_attr(kind, b"".join(attrs))


def pack_u32(kind: int, value: int) -> bytes:
    return pack_attr(kind, struct.pack("=I", value))


def pack_str(kind: int, value: str) -> bytes:
    return pack_attr(kind, value.encode() + b"\0")


def pack_ip(kind: int, family: int, address: str) -> bytes:
    return pack_attr(kind, socket.inet_pton(family, address))


def pack_message(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, flags, seq, 0) + body


def pack_ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = socket.AF_UNSPEC) -> bytes:
    return IFINFOMSG.pack(family, 0, index, flags, change)


# --- decoding (pure) ---------------------------------------------------------------

def parse_attrs(data: bytes, offset: int = 0, end: t.Optional[int] = None) -> t.Dict[int, bytes]:
    """Attributes from ``offset`` to ``end``: type (without the nested/byte-order flags) -> payload.

    A truncated attribute ends the walk (the kernel never sends one; a fake must not loop or overrun).
    """
    end = len(data) if end is None else end
    attrs: t.Dict[int, bytes] = {}
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size or offset + length > end:
            break
        attrs.setdefault(kind & NLA_TYPE_MASK, data[offset + RTATTR.size:offset + length])
        offset += _align(length)
    return attrs


def _str(value: t.Optional[bytes]) -> t.Optional[str]:
    return None if value is None else value.split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(value: t.Optional[bytes]) -> t.Optional[int]:
    return None if value is None or len(value) < 4 else struct.unpack_from("=I", value)[0]


def _s32(value: t.Optional[bytes]) -> t.Optional[int]:
    return None if value is None or len(value) < 4 else struct.unpack_from("=i", value)[0]


def _mac(value: t.Optional[bytes]) -> t.Optional[str]:
    return ":".join("%02x" % byte for byte in value) if value else None


def _ip(family: int, value: t.Optional[bytes]) -> t.Optional[str]:
    if value is None:
        return None
    return socket.inet_ntop(family, value)


def parse_link(body: bytes) -> Link:
    """An RTM_NEWLINK body (ifinfomsg + attributes) as a Link."""
    _family, _type, index, flags, _change = IFINFOMSG.unpack_from(body)
    attrs = parse_attrs(body, IFINFOMSG.size)
    kind = None
    if IFLA_LINKINFO in attrs:
        kind = _str(parse_attrs(attrs[IFLA_LINKINFO]).get(IFLA_INFO_KIND))
    operstate = attrs.get(IFLA_OPERSTATE)
    return Link(
        index=index,
        name=_str(attrs.get(IFLA_IFNAME)) or "",
        kind=kind,
        mtu=_u32(attrs.get(IFLA_MTU)) or 0,
        up=bool(flags & IFF_UP),
        mac=_mac(attrs.get(IFLA_ADDRESS)),
        master=_u32(attrs.get(IFLA_MASTER)) or None,
        peer_index=_s32(attrs.get(IFLA_LINK)),
        peer_netnsid=_s32(attrs.get(IFLA_LINK_NETNSID)),
        operstate=OPERSTATES[operstate[0]] if operstate and operstate[0] < len(OPERSTATES) else "",
    )


def parse_address(body: bytes) -> t.Optional[Address]:
    """An RTM_NEWADDR body as an Address (IFA_LOCAL, else IFA_ADDRESS), or None if it has neither.

    IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on point-to-point links
    (where it is the far end), and IPv6 sends IFA_ADDRESS alone.
    """
    family, prefixlen, _flags, _scope, index = IFADDRMSG.unpack_from(body)
    attrs = parse_attrs(body, IFADDRMSG.size)
    address = _ip(family, attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS))
    if address is None:
        return None
    return Address(index=index, cidr="%s/%d" % (address, prefixlen), family=family)


def parse_route(body: bytes) -> t.Tuple[int, Route]:
    """An RTM_NEWROUTE body: (table, Route)."""
    family, dst_len, _src, _tos, table, proto, _scope, _type, _flags = RTMSG.unpack_from(body)
    attrs = parse_attrs(body, RTMSG.size)
    table = _u32(attrs.get(RTA_TABLE)) or table
    dst = _ip(family, attrs.get(RTA_DST))
    return table, Route(dst="%s/%d" % (dst, dst_len) if dst else "default", gateway=_ip(family, attrs.get(RTA_GATEWAY)),
                        oif=_u32(attrs.get(RTA_OIF)), family=family, proto=proto)


def parse_nsid(body: bytes) -> t.Optional[int]:
    """An RTM_NEWNSID body: the id, or None when the namespace has none (or the answer has no id)."""
    nsid = _s32(parse_attrs(body, RTGENMSG.size).get(NETNSA_NSID))
    return None if nsid is None or nsid in NSID_NOT_ASSIGNED else nsid


def parse_error(body: bytes, flags: int) -> t.Tuple[int, str]:
    """An NLMSG_ERROR body: (errno, the kernel's extended ack message or '').  errno 0 is an ack."""
    (code,) = struct.unpack_from("=i", body)
    message = ""
    if flags & NLM_F_ACK_TLVS and len(body) >= 4 + NLMSGHDR.size:
        # With NETLINK_EXT_ACK, the request's header (and, unless capped, its body) follows the error code.
        if flags & NLM_F_CAPPED:
            skip = 4 + NLMSGHDR.size
        else:
            skip = 4 + _align(NLMSGHDR.unpack_from(body, 4)[0])
        message = _str(parse_attrs(body, skip).get(NLMSGERR_ATTR_MSG)) or ""
    return -code, message


def split_messages(data: bytes) -> t.Iterator[t.Tuple[int, int, int, bytes]]:
    """(type, flags, seq, body) of each message in one datagram."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise OSError(errno.EBADMSG, "truncated netlink message (%d bytes at offset %d)" % (length, offset))
        yield msg_type, flags, seq, data[offset + NLMSGHDR.size:offset + length]
        offset += _align(length)


# --- the handle ----------------------------------------------------------------------

class Netlink:
    """One netlink socket of any protocol: a request, and its answers until the ack, the reply or the dump's end."""

    def __init__(self, sock: t.Any) -> None:
        self.sock = sock
        self.seq = 0

    def _exchange(self, msg_type: int, flags: int, body: bytes, what: str,
                  name: str = "") -> t.List[t.Tuple[int, bytes]]:
        """Send one request; return the (type, body) of each answer, until its ack, reply or dump end."""
        self.seq += 1
        seq = self.seq
        self.sock.send(pack_message(msg_type, flags, seq, body))
        answers: t.List[t.Tuple[int, bytes]] = []
        while True:
            data, _ancillary, msg_flags, _address = self.sock.recvmsg(RECV_SIZE)
            if msg_flags & socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, "%s failed: netlink answer larger than %d bytes" % (what, RECV_SIZE),
                              name or None)
            if not data:
                raise OSError(errno.EPIPE, "%s failed: the netlink socket closed" % what, name or None)
            for answer_type, answer_flags, answer_seq, answer in split_messages(data):
                if answer_seq != seq:
                    continue  # a late answer to an earlier request
                if answer_type == NLMSG_ERROR:
                    code, message = parse_error(answer, answer_flags)
                    if code:
                        text = "%s failed: %s" % (what, os.strerror(code))
                        raise OSError(code, text + (": " + message if message else ""), name or None)
                    return answers  # the ack
                if answer_type == NLMSG_DONE:
                    code, message = parse_error(answer, answer_flags) if len(answer) >= 4 else (0, "")
                    if code:  # a dump the kernel could not finish
                        raise OSError(code, "%s failed: %s" % (what, os.strerror(code)) +
                                      (": " + message if message else ""), name or None)
                    return answers
                answers.append((answer_type, answer))
                if not answer_flags & NLM_F_MULTI and not flags & NLM_F_ACK:
                    return answers  # the single reply to a get

    def _request(self, msg_type: int, flags: int, body: bytes, what: str, name: str = "") -> None:
        self._exchange(msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, body, what, name)

    def dump(self, msg_type: int, body: bytes, what: str, name: str = "") -> t.List[t.Tuple[int, bytes]]:
        """The (type, body) of every message of a dump."""
        return self._exchange(msg_type, NLM_F_REQUEST | NLM_F_DUMP, body, what, name)

    def request(self, msg_type: int, flags: int, body: bytes, what: str, name: str = "") -> None:
        """A change the kernel acknowledges (or refuses: OSError)."""
        self._request(msg_type, flags, body, what, name)

    def close(self) -> None:
        self.sock.close()


class Rtnl(Netlink):
    """rtnetlink in one network namespace, through one netlink socket."""

    # --- links -------------------------------------------------------------
    def links(self) -> t.List[Link]:
        answers = self._exchange(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, pack_ifinfo(), "dump links")
        return [parse_link(body) for kind, body in answers if kind == RTM_NEWLINK]

    def _get_link(self, body: bytes, what: str) -> t.Optional[Link]:
        try:
            answers = self._exchange(RTM_GETLINK, NLM_F_REQUEST, body, "look up link", what)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        links = [parse_link(answer) for kind, answer in answers if kind == RTM_NEWLINK]
        return links[0] if links else None

    def link_by_name(self, name: str) -> t.Optional[Link]:
        """Exact-name lookup through the kernel (RTM_GETLINK by IFLA_IFNAME): no scan, no substring."""
        return self._get_link(pack_ifinfo() + pack_str(IFLA_IFNAME, name), name)

    def link_by_index(self, index: int) -> t.Optional[Link]:
        return self._get_link(pack_ifinfo(index), str(index))

    def link_set(self, index: int, name: str = "", **attrs: t.Any) -> None:
        """RTM_NEWLINK on an existing link: mtu=, state='up'|'down', master=, net_ns_fd=, ifname=, address=."""
        unknown = set(attrs) - {"mtu", "state", "master", "net_ns_fd", "ifname", "address"}
        if unknown:
            raise TypeError("link_set: unsupported attributes %s" % ", ".join(sorted(unknown)))
        flags = change = 0
        if "state" in attrs:
            change = IFF_UP
            flags = IFF_UP if attrs["state"] == "up" else 0
        body = pack_ifinfo(index, flags, change)
        if "ifname" in attrs:
            body += pack_str(IFLA_IFNAME, attrs["ifname"])
        if "mtu" in attrs:
            body += pack_u32(IFLA_MTU, attrs["mtu"])
        if "master" in attrs:
            body += pack_u32(IFLA_MASTER, attrs["master"])
        if "net_ns_fd" in attrs:
            body += pack_u32(IFLA_NET_NS_FD, attrs["net_ns_fd"])
        if "address" in attrs:
            body += pack_attr(IFLA_ADDRESS, bytes.fromhex(attrs["address"].replace(":", "")))
        self._request(RTM_NEWLINK, 0, body, "set link %s" % ", ".join(sorted(attrs)), name)

    def link_add(self, name: str, kind: str, mtu: t.Optional[int] = None) -> None:
        body = pack_ifinfo() + pack_str(IFLA_IFNAME, name)
        if mtu is not None:
            body += pack_u32(IFLA_MTU, mtu)
        body += pack_nested(IFLA_LINKINFO, pack_str(IFLA_INFO_KIND, kind))
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, "create %s link" % kind, name)

    def veth_add(self, name: str, peer: str, peer_netns_fd: t.Optional[int] = None,
                 mtu: t.Optional[int] = None) -> None:
        """Create a veth pair in one RTM_NEWLINK; the peer is born in the namespace
        behind ``peer_netns_fd`` (an open fd the caller keeps open) when given."""
        peer_body = pack_ifinfo() + pack_str(IFLA_IFNAME, peer)
        body = pack_ifinfo() + pack_str(IFLA_IFNAME, name)
        if mtu is not None:
            peer_body += pack_u32(IFLA_MTU, mtu)
            body += pack_u32(IFLA_MTU, mtu)
        if peer_netns_fd is not None:
            peer_body += pack_u32(IFLA_NET_NS_FD, peer_netns_fd)
        body += pack_nested(IFLA_LINKINFO, pack_str(IFLA_INFO_KIND, "veth"),
                            pack_nested(IFLA_INFO_DATA, pack_nested(VETH_INFO_PEER, peer_body)))
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, "create veth pair %s/%s" % (name, peer), name)

    def link_move(self, index: int, netns_fd: int, new_name: str, name: str = "") -> None:
        """Move a link into the namespace behind ``netns_fd`` and name it ``new_name`` there,
        in one RTM_NEWLINK (the kernel moves first, then renames inside the target)."""
        body = pack_ifinfo(index) + pack_u32(IFLA_NET_NS_FD, netns_fd) + pack_str(IFLA_IFNAME, new_name)
        self._request(RTM_NEWLINK, 0, body, "move link into another netns as %s" % new_name, name)

    def ports(self, master: int) -> t.List[Link]:
        """The links enslaved to ``master`` (a bridge), filtered by the kernel (IFLA_MASTER)."""
        answers = self._exchange(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP,
                                 pack_ifinfo() + pack_u32(IFLA_MASTER, master), "dump bridge ports", str(master))
        # the kernel filters; checking again costs nothing and guards an old kernel that ignores it
        links = (parse_link(body) for kind, body in answers if kind == RTM_NEWLINK)
        return [link for link in links if link.master == master]

    def link_del(self, index: int, name: str = "") -> None:
        self._request(RTM_DELLINK, 0, pack_ifinfo(index), "delete link", name)

    # --- addresses ---------------------------------------------------------
    def addresses(self, index: int) -> t.List[Address]:
        """Addresses of one link, dumped with the ifindex filter applied by the kernel."""
        answers = self._exchange(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP,
                                 IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, index), "dump addresses", str(index))
        found = (parse_address(body) for kind, body in answers if kind == RTM_NEWADDR)
        return [address for address in found if address is not None and address.index == index]

    def all_addresses(self) -> t.List[Address]:
        """Every address of every link in this namespace (one dump)."""
        answers = self._exchange(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0),
                                 "dump addresses")
        found = (parse_address(body) for kind, body in answers if kind == RTM_NEWADDR)
        return [address for address in found if address is not None]

    def _address(self, msg_type: int, flags: int, index: int, address: str, prefixlen: int,
                 what: str, name: str) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        body = IFADDRMSG.pack(family, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        if family == socket.AF_INET:  # as iproute2: IFA_LOCAL is the address, IFA_ADDRESS the same (no peer)
            body += pack_ip(IFA_LOCAL, family, address)
        body += pack_ip(IFA_ADDRESS, family, address)
        self._request(msg_type, flags, body, "%s address %s/%d" % (what, address, prefixlen), name)

    def address_add(self, index: int, address: str, prefixlen: int, name: str = "") -> None:
        self._address(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, index, address, prefixlen, "add", name)

    def address_del(self, index: int, address: str, prefixlen: int, name: str = "") -> None:
        self._address(RTM_DELADDR, 0, index, address, prefixlen, "delete", name)

    # --- routes ------------------------------------------------------------
    def routes(self, family: int, table: int = RT_TABLE_MAIN) -> t.List[Route]:
        """The routes of one table and family (the kernel filters by table under strict checking)."""
        body = RTMSG.pack(family, 0, 0, 0, table, 0, 0, 0, 0)
        answers = self._exchange(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, body, "dump routes")
        routes = (parse_route(body) for kind, body in answers if kind == RTM_NEWROUTE)
        return [route for route_table, route in routes if route_table == table and route.family == family]

    def default_routes(self, family: int) -> t.List[Route]:
        """Default routes of the main table for one family (a namespace's own, small table)."""
        return [route for route in self.routes(family) if route.dst == "default"]

    def _default_route(self, msg_type: int, flags: int, family: int, gateway: t.Optional[str], oif: int,
                       what: str) -> None:
        # As before (pyroute2's defaults): a static unicast route of the main table, scope universe;
        # a delete leaves protocol and type unset, so it matches any.
        making = msg_type == RTM_NEWROUTE
        body = RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC if making else 0, RT_SCOPE_UNIVERSE,
                          RTN_UNICAST if making else 0, 0)
        body += pack_u32(RTA_TABLE, RT_TABLE_MAIN)
        if gateway:
            body += pack_ip(RTA_GATEWAY, family, gateway)
        body += pack_u32(RTA_OIF, oif)
        self._request(msg_type, flags, body, what)

    def default_route_replace(self, family: int, gateway: str, oif: int) -> None:
        self._default_route(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, family, gateway, oif,
                            "set default route via %s" % gateway)

    def default_route_del(self, family: int, gateway: t.Optional[str], oif: int) -> None:
        self._default_route(RTM_DELROUTE, 0, family, gateway, oif,
                            "delete default route via %s" % (gateway or "the link"))

    # --- namespaces ----------------------------------------------------------
    def nsid_of(self, netns_fd: int) -> t.Optional[int]:
        """The id this namespace gives the namespace behind ``netns_fd`` (RTM_GETNSID), or None."""
        answers = self._exchange(RTM_GETNSID, NLM_F_REQUEST,
                                 RTGENMSG.pack(socket.AF_UNSPEC) + pack_u32(NETNSA_FD, netns_fd), "get netns id")
        for kind, body in answers:
            if kind == RTM_NEWNSID:
                return parse_nsid(body)
        return None


def open_socket(protocol: int = NETLINK_ROUTE) -> socket.socket:
    """A bound netlink socket of ``protocol`` in the current namespace, with strict checks and extended acks."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    try:
        sock.bind((0, 0))
        for option in (NETLINK_GET_STRICT_CHK, NETLINK_EXT_ACK):  # Linux 4.20 and 4.12; best effort before
            try:
                sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:
                pass
    except BaseException:
        sock.close()
        raise
    return sock


def open_rtnl(netns_path: t.Optional[str] = None) -> Rtnl:
    """An open rtnetlink handle (the caller closes it) in the current namespace or at ``netns_path``.

    Strict checking lets the kernel apply dump filters (see ``addresses``).
    """
    if netns_path is None:
        return Rtnl(open_socket())
    with libc.entered_netns(netns_path):
        return Rtnl(open_socket())


@contextmanager
def rtnl(netns_path: t.Optional[str] = None) -> t.Iterator[Rtnl]:
    """An rtnetlink handle in the current namespace, or in the one at ``netns_path``."""
    handle = open_rtnl(netns_path)
    try:
        yield handle
    finally:
        handle.close()
