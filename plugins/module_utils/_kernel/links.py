# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: network links: veth pairs, bridges, addresses, default routes.

No Ansible here.  Everything goes through the rtnetlink adapter (_sys.netlink),
with direct lookups only (a link by name or ifindex, a namespace's id by fd,
addresses and bridge ports filtered by the kernel), so the cost of one call
does not grow with the number of namespaces or interfaces on the host.

A veth pair is identified from its host end, never by the peer's name alone:
the host end's IFLA_LINK is the peer's ifindex and IFLA_LINK_NETNSID says in
which namespace it lives (absent: the same one).  See ``judge_host_end``.

Errors are ``OSError`` (from the kernel, with context) or ``LinkConflict``
(an existing interface is not the one asked for; nothing was changed).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.netns import netns_path
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import netlink
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import cidr_list

VETH = "veth"
BRIDGE = "bridge"
MTU_MIN = 68  # ETH_MIN_MTU
MTU_MAX = 65535  # ETH_MAX_MTU: the most a veth or bridge accepts

# Where a veth pair's peer is, relative to what was asked.
IN_PLACE = "in place"  # where it belongs, under its final name
ON_HOST = "on host"  # still in our namespace although a netns was asked: created, never moved
UNRENAMED = "unrenamed"  # inside the netns, but still under its host-side name
ORPHAN = "orphan"  # the peer alone, where it belongs; its other end went to a third namespace
FOREIGN = "foreign"  # where the peer belongs, under its name, but not this pair's (another kind, another pair)


class LinkConflict(KernelboxError):
    """An existing interface is not the one asked for; nothing was changed."""


def describe_kind(link: netlink.Link) -> str:
    return "a %s" % link.kind if link.kind else "a device without a link kind (physical or loopback)"


# --- handles -------------------------------------------------------------------

