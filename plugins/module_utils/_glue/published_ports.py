# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a container's published ports (``docker run -p``), for any module.

The ``nat`` module and the ``container`` module both publish ports through this
API, inside their own flow (read -> desired -> plan -> act -> report)::

    from ansible_collections.kernelbox.containers.plugins.module_utils._glue import published_ports

    # validate(): pure, no kernel; ValidationError naming the entry
    specs = published_ports.parse(["8080:80", "127.0.0.1:5353:53/udp", "9000-9005:9000-9005", "[::]:8443:443"])

    publisher = published_ports.PortPublisher("web", check_mode=module.check_mode)   # opens nothing yet
    try:
        before = publisher.current()                           # read(): ["tcp 0.0.0.0:8080 -> 10.88.0.10:80", ...]
        after = publisher.desired(specs, ["10.88.0.10/24"])    # desired(): the same shape; ValidationError when a
                                                               # port is held by another container (named), a host
                                                               # address is not on the host, or the container has
                                                               # no address of the family a port asks for
        steps = publisher.plan()                               # plan(): flow Steps, [] when nothing changes
        ...                                                    # the flow applies them (never in check mode)
        result = publisher.published()                         # report(): list of dicts, read again after a change
        warnings = publisher.warnings
    finally:
        publisher.close()                                      # always: releases the lock

* Unpublish everything: ``desired([], [])`` then ``plan()``.
* The steps are one nftables transaction (all the container's ports change at
  once, or none), then the deletion of conntrack flows the change left stale.
  Steps run in the order a resource returns them: put these after the steps
  that start the container.
* Who holds which port is the kernel's own record (each map element's comment
  is the container's name): ``holders()`` lists them for every container, and
  a clash names the holder.  Names are exact: ``web`` never matches ``web2``.
* The owner is locked (``/run/kernelbox/nat/lock``) from ``current()`` until
  ``close()``, except in check mode, which writes nothing at all.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import Step
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import nat, ports
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import conntrack, netlink
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError, container_name

__all__ = ["PortPublisher", "holders", "parse", "table_steps"]

PROTOCOL_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


def parse(values: t.Optional[t.Iterable[t.Any]]) -> t.List[ports.PortSpec]:
    """The port entries users write, parsed and checked (pure); see _kernel/ports.py for the forms."""
    return ports.parse_ports(values)


def local_addresses() -> t.Set[str]:
    """Every address of this host's network namespace, normalised."""
    with netlink.rtnl() as handle:
        return {str(ipaddress.ip_interface(address.cidr).ip) for address in handle.all_addresses()}


def table_steps(session: nat.NatSession, why: str) -> t.List[Step]:
    """The steps that create the table, or repair its fixed rules, before anything is added to it.

    Shared by every writer of the table; queued into the session's transaction.
    """
    state, transaction = session.state(), session.transaction
    if not state.exists:
        if transaction.skeleton:
            return []

        def create() -> None:
            transaction.skeleton = True
            transaction.queue(nat.add_rule(rule) for rule in nat.infrastructure_rules())
        return [Step("create table %s %s with its chains, maps and fixed rules" % (nat.FAMILY, nat.TABLE), create,
                     why, commit=transaction.commit)]
    stale, missing = nat.infrastructure_changes(state)
    if not stale and not missing:
        return []

    def repair() -> None:
        transaction.queue(nat.delete_rule(rule) for rule in stale)
        transaction.queue(nat.add_rule(rule, insert=True) for rule in reversed(missing))
    chains = sorted({rule.chain for rule in missing} | {rule.chain for rule in stale})
    return [Step("rewrite the fixed rules of chains %s" % ", ".join(chains), repair,
                 "they differ from this version's", commit=transaction.commit)]


def holders(session: nat.NatSession) -> t.Dict[str, t.List[t.Dict[str, t.Any]]]:
    """container name -> its published ports (dicts, ranges collapsed), from the table."""
    return nat.published_by_owner(session.state())


