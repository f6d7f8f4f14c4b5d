# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the one adapter over pyroute2.

Works with the distro pyroute2 0.7.x (thread-based) and PyPI 0.9.x (asyncio
core).  The calls used here (get_links, link_lookup, link, addr, route,
get_addr) exist in both; what differs is handled here and nowhere else:

* 0.9 returns tuples/generators where 0.7 returned lists: always ``list()``;
* 0.7 messages do not answer ``msg.get('ifname')``: always ``get_attr('IFLA_*')``;
* 0.7 has no ``IPRoute(netns=...)``: the socket for another namespace is opened
  by entering it with setns for the duration of the ``socket()`` call only
  (a netlink socket stays bound to the namespace it was created in), and the
  caller's namespace is restored in ``finally``;
* dumps filtered by ifindex or bridge (``addresses``, ``ports``) must be filtered
  by the kernel (NETLINK_GET_STRICT_CHK), not by pyroute2 after a full dump, so
  their cost does not grow with the number of interfaces: 0.7 takes a raw
  ``nlm_request`` with the filter in the message, 0.9 takes the request fields
  plus an explicit ``dump_filter`` (its default moves them into a client filter);
* RTM_GETNSID answers "no id" as -1 or as its unsigned form 4294967295.

Callers get plain dataclasses, never pyroute2 messages.
"""

from __future__ import annotations

import typing as t
from contextlib import contextmanager
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

IFF_UP = 0x1  # include/uapi/linux/if.h


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


def _import_iproute() -> t.Any:
    from pyroute2 import IPRoute  # deferred: pyroute2 is an optional target dependency
    return IPRoute


def netlink_error_code(exc: BaseException) -> t.Optional[int]:
    """The errno inside a pyroute2 NetlinkError, or None for other exceptions."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def as_oserror(exc: BaseException, what: str, name: str = "") -> OSError:
    """Turn a NetlinkError into OSError(errno, context) so every layer sees one error type."""
    import os
    code = netlink_error_code(exc)
    if code is None:
        return OSError(0, "%s failed: %s" % (what, exc), name or None)
    return OSError(code, "%s failed: %s" % (what, os.strerror(code)), name or None)


def _attr(msg: t.Any, name: str) -> t.Any:
    return msg.get_attr(name)


def _is_async_core(ipr: t.Any) -> bool:
    """pyroute2 0.9 wraps an asyncio core (``ipr.asyncore``); 0.7 is thread-based."""
    return hasattr(ipr, "asyncore")


NSID_NOT_ASSIGNED = (-1, 0xFFFFFFFF)  # NETNSA_NSID_NOT_ASSIGNED, signed or unsigned


def address_from_msg(msg: t.Any) -> t.Optional[Address]:
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on
    # point-to-point links (where it is the far end), and IPv6 sends IFA_ADDRESS alone.
    address = _attr(msg, "IFA_LOCAL") or _attr(msg, "IFA_ADDRESS")
    if address is None:
        return None
    return Address(index=msg["index"], cidr="%s/%d" % (address, msg["prefixlen"]), family=msg["family"])


def link_from_msg(msg: t.Any) -> Link:
    kind = None
    info = _attr(msg, "IFLA_LINKINFO")
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND")
    return Link(
        index=msg["index"],
        name=_attr(msg, "IFLA_IFNAME"),
        kind=kind,
        mtu=_attr(msg, "IFLA_MTU") or 0,
        up=bool(msg["flags"] & IFF_UP),
        mac=(_attr(msg, "IFLA_ADDRESS") or None),
        master=_attr(msg, "IFLA_MASTER") or None,
        peer_index=_attr(msg, "IFLA_LINK"),
        peer_netnsid=_attr(msg, "IFLA_LINK_NETNSID"),
        operstate=_attr(msg, "IFLA_OPERSTATE") or "",
    )


