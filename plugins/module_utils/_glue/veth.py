# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the veth module and _kernel.links."""

from __future__ import annotations

import functools
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.addresses import address_steps
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step, ValidationError)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import links
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import netns
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    name=dict(type="str", required=True),
    peer=dict(type="str"),
    netns=dict(type="str"),
    peer_name=dict(type="str"),
    addresses=dict(type="list", elements="str"),
    peer_addresses=dict(type="list", elements="str"),
    mtu=dict(type="int"),
    bridge=dict(type="str"),
    gateway=dict(type="list", elements="str"),
    state=dict(type="str", default="present", choices=["present", "absent"]),
)

MODULE_KWARGS: t.Dict[str, t.Any] = dict(
    required_if=[("state", "present", ["peer"])],  # state=absent finds the pair from its host end's name alone
    supports_check_mode=True,
)

_UNMANAGED = object()  # an option left out: keep what the kernel has


def _managed(value: t.Any) -> t.Any:
    """Options left out (None) are not managed."""
    return _UNMANAGED if value is None else value


def netns_unavailable(name: str, entry: t.Any, check_mode: bool, warnings: t.List[str]) -> None:
    """Fail (or, in check mode, warn) because the named netns a link needs is not there."""
    if entry.status == netns.STALE:
        raise KernelboxError("netns %s is a stale entry (%s %s); repair it first with kernelbox.containers.netns"
                             % (name, entry.path, entry.stale_reason))
    if not check_mode:
        raise KernelboxError("netns %s does not exist; create it first with kernelbox.containers.netns" % name)
    warnings.append("netns %s does not exist yet; check mode assumes an earlier task creates it" % name)


def gateways(values: t.Optional[t.List[t.Any]], peer_addresses: t.Optional[t.List[str]]) -> t.Optional[t.List[str]]:
    """Normalised default-route gateways: at most one per address family, IPv4 first."""
    if values is None:
        return None
    result: t.Dict[int, str] = {}
    for value in values:
        address = validate.ip_address(value, "gateway")
        family = links.family_of(address)
        if family in result and result[family] != address:
            raise ValidationError("gateway: %s and %s are both IPv%d; give at most one IPv4 and one IPv6 gateway"
                                  % (result[family], address, 6 if ":" in address else 4))
        if peer_addresses is not None and not links.gateway_in_networks(address, peer_addresses):
            raise ValidationError("gateway: %s is not in the network of any of peer_addresses (%s), so the kernel "
                                  "could not reach it" % (address, ", ".join(peer_addresses) or "none"))
        result[family] = address
    return [result[family] for family in sorted(result)]