class PortPublisher:
    """The published ports of one container, as one step of a module's flow."""

    def __init__(self, owner: str, check_mode: bool = False, session: t.Optional[nat.NatSession] = None) -> None:
        self.owner = container_name(owner, "name")
        self.check_mode = check_mode
        self.session = session if session is not None else nat.NatSession(lock=not check_mode)
        self._own_session = session is None
        self._wanted: t.Optional[t.List[ports.Mapping]] = None
        self._local: t.Optional[t.Set[str]] = None
        self.warnings: t.List[str] = []
        self.blocking: t.List[nat.BlockingChain] = []  # other tables' forward chains that drop (after desired())

    # --- read ----------------------------------------------------------------------------------------------
    def _current(self) -> t.List[ports.Mapping]:
        return self.session.state().mappings_of(self.owner)

    def current(self) -> t.List[str]:
        """This container's published ports now, as lines ('tcp 0.0.0.0:8080 -> 10.88.0.10:80'), sorted."""
        return [published.text() for published in ports.collapse(self._current())]

    # --- desired -------------------------------------------------------------------------------------------
    def desired(self, specs: t.Sequence[ports.PortSpec], addresses: t.Iterable[t.Any]) -> t.List[str]:
        """The lines after the change; raises ValidationError before anything is changed."""
        families = ports.container_addresses(addresses, "addresses")
        if specs and not families:
            raise ValidationError("ports: %s asks to publish %s, but no container address was given to send them to"
                                  % (self.owner, ", ".join(spec.text() for spec in specs)))
        wanted = ports.expand(specs, families, self.owner)
        self._check_host_addresses(specs)
        clashes = ports.conflicts(wanted, self.session.state().mappings, self.owner)
        if clashes:
            mine, theirs = clashes[0]
            raise ValidationError("ports: host port %s:%d/%s is already published by container %s (%s)%s"
                                  % (ports.host_label(mine.family, mine.host_ip), mine.host_port, mine.protocol,
                                     theirs.owner, ports.describe(theirs),
                                     "" if len(clashes) == 1 else "; %d ports clash in all" % len(clashes)))
        self._wanted = wanted
        if wanted:
            self._warn_about_path(families)
        return [published.text() for published in ports.collapse(wanted)]

    def _check_host_addresses(self, specs: t.Sequence[ports.PortSpec]) -> None:
        asked = [spec for spec in specs if spec.host_ip is not None and not ipaddress.ip_address(spec.host_ip).is_unspecified]
        if not asked:
            return
        if self._local is None:
            self._local = local_addresses()
        for spec in asked:
            if spec.host_ip not in self._local and not ipaddress.ip_address(spec.host_ip).is_loopback:
                raise ValidationError("ports: %r: %s is not an address of this host (it has %s)"
                                      % (spec.text(), spec.host_ip, ", ".join(sorted(self._local)) or "none"))

    def _warn_about_path(self, families: t.Mapping[int, str]) -> None:
        bridges = []
        for address in families.values():
            found = [bridge for bridge, subnets in self.session.state().network_subnets().items()
                     if any(ipaddress.ip_address(address) in ipaddress.ip_network(subnet) for subnet in subnets)]
            if not found:
                self.warnings.append(
                    "no kernelbox network covers %s: reaching %s's published ports from its own bridge (hairpin) and "
                    "from 127.0.0.1 needs the network's rules (kernelbox.containers.nat with bridge:)" % (address, self.owner))
            bridges += found
        self.blocking = self.session.forward_drop_chains()
        for chain in self.blocking:
            self.warnings.append("%s drops forwarded packets by default, so %s's published ports cannot be reached "
                                 "from other hosts; let its bridge's traffic through there: %s"
                                 % (chain.text(), self.owner, chain.fix(bridges[0] if bridges else "BRIDGE")))

    # --- plan ----------------------------------------------------------------------------------------------
    def plan(self, why_add: str = "new", why_remove: str = "no longer asked for") -> t.List[Step]:
        """The steps from ``current()`` to ``desired()``: one nftables transaction, then conntrack clean-up."""
        if self._wanted is None:
            raise ValueError("PortPublisher.plan() needs desired() first")
        state, transaction = self.session.state(), self.session.transaction
        current, wanted = set(self._current()), set(self._wanted)
        removed = sorted(current - wanted, key=ports.Mapping.order)
        added = sorted(wanted - current, key=ports.Mapping.order)
        if not removed and not added:
            return []
        steps = table_steps(self.session, "to publish %s's ports" % self.owner) if added else []
        for published in ports.collapse(removed):
            steps.append(Step("unpublish %s of %s" % (published.text(), self.owner),
                              functools.partial(transaction.queue, nat.delete_mappings(_members(removed, published))),
                              why_remove, commit=transaction.commit))
        for published in ports.collapse(added):
            steps.append(Step("publish %s for %s" % (published.text(), self.owner),
                              functools.partial(transaction.queue, nat.add_mappings(_members(added, published))),
                              why_add, commit=transaction.commit))
        if not added and state.empty_without(containers=[self.owner]):
            steps.append(Step("delete table %s %s" % (nat.FAMILY, nat.TABLE),
                              functools.partial(transaction.queue, [nat.delete_table()]),
                              "nothing of kernelbox's is left in it", commit=transaction.commit))
        return steps + self._conntrack_steps(removed, added)

    def _conntrack_steps(self, removed: t.List[ports.Mapping], added: t.List[ports.Mapping]) -> t.List[Step]:
        steps = []
        if removed:
            steps.append(Step("forget the conntrack flows of the %d unpublished port%s of %s"
                              % (len(removed), "" if len(removed) == 1 else "s", self.owner),
                              functools.partial(_forget, removed, _translated_to),
                              "established flows would keep reaching the old address"))
        fresh_udp = [mapping for mapping in added if mapping.protocol == "udp"]
        if fresh_udp:
            steps.append(Step("forget untranslated udp flows to the %d newly published udp port%s of %s"
                              % (len(fresh_udp), "" if len(fresh_udp) == 1 else "s", self.owner),
                              functools.partial(_forget, fresh_udp, _untranslated),
                              "a flow that began before the port was published would keep bypassing it"))
        return steps

    # --- report --------------------------------------------------------------------------------------------
    def published(self) -> t.List[t.Dict[str, t.Any]]:
        """This container's published ports as dicts (the table is read again after a commit)."""
        return [published.as_dict() for published in ports.collapse(self.session.state().mappings_of(self.owner))]

    def close(self) -> None:
        if self._own_session:
            self.session.close()