class Session:
    """rtnetlink handles, one per namespace, opened on first use and closed together."""

    def __init__(self) -> None:
        self._handles: t.Dict[t.Optional[str], netlink.Rtnl] = {}

    def rtnl(self, netns: t.Optional[str] = None) -> netlink.Rtnl:
        """The handle for the named netns ``netns``, or for our own namespace when None."""
        if netns not in self._handles:
            self._handles[netns] = netlink.open_rtnl(netns_path(netns) if netns else None)
        return self._handles[netns]

    def link(self, name: str, netns: t.Optional[str] = None) -> t.Optional[netlink.Link]:
        return self.rtnl(netns).link_by_name(name)

    def require(self, name: str, netns: t.Optional[str] = None) -> netlink.Link:
        link = self.link(name, netns)
        if link is None:
            raise OSError(19, "interface %s not found%s" % (name, " in netns %s" % netns if netns else ""), name)
        return link

    def addresses(self, link: netlink.Link, netns: t.Optional[str] = None) -> t.List[str]:
        """The link's addresses, normalised and sorted (IPv4 first)."""
        return cidr_list(a.cidr for a in self.rtnl(netns).addresses(link.index))

    def nsid_of(self, netns: str) -> t.Optional[int]:
        """The id our namespace gives the named netns (None if it has none yet)."""
        return self._nsid(None, netns_path(netns))

    def nsid_of_ours(self, netns: str) -> t.Optional[int]:
        """The id the named netns gives our namespace (None if it has none yet)."""
        return self._nsid(netns, "/proc/thread-self/ns/net")

    def _nsid(self, asked: t.Optional[str], path: str) -> t.Optional[int]:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:  # the fd must stay open until the kernel has answered
            return self.rtnl(asked).nsid_of(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.close()


# --- addresses and default routes (pure) ---------------------------------------------

def is_kernel_link_local(cidr: str) -> bool:
    """IPv6 link-local (fe80::/10): the kernel gives every interface one of its own."""
    iface = ipaddress.ip_interface(cidr)
    return iface.version == 6 and iface.ip.is_link_local


def managed_addresses(current: t.Iterable[str], wanted: t.Optional[t.Iterable[str]] = None) -> t.List[str]:
    """The addresses that count: all but IPv6 link-local ones, unless those are asked for."""
    wanted_set = set(wanted or ())
    return [a for a in current if a in wanted_set or not is_kernel_link_local(a)]


def address_changes(current: t.Iterable[str], wanted: t.Iterable[str]) -> t.Tuple[t.List[str], t.List[str]]:
    """(to_add, to_remove) so that the counted addresses become exactly ``wanted``.

    Both lists are normalised; link-local addresses not in ``wanted`` are never removed.
    """
    wanted_list = list(wanted)
    counted = managed_addresses(current, wanted_list)
    to_remove = [a for a in counted if a not in wanted_list]
    to_add = [a for a in wanted_list if a not in counted]
    return to_add, to_remove


def lost_with(removed: t.Iterable[str], kept: t.Iterable[str]) -> t.List[str]:
    """Kept IPv4 addresses that share a subnet with a removed one.

    Deleting the primary address of a subnet deletes its secondaries too
    (unless the promote_secondaries sysctl is set), so these may need adding back.
    """
    gone = {ipaddress.ip_interface(a).network for a in removed if ipaddress.ip_interface(a).version == 4}
    return [a for a in kept if ipaddress.ip_interface(a).network in gone]


def family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def gateway_in_networks(gateway: str, cidrs: t.Iterable[str]) -> bool:
    """Whether ``gateway`` is on-link for one of ``cidrs`` (IPv6 link-local always is)."""
    ip = ipaddress.ip_address(gateway)
    if ip.version == 6 and ip.is_link_local:
        return True
    networks = (ipaddress.ip_interface(c).network for c in cidrs)
    return any(ip in network for network in networks if network.version == ip.version)


@dataclass
class DefaultRoute:
    family: int
    gateway: t.Optional[str]
    oif: t.Optional[int]

    def describe(self, names: t.Mapping[int, str]) -> str:
        dev = names.get(self.oif or 0, "ifindex %s" % self.oif)
        return "via %s dev %s" % (self.gateway, dev) if self.gateway else "dev %s" % dev


def route_changes(routes: t.Iterable[DefaultRoute], oif: int,
                  gateways: t.Iterable[str]) -> t.Tuple[t.List[str], t.List[DefaultRoute]]:
    """(gateways to set, routes to delete) so the default routes via ``oif`` are exactly ``gateways``."""
    mine = [r for r in routes if r.oif == oif]
    wanted = list(gateways)
    to_delete = [r for r in mine if r.gateway not in wanted]
    present = {r.gateway for r in mine}
    return [g for g in wanted if g not in present], to_delete


def default_routes(session: Session, netns: t.Optional[str]) -> t.List[DefaultRoute]:
    rtnl = session.rtnl(netns)
    routes = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in rtnl.default_routes(family):
            gateway = str(ipaddress.ip_address(route.gateway)) if route.gateway else None
            routes.append(DefaultRoute(family, gateway, route.oif))
    return routes


# --- veth pairs --------------------------------------------------------------------

@dataclass
class VethSpec:
    """A veth pair as asked: ``peer`` is the peer's name on our side, ``peer_name`` inside ``netns``."""

    name: str
    peer: str
    netns: t.Optional[str] = None
    peer_name: str = ""

    def __post_init__(self) -> None:
        self.peer_name = self.peer_name or self.peer

    def where(self) -> str:
        return "netns %s" % self.netns if self.netns else "this host"


@dataclass
class VethPair:
    """A pair as found.  ``host`` is None for an orphan (the peer alone)."""

    host: t.Optional[netlink.Link]
    peer: netlink.Link
    peer_netns: t.Optional[str]  # the named netns the peer is in; None: our namespace
    position: str
    notes: t.List[str] = field(default_factory=list)


def judge_host_end(spec: VethSpec, host: netlink.Link, peer_here: t.Optional[netlink.Link],
                   target_nsid: t.Optional[int], peer_there: t.Optional[netlink.Link]) -> str:
    """Decide whether the existing interface ``host`` (named spec.name) is this pair's host end.

    ``peer_here`` is the link at host.peer_index in our namespace (looked up only
    when the host end says its peer is here); ``target_nsid`` is the id our
    namespace gives spec.netns (None when there is no such netns or id);
    ``peer_there`` is the link at host.peer_index inside spec.netns (looked up
    only when the ids match).  Returns the peer's position; raises LinkConflict.
    """
    if host.kind != VETH:
        raise LinkConflict("interface %s exists and is %s, not a veth; refusing to take it over"
                           % (spec.name, describe_kind(host)), found_kind=host.kind)
    if host.peer_netnsid is None:
        if peer_here is None:
            raise LinkConflict("veth %s has no peer that can be found (ifindex %s); refusing to guess"
                               % (spec.name, host.peer_index))
        if peer_here.name != spec.peer:
            raise LinkConflict("veth %s already exists with peer %s on this host, not %s; it belongs to "
                               "another pair" % (spec.name, peer_here.name, spec.peer), found_peer=peer_here.name)
        return ON_HOST if spec.netns else IN_PLACE
    if spec.netns is None or target_nsid is None or host.peer_netnsid != target_nsid:
        raise LinkConflict("veth %s already exists and its peer lives in another network namespace (nsid %d), "
                           "not in %s; it belongs to another pair (to move a pair, remove it first)"
                           % (spec.name, host.peer_netnsid, spec.where()), found_peer_nsid=host.peer_netnsid)
    if peer_there is None:
        raise LinkConflict("veth %s points at ifindex %s in netns %s, which does not exist there"
                           % (spec.name, host.peer_index, spec.netns))
    if peer_there.name == spec.peer_name:
        return IN_PLACE
    if peer_there.name == spec.peer:
        return UNRENAMED
    raise LinkConflict("veth %s already exists with peer %s in netns %s, not %s; it belongs to another pair"
                       % (spec.name, peer_there.name, spec.netns, spec.peer_name), found_peer=peer_there.name)


def find_veth(session: Session, spec: VethSpec, netns_exists: bool) -> t.Optional[VethPair]:
    """The pair as it is now, or None.  Raises LinkConflict when the names are taken by others."""
    host = session.link(spec.name)
    if host is not None:
        peer_here = target_nsid = peer_there = None
        if host.peer_netnsid is None and host.peer_index:
            peer_here = session.rtnl().link_by_index(host.peer_index)
        elif host.peer_netnsid is not None and spec.netns and netns_exists:
            target_nsid = session.nsid_of(spec.netns)
            if target_nsid == host.peer_netnsid and host.peer_index:
                peer_there = session.rtnl(spec.netns).link_by_index(host.peer_index)
        position = judge_host_end(spec, host, peer_here, target_nsid, peer_there)
        if host.peer_netnsid is None and peer_here is not None:
            return VethPair(host, peer_here, None, position)
        if peer_there is not None:
            return VethPair(host, peer_there, spec.netns, position)
        raise LinkConflict("veth %s: its peer cannot be found" % spec.name)  # judge_host_end already refused
    # No host end: is the peer there alone (its other end was moved away)?
    if spec.netns and not netns_exists:
        return None
    foreign = None
    for candidate in dict.fromkeys((spec.peer_name, spec.peer) if spec.netns else (spec.peer,)):
        found = session.link(candidate, spec.netns)
        if found is None:
            continue
        ours = None
        if spec.netns and found.kind == VETH and found.peer_netnsid is not None:
            ours = session.nsid_of_ours(spec.netns)
        position = judge_orphan(found, ours)
        if position == ORPHAN:
            return VethPair(None, found, spec.netns, ORPHAN)
        if foreign is None:
            foreign = VethPair(None, found, spec.netns, FOREIGN)
            if found.kind == VETH and found.peer_index:
                where = spec.netns if found.peer_netnsid is None else None if found.peer_netnsid == ours else ""
                if where != "":  # the other end is beside it, or here: name it
                    other = session.rtnl(where).link_by_index(found.peer_index)
                    place = "in netns %s" % where if where else "on this host"
                    foreign.notes.append("its other end is %s %s" % (other.name if other else "?", place))
    return foreign


def judge_orphan(found: netlink.Link, ours: t.Optional[int]) -> str:
    """Whether ``found`` (named like our peer, where our peer belongs; no host end of ours exists) is our
    peer left alone: ORPHAN, or FOREIGN.

    Only a veth whose other end lives in a third namespace can be (its host end was moved away).  A veth
    whose other end is in our namespace under another name, or beside it, belongs to another pair, and
    any other kind of interface is not ours.  ``ours`` is the id the peer's namespace gives our namespace
    (None when the peer would live in our namespace itself).
    """
    if found.kind != VETH or found.peer_netnsid is None:
        return FOREIGN
    if ours is not None and found.peer_netnsid == ours:
        return FOREIGN
    return ORPHAN


def orphan_conflict(spec: VethSpec, pair: VethPair) -> LinkConflict:
    """Why a present run cannot create the pair: the peer's name is taken where the peer belongs."""
    if pair.peer.kind != VETH:
        return LinkConflict("%s already has an interface named %s (%s) that is not this pair's peer"
                            % (spec.where(), pair.peer.name, describe_kind(pair.peer)),
                            found_kind=pair.peer.kind)
    if pair.position == FOREIGN:
        return LinkConflict("%s already has a veth named %s that belongs to another pair (%s); choose another name"
                            % (spec.where(), pair.peer.name, "; ".join(pair.notes) or "its other end is not %s"
                               % spec.name))
    return LinkConflict("%s already has a veth named %s, but its other end is not %s on this host (it was moved "
                        "away); remove it first (state=absent removes it) or choose another name"
                        % (spec.where(), pair.peer.name, spec.name))


def create_veth(session: Session, spec: VethSpec, mtu: t.Optional[int] = None) -> None:
    """Create the pair in one message, the peer born in its netns under its final name."""
    if spec.netns is None:
        session.rtnl().veth_add(spec.name, spec.peer, mtu=mtu)
        return
    fd = os.open(netns_path(spec.netns), os.O_RDONLY | os.O_CLOEXEC)
    try:  # the fd must stay open until the kernel has answered
        session.rtnl().veth_add(spec.name, spec.peer_name, peer_netns_fd=fd, mtu=mtu)
    finally:
        os.close(fd)


def move_peer(session: Session, spec: VethSpec, netns: str) -> None:
    """Repair an interrupted creation: move the peer (on our side) into ``netns``, renamed."""
    peer = session.require(spec.peer)
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        session.rtnl().link_move(peer.index, fd, spec.peer_name, spec.peer)
    finally:
        os.close(fd)


def rename(session: Session, old: str, new: str, netns: t.Optional[str] = None) -> None:
    link = session.require(old, netns)
    session.rtnl(netns).link_set(link.index, old, ifname=new)


def delete_link(session: Session, name: str, netns: t.Optional[str] = None) -> None:
    """Delete a link (for a veth: both ends).  Already gone is fine."""
    link = session.link(name, netns)
    if link is not None:
        session.rtnl(netns).link_del(link.index, name)


# --- generic link settings ----------------------------------------------------------

def set_mtu(session: Session, name: str, mtu: int, netns: t.Optional[str] = None) -> None:
    session.rtnl(netns).link_set(session.require(name, netns).index, name, mtu=mtu)


def set_up(session: Session, name: str, netns: t.Optional[str] = None) -> None:
    session.rtnl(netns).link_set(session.require(name, netns).index, name, state="up")


def set_master(session: Session, name: str, bridge: t.Optional[str]) -> None:
    """Attach ``name`` to ``bridge``, or detach it from any bridge when None."""
    master = session.require(bridge).index if bridge else 0
    session.rtnl().link_set(session.require(name).index, name, master=master)


def add_address(session: Session, name: str, cidr: str, netns: t.Optional[str] = None) -> None:
    iface = ipaddress.ip_interface(cidr)
    session.rtnl(netns).address_add(session.require(name, netns).index, str(iface.ip),
                                    iface.network.prefixlen, name)


def remove_address(session: Session, name: str, cidr: str, netns: t.Optional[str] = None) -> None:
    """Remove an address; already gone (a secondary deleted with its primary) is fine."""
    iface = ipaddress.ip_interface(cidr)
    try:
        session.rtnl(netns).address_del(session.require(name, netns).index, str(iface.ip),
                                        iface.network.prefixlen, name)
    except OSError as exc:
        if exc.errno != errno.EADDRNOTAVAIL:
            raise


def restore_address(session: Session, name: str, cidr: str, netns: t.Optional[str] = None) -> None:
    """Add an address again if it went with the primary of its subnet."""
    if cidr not in session.addresses(session.require(name, netns), netns):
        add_address(session, name, cidr, netns)


def set_default_route(session: Session, name: str, gateway: str, netns: t.Optional[str] = None) -> None:
    oif = session.require(name, netns).index
    session.rtnl(netns).default_route_replace(family_of(gateway), gateway, oif)


def delete_default_route(session: Session, route: DefaultRoute, netns: t.Optional[str] = None) -> None:
    """Delete a default route; already gone (the kernel drops routes whose gateway left with
    a removed address) is fine."""
    try:
        session.rtnl(netns).default_route_del(route.family, route.gateway, route.oif or 0)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def master_name(session: Session, link: netlink.Link) -> t.Optional[str]:
    if not link.master:
        return None
    master = session.rtnl().link_by_index(link.master)
    return master.name if master else "ifindex %d" % link.master


# --- bridges -----------------------------------------------------------------------

def find_bridge(session: Session, name: str) -> t.Optional[netlink.Link]:
    """The bridge called ``name``, or None; LinkConflict if the name is taken by another kind."""
    link = session.link(name)
    if link is not None and link.kind != BRIDGE:
        raise LinkConflict("interface %s exists and is %s, not a bridge; refusing to take it over"
                           % (name, describe_kind(link)), found_kind=link.kind)
    return link


def bridge_ports(session: Session, bridge: netlink.Link) -> t.List[str]:
    return sorted(port.name for port in session.rtnl().ports(bridge.index))


def create_bridge(session: Session, name: str) -> None:
    session.rtnl().link_add(name, BRIDGE)


def pin_bridge_mtu(session: Session, name: str, mtu: int) -> None:
    """Set a bridge's MTU so that the kernel keeps it.

    Until its MTU is set explicitly, the kernel adjusts a bridge's MTU to the
    smallest of its ports whenever a port joins, leaves or changes.  Only an
    MTU change through the bridge's own ndo_change_mtu marks it as set by the
    user, and the kernel skips that call when the value does not change (a new
    bridge already has 1500), so an equal value is first nudged by one.
    """
    link = session.require(name)
    rtnl = session.rtnl()
    if link.mtu == mtu:
        rtnl.link_set(link.index, name, mtu=mtu + 1 if mtu < MTU_MAX else mtu - 1)
    rtnl.link_set(link.index, name, mtu=mtu)