class VethResource(Resource):
    """A veth pair: the host end here, the peer here or in a named netns."""

    def validate(self) -> None:
        params = self.params
        name = validate.interface_name(params["name"], "name")
        self.present = params["state"] == "present"
        self.lone_host: t.Optional[t.Any] = None  # state=absent by name: the host end found
        ns = validate.netns_name(params["netns"], "netns") if params["netns"] is not None else None
        peer_name = validate.interface_name(params["peer_name"], "peer_name") if params["peer_name"] is not None else ""
        if params["peer"] is None:  # state=absent by name: the host end alone says which pair it is
            if self.present:
                raise ValidationError("peer: is required with state=present")
            self.spec = links.VethSpec(name, "", ns, peer_name)
            self.by_name = True
            return
        self.by_name = False
        peer = validate.interface_name(params["peer"], "peer")
        if ns is None:
            if peer_name:
                raise ValidationError("peer_name: only applies with netns; without it the peer stays on this host "
                                      "under the name given in peer")
            if name == peer:
                raise ValidationError("peer: %r is also the name of the host end; on one host both ends need "
                                      "their own names" % peer)
            if params["gateway"] is not None:
                raise ValidationError("gateway: only applies with netns (it sets the default route inside the "
                                      "peer's namespace); this module never changes this host's default route")
        self.spec = links.VethSpec(name, peer, ns, peer_name)
        self.addresses = self._cidrs("addresses")
        self.peer_addresses = self._cidrs("peer_addresses")
        self.mtu = (validate.int_in_range(params["mtu"], links.MTU_MIN, links.MTU_MAX, "mtu")
                    if params["mtu"] is not None else None)
        bridge = params["bridge"]
        self.bridge: t.Any = _UNMANAGED
        if bridge == "":
            self.bridge = None  # detach
        elif bridge is not None:
            self.bridge = validate.interface_name(bridge, "bridge")
            if self.bridge in (name, peer):
                raise ValidationError("bridge: %r is one end of this pair" % bridge)
        self.gateway = gateways(params["gateway"], self.peer_addresses)

    def _cidrs(self, option: str) -> t.Optional[t.List[str]]:
        values = self.params[option]
        return None if values is None else validate.cidr_list(values, option)

    # --- read ----------------------------------------------------------------
    def read(self) -> t.Optional[t.Dict[str, t.Any]]:
        spec = self.spec
        self.session = getattr(self, "session", None) or links.Session()
        if self.by_name:
            return self._read_by_name()
        self.netns_exists = True
        if spec.netns:
            entry = netns.lookup(spec.netns)
            self.netns_exists = entry.status == netns.PRESENT
            if self.present and not self.netns_exists:
                netns_unavailable(spec.netns, entry, self.check_mode, self.warnings)
        pair = links.find_veth(self.session, spec, self.netns_exists)
        if pair is not None and pair.host is None:
            if self.present and pair.peer.name == spec.peer_name:
                raise links.orphan_conflict(spec, pair)  # creating the pair would collide with it
            if self.present or pair.position == links.FOREIGN:
                pair = None  # not ours, and in the way of nothing: leave it alone
        self.pair = pair
        if self.present and self.bridge not in (_UNMANAGED, None):
            self._check_bridge()
        return None if pair is None else self._state(pair)

    def _read_by_name(self) -> t.Optional[t.Dict[str, t.Any]]:
        """state=absent with the host end's name only: that veth, whatever its peer; or, with netns and
        peer_name, that peer left alone inside the namespace (its host end gone)."""
        spec, session = self.spec, self.session
        self.pair, self.lone_host = None, None
        host = session.link(spec.name)
        if host is None:
            if spec.netns and spec.peer_name and netns.lookup(spec.netns).status == netns.PRESENT:
                alone = links.find_veth(session, links.VethSpec(spec.name, spec.peer_name, spec.netns,
                                                                spec.peer_name), True)
                if alone is not None and alone.position == links.ORPHAN:
                    self.pair = alone
                    return {"name": None, "peer": alone.peer.name, "netns": spec.netns}
            return None
        if host.kind != links.VETH:
            raise links.LinkConflict("interface %s exists and is %s, not a veth; refusing to delete it"
                                     % (spec.name, links.describe_kind(host)), found_kind=host.kind)
        peer = None
        if host.peer_netnsid is None and host.peer_index:
            peer = session.rtnl().link_by_index(host.peer_index)
        self.pair = links.VethPair(host, peer, None, links.IN_PLACE) if peer is not None else None
        self.lone_host = host
        return {"name": host.name, "peer": peer.name if peer is not None else None,
                "netns": None if host.peer_netnsid is None else "nsid %d" % host.peer_netnsid}

    def _check_bridge(self) -> None:
        if links.find_bridge(self.session, self.bridge) is None:
            if not self.check_mode:
                raise KernelboxError("bridge %s does not exist; create it first with kernelbox.containers.bridge"
                                     % self.bridge)
            self.warnings.append("bridge %s does not exist yet; check mode assumes an earlier task creates it"
                                 % self.bridge)

    def _state(self, pair: links.VethPair) -> t.Dict[str, t.Any]:
        session, host, peer = self.session, pair.host, pair.peer
        state: t.Dict[str, t.Any] = {"name": host.name if host else None, "peer": peer.name,
                                     "netns": pair.peer_netns}
        if host is not None:
            state.update(mtu=host.mtu, up=host.up, bridge=links.master_name(session, host),
                         addresses=links.managed_addresses(session.addresses(host), self.addresses))
        state.update(peer_mtu=peer.mtu, peer_up=peer.up, peer_addresses=links.managed_addresses(
            session.addresses(peer, pair.peer_netns), self.peer_addresses))
        self.routes: t.List[links.DefaultRoute] = []
        if pair.peer_netns and host is not None:
            self.routes = links.default_routes(session, pair.peer_netns)
            state["gateway"] = [r.gateway or "" for r in self.routes if r.oif == peer.index]
        return state

    # --- desired ---------------------------------------------------------------
    def desired(self, current: t.Optional[t.Dict[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
        if not self.present:
            return None
        spec = self.spec
        have = current or {}
        # Moving the peer into its netns flushes its addresses and routes: nothing there to keep.
        peer_known = bool(have) and self.pair is not None and self.pair.position != links.ON_HOST
        wanted: t.Dict[str, t.Any] = {"name": spec.name, "peer": spec.peer_name, "netns": spec.netns}

        def pick(key: str, value: t.Any, known: bool) -> None:
            if value is not _UNMANAGED:
                wanted[key] = value
            elif known and key in have:
                wanted[key] = have[key]

        pick("mtu", _managed(self.mtu), bool(have))
        wanted["up"] = True
        pick("bridge", self.bridge, bool(have))
        pick("addresses", _managed(self.addresses), bool(have))
        pick("peer_mtu", _managed(self.mtu), peer_known)
        wanted["peer_up"] = True
        pick("peer_addresses", _managed(self.peer_addresses), peer_known)
        if spec.netns:
            pick("gateway", _managed(self.gateway), peer_known)
        return wanted

    # --- plan ------------------------------------------------------------------
    def plan(self, current: t.Optional[t.Dict[str, t.Any]],
             desired: t.Optional[t.Dict[str, t.Any]]) -> t.List[Step]:
        spec, session = self.spec, self.session
        if desired is None:
            return [] if current is None else self._removal()
        fresh = current is None
        position = None if self.pair is None else self.pair.position
        peer_fresh = fresh or position == links.ON_HOST
        ns = spec.netns
        peer_at = " in netns %s" % ns if ns else ""
        steps: t.List[Step] = []
        if fresh:
            steps.append(Step("create veth pair %s <-> %s%s" % (spec.name, spec.peer_name, peer_at),
                              functools.partial(links.create_veth, session, spec, self.mtu), "absent"))
        elif position == links.ON_HOST:
            steps.append(Step("move peer %s into netns %s as %s" % (spec.peer, ns, spec.peer_name),
                              functools.partial(links.move_peer, session, spec, ns),
                              "the peer is still on this host: an earlier run was interrupted"))
        elif position == links.UNRENAMED:
            steps.append(Step("rename peer %s to %s in netns %s" % (spec.peer, spec.peer_name, ns),
                              functools.partial(links.rename, session, spec.peer, spec.peer_name, ns),
                              "an earlier run was interrupted after moving it"))
        current = current or {}
        if self.mtu is not None and not fresh:
            for key, ifname, where in (("mtu", spec.name, None), ("peer_mtu", spec.peer_name, ns)):
                if current.get(key) != self.mtu:
                    label = "%s in netns %s" % (ifname, where) if where else ifname
                    steps.append(Step("set mtu %d on %s" % (self.mtu, label),
                                      functools.partial(links.set_mtu, session, ifname, self.mtu, where),
                                      "was %s" % current.get(key)))
        if self.bridge is not _UNMANAGED and current.get("bridge") != self.bridge:
            if self.bridge is None:
                steps.append(Step("detach %s from bridge %s" % (spec.name, current.get("bridge")),
                                  functools.partial(links.set_master, session, spec.name, None), "bridge=''"))
            else:
                steps.append(Step("attach %s to bridge %s" % (spec.name, self.bridge),
                                  functools.partial(links.set_master, session, spec.name, self.bridge),
                                  "was on bridge %s" % current["bridge"] if current.get("bridge") else "not attached"))
        if not current.get("up"):
            steps.append(Step("bring up %s" % spec.name, functools.partial(links.set_up, session, spec.name),
                              "new pair" if fresh else "down"))
        if peer_fresh or not current.get("peer_up"):
            steps.append(Step("bring up %s%s" % (spec.peer_name, peer_at),
                              functools.partial(links.set_up, session, spec.peer_name, ns),
                              "new pair" if fresh else "moved" if peer_fresh else "down"))
        if self.addresses is not None:
            steps += self._address_steps(spec.name, None, current.get("addresses", []), self.addresses, fresh)
        if self.peer_addresses is not None:
            steps += self._address_steps(spec.peer_name, ns, [] if peer_fresh else current.get("peer_addresses", []),
                                         self.peer_addresses, peer_fresh)
        if self.gateway is not None:
            steps += self._route_steps(peer_fresh, current.get("peer_addresses", []))
        return steps

    def _address_steps(self, ifname: str, where: t.Optional[str], current: t.List[str], wanted: t.List[str],
                       fresh: bool) -> t.List[Step]:
        label = "%s in netns %s" % (ifname, where) if where else ifname
        return address_steps(self.session, ifname, label, current, wanted, "new pair" if fresh else "missing", where)

    def _route_steps(self, peer_fresh: bool, peer_addresses: t.List[str]) -> t.List[Step]:
        spec, ns = self.spec, self.spec.netns
        routes = [] if peer_fresh else self.routes
        oif = -1 if peer_fresh or self.pair is None else self.pair.peer.index
        _to_set, to_delete = links.route_changes(routes, oif, self.gateway or [])
        # Removing an address of the peer can take its default route of that family with it (the kernel flushes
        # a device's routes when its last address of the family goes), so such a route is set again after.
        removed = [] if peer_fresh or self.peer_addresses is None else links.address_changes(
            peer_addresses, self.peer_addresses)[1]
        lost = {links.family_of(cidr.split("/")[0]): cidr for cidr in removed}
        kept = [route for route in routes if not (route.oif == oif and route.family in lost)]
        to_set = links.route_changes(kept, oif, self.gateway or [])[0]
        names = {oif: spec.peer_name}
        steps = [Step("delete default route %s in netns %s" % (route.describe(names), ns),
                      functools.partial(links.delete_default_route, self.session, route, ns), "not in gateway")
                 for route in to_delete]
        for gateway in to_set:
            others = [r for r in routes if r.family == links.family_of(gateway) and r.oif != oif]
            why = ("replaces default route %s" % others[0].describe(names) if others
                   else "the kernel may drop it with address %s" % lost[links.family_of(gateway)]
                   if any(r.gateway == gateway and r.oif == oif for r in routes)
                   else "no default route via %s" % spec.peer_name)
            steps.append(Step("set default route via %s dev %s in netns %s" % (gateway, spec.peer_name, ns),
                              functools.partial(links.set_default_route, self.session, spec.peer_name, gateway, ns),
                              why))
        return steps

    def _removal(self) -> t.List[Step]:
        spec, pair = self.spec, self.pair
        host = self.lone_host
        if host is not None and pair is None:  # by name, its peer in another namespace
            what = "delete veth pair %s <-> its peer in network namespace nsid %s" % (spec.name, host.peer_netnsid)
            return [Step(what,
                         functools.partial(links.delete_link, self.session, spec.name), "state=absent")]
        if pair is None:
            return []
        if pair.position == links.ORPHAN:
            where = "netns %s" % pair.peer_netns if pair.peer_netns else "this host"
            return [Step("delete veth %s in %s" % (pair.peer.name, where),
                         functools.partial(links.delete_link, self.session, pair.peer.name, pair.peer_netns),
                         "state=absent; its host end %s is gone" % spec.name)]
        return [Step("delete veth pair %s <-> %s" % (spec.name, pair.peer.name),
                     functools.partial(links.delete_link, self.session, spec.name), "state=absent")]

    # --- report ----------------------------------------------------------------
    def result(self, state: t.Optional[t.Dict[str, t.Any]]) -> t.Dict[str, t.Any]:
        pair = self.pair if state is not None else None
        host = pair.host if pair else self.lone_host if state is not None else None
        result = {"name": self.spec.name, "peer": (state or {}).get("peer") if self.by_name else self.spec.peer_name,
                  "netns": self.spec.netns, "exists": host is not None,
                  "ifindex": host.index if host else None,
                  "peer_ifindex": pair.peer.index if pair else None}
        for key in ("mtu", "peer_mtu", "bridge", "addresses", "peer_addresses", "gateway"):
            result[key] = (state or {}).get(key)
        return result

    def close(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            session.close()