def _members(mappings: t.Iterable[ports.Mapping], published: ports.Published) -> t.List[ports.Mapping]:
    """The mappings a collapsed range stands for."""
    return [m for m in mappings if (m.owner, m.family, m.host_ip, m.protocol, m.address) == (
        published.owner, published.family, published.host_ip, published.protocol, published.address)
        and published.host_port <= m.host_port <= published.host_port_end]


def _translated_to(mapping: ports.Mapping, flow: conntrack.Flow) -> bool:
    """A flow this mapping translated: replies come from the container's address and port."""
    return (flow.translated and flow.reply_source == mapping.address and flow.reply_sport == mapping.port
            and (mapping.host_ip is None or flow.destination == mapping.host_ip))


def _untranslated(mapping: ports.Mapping, flow: conntrack.Flow) -> bool:
    """A flow to the host port that NAT never touched (it began before the port was published)."""
    return not flow.translated and (mapping.host_ip is None or flow.destination == mapping.host_ip)


def _forget(mappings: t.List[ports.Mapping], matches: t.Callable[[ports.Mapping, conntrack.Flow], bool]) -> int:
    """Delete the flows ``matches`` picks for any of ``mappings``: one conntrack dump per protocol and family."""
    deleted = 0
    groups: t.Dict[t.Tuple[str, int], t.Dict[int, t.List[ports.Mapping]]] = {}
    for mapping in mappings:
        groups.setdefault((mapping.protocol, mapping.family), {}).setdefault(mapping.host_port, []).append(mapping)
    for (protocol, family), by_port in sorted(groups.items()):
        def picks(flow: conntrack.Flow, by_port: t.Dict[int, t.List[ports.Mapping]] = by_port) -> bool:
            return any(matches(mapping, flow) for mapping in by_port.get(flow.dport, ()))
        only = next(iter(by_port)) if len(by_port) == 1 else None
        deleted += conntrack.delete_flows(PROTOCOL_NUMBERS[protocol], family, picks, dport=only)
    return deleted