class Rtnl:
    """rtnetlink in one network namespace, through one pyroute2 IPRoute socket."""

    def __init__(self, ipr: t.Any) -> None:
        self.ipr = ipr

    def _call(self, what: str, name: str, func: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            result = func(*args, **kwargs)
            return list(result) if result is not None and not isinstance(result, (int, str)) else result
        except Exception as exc:  # pyroute2 raises NetlinkError (and a few others) for kernel refusals
            if netlink_error_code(exc) is None and not isinstance(exc, OSError):
                raise
            raise as_oserror(exc, what, name)

    # --- links -------------------------------------------------------------
    def links(self) -> t.List[Link]:
        return [link_from_msg(m) for m in self._call("dump links", "", self.ipr.get_links)]

    def link_by_name(self, name: str) -> t.Optional[Link]:
        """Exact-name lookup through the kernel (RTM_GETLINK by IFLA_IFNAME): no scan, no substring."""
        try:
            msgs = self.ipr.link("get", ifname=name)
        except Exception as exc:
            if netlink_error_code(exc) == 19:  # ENODEV
                return None
            raise as_oserror(exc, "look up link", name)
        msgs = list(msgs)
        return link_from_msg(msgs[0]) if msgs else None

    def link_by_index(self, index: int) -> t.Optional[Link]:
        try:
            msgs = list(self.ipr.link("get", index=index))
        except Exception as exc:
            if netlink_error_code(exc) == 19:
                return None
            raise as_oserror(exc, "look up link", str(index))
        return link_from_msg(msgs[0]) if msgs else None

    def link_set(self, index: int, name: str = "", **attrs: t.Any) -> None:
        """RTM_NEWLINK on an existing link: mtu=, state='up', master=, net_ns_fd=, ifname=, address=."""
        self._call("set link %s" % ", ".join(sorted(attrs)), name, self.ipr.link, "set", index=index, **attrs)

    def link_add(self, name: str, kind: str, **attrs: t.Any) -> None:
        self._call("create %s link" % kind, name, self.ipr.link, "add", ifname=name, kind=kind, **attrs)

    def veth_add(self, name: str, peer: str, peer_netns_fd: t.Optional[int] = None,
                 mtu: t.Optional[int] = None) -> None:
        """Create a veth pair in one RTM_NEWLINK; the peer is born in the namespace
        behind ``peer_netns_fd`` (an open fd the caller keeps open) when given."""
        spec: t.Dict[str, t.Any] = {"ifname": peer}
        extra: t.Dict[str, t.Any] = {}
        if peer_netns_fd is not None:
            spec["net_ns_fd"] = peer_netns_fd
        if mtu is not None:
            spec["mtu"] = extra["mtu"] = mtu
        self._call("create veth pair %s/%s" % (name, peer), name, self.ipr.link, "add",
                   ifname=name, kind="veth", peer=spec, **extra)

    def link_move(self, index: int, netns_fd: int, new_name: str, name: str = "") -> None:
        """Move a link into the namespace behind ``netns_fd`` and name it ``new_name`` there,
        in one RTM_NEWLINK (the kernel moves first, then renames inside the target)."""
        self._call("move link into another netns as %s" % new_name, name, self.ipr.link, "set",
                   index=index, net_ns_fd=netns_fd, ifname=new_name)

    def ports(self, master: int) -> t.List[Link]:
        """The links enslaved to ``master`` (a bridge), filtered by the kernel (IFLA_MASTER)."""
        if _is_async_core(self.ipr):
            msgs = self._call("dump bridge ports", str(master), self.ipr.link, "dump", master=master,
                              dump_filter=lambda msg: True)
        else:
            from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
            from pyroute2.netlink.rtnl import RTM_GETLINK
            from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
            msg = ifinfmsg()
            msg["attrs"].append(["IFLA_MASTER", master])
            msgs = self._call("dump bridge ports", str(master), self.ipr.nlm_request, msg,
                              msg_type=RTM_GETLINK, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
        # the kernel filters; checking again costs nothing and guards an old kernel that ignores it
        return [link for link in (link_from_msg(m) for m in msgs) if link.master == master]

    def link_del(self, index: int, name: str = "") -> None:
        self._call("delete link", name, self.ipr.link, "del", index=index)

    # --- addresses ---------------------------------------------------------
    def addresses(self, index: int) -> t.List[Address]:
        """Addresses of one link, dumped with the ifindex filter applied by the kernel."""
        if _is_async_core(self.ipr):
            msgs = self._call("dump addresses", str(index), self.ipr.addr, "dump", index=index,
                              dump_filter=lambda msg: True)
        else:
            from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
            from pyroute2.netlink.rtnl import RTM_GETADDR
            from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
            msg = ifaddrmsg()
            msg["index"] = index
            msgs = self._call("dump addresses", str(index), self.ipr.nlm_request, msg,
                              msg_type=RTM_GETADDR, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
        found = (address_from_msg(m) for m in msgs if m["index"] == index)
        return [address for address in found if address is not None]

    def address_add(self, index: int, address: str, prefixlen: int, name: str = "") -> None:
        self._call("add address %s/%d" % (address, prefixlen), name, self.ipr.addr, "add",
                   index=index, address=address, prefixlen=prefixlen)

    def address_del(self, index: int, address: str, prefixlen: int, name: str = "") -> None:
        self._call("delete address %s/%d" % (address, prefixlen), name, self.ipr.addr, "del",
                   index=index, address=address, prefixlen=prefixlen)

    # --- routes ------------------------------------------------------------
    def routes(self, family: int, table: int = 254) -> t.List[Route]:
        result = []
        for msg in self._call("dump routes", "", self.ipr.get_routes, family=family, table=table):
            dst = _attr(msg, "RTA_DST")
            result.append(Route(dst="%s/%d" % (dst, msg["dst_len"]) if dst else "default",
                                gateway=_attr(msg, "RTA_GATEWAY"), oif=_attr(msg, "RTA_OIF"),
                                family=msg["family"]))
        return result

    def route(self, command: str, **attrs: t.Any) -> None:
        self._call("%s route" % command, str(attrs.get("dst", "")), self.ipr.route, command, **attrs)

    def default_routes(self, family: int) -> t.List[Route]:
        """Default routes of the main table for one family (a namespace's own, small table)."""
        return [route for route in self.routes(family) if route.dst == "default"]

    def default_route_replace(self, family: int, gateway: str, oif: int) -> None:
        self._call("set default route via %s" % gateway, "", self.ipr.route, "replace",
                   dst=_any_network(family), gateway=gateway, oif=oif, family=family)

    def default_route_del(self, family: int, gateway: t.Optional[str], oif: int) -> None:
        attrs: t.Dict[str, t.Any] = {"dst": _any_network(family), "oif": oif, "family": family}
        if gateway:
            attrs["gateway"] = gateway
        self._call("delete default route via %s" % (gateway or "the link"), "", self.ipr.route, "del", **attrs)

    # --- namespaces ----------------------------------------------------------
    def nsid_of(self, netns_fd: int) -> t.Optional[int]:
        """The id this namespace gives the namespace behind ``netns_fd`` (RTM_GETNSID), or None."""
        try:
            result = self.ipr.get_netnsid(fd=netns_fd)
        except Exception as exc:
            raise as_oserror(exc, "get netns id")
        nsid = result.get("nsid") if isinstance(result, dict) else None
        return None if nsid is None or nsid in NSID_NOT_ASSIGNED else nsid

    def close(self) -> None:
        self.ipr.close()


def _any_network(family: int) -> str:
    import socket
    return "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"


def open_rtnl(netns_path: t.Optional[str] = None) -> Rtnl:
    """An open rtnetlink handle (the caller closes it) in the current namespace or at ``netns_path``.

    Strict checking lets the kernel apply dump filters (see ``addresses``).
    """
    iproute = _import_iproute()
    if netns_path is None:
        return Rtnl(iproute(strict_check=True))
    with libc.entered_netns(netns_path):
        return Rtnl(iproute(strict_check=True))


@contextmanager
def rtnl(netns_path: t.Optional[str] = None) -> t.Iterator[Rtnl]:
    """An rtnetlink handle in the current namespace, or in the one at ``netns_path``."""
    handle = open_rtnl(netns_path)
    try:
        yield handle
    finally:
        handle.close()
