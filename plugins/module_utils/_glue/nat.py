# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the nat module and _kernel.nat / _kernel.forwarding.

Two kinds of task share the one table: a network (``bridge``: masquerade,
forwarding, isolation, the 127.0.0.1 path, the forwarding sysctls) and a
container's published ports (``container``, through published_ports, the API
the container module calls too).
"""

from __future__ import annotations

import functools
import ipaddress
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import Resource, Step
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.published_ports import (
    PortPublisher, parse, table_steps)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import forwarding, links, nat, ports
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    bridge=dict(type="str"),
    subnets=dict(type="list", elements="str"),
    masquerade=dict(type="bool", default=True),
    forwarding=dict(type="bool", default=True),
    isolate=dict(type="bool", default=True),
    localhost=dict(type="bool", default=True),
    container=dict(type="str"),
    addresses=dict(type="list", elements="str", default=[]),
    ports=dict(type="list", elements="raw", default=[]),
    state=dict(type="str", default="present", choices=["present", "absent"]),
)
MUTUALLY_EXCLUSIVE = [["bridge", "container"]]
REQUIRED_ONE_OF = [["bridge", "container"]]
NETWORK_ONLY = ("subnets",)
PORTS_ONLY = ("addresses", "ports")


def asks_for_nothing(params: t.Mapping[str, t.Any]) -> bool:
    """Whether the task only removes (or keeps empty): without libnftables no kernelbox table can exist, so there is
    nothing to remove and the task succeeds unchanged instead of failing for a library it would not use."""
    if params.get("state") == "absent":
        return True
    return params.get("container") is not None and not params.get("ports")


def subnet_list(values: t.Iterable[t.Any], option: str = "subnets") -> t.List[str]:
    """Networks, normalised ('10.88.0.1/24' -> '10.88.0.0/24'), de-duplicated, IPv4 first."""
    found = set()
    for value in values:
        text = str(value).strip()
        if "/" not in text:
            raise ValidationError("%s: %r needs a prefix length, such as 10.88.0.0/24" % (option, value))
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise ValidationError("%s: %r is not an IPv4 or IPv6 network: %s" % (option, value, exc))
        if network.prefixlen == 0 or network.is_loopback or network.is_link_local or network.is_multicast:
            raise ValidationError("%s: %s cannot be a container subnet" % (option, network))
        found.add(network)
    return [str(network) for network in sorted(found, key=lambda n: (n.version, int(n.network_address), n.prefixlen))]


class NatResource(Resource):
    """A container network's rules and sysctls, or a container's published ports, in table inet kernelbox."""

    def validate(self) -> None:
        params = self.params
        self.present = params["state"] == "present"
        if params["bridge"] is not None:
            self.bridge = validate.interface_name(params["bridge"], "bridge")
            self.container = None
            extra = [name for name in PORTS_ONLY if params[name]]
            if extra:
                raise ValidationError("%s only go with container:, not with bridge:" % " and ".join(extra))
            self.subnets = subnet_list(params["subnets"]) if params["subnets"] is not None else None
        else:
            self.container = validate.container_name(params["container"], "container")
            self.bridge = None
            if params["subnets"] is not None:
                raise ValidationError("subnets only go with bridge:, not with container:")
            self.specs = parse(params["ports"]) if self.present else []
            self.addresses = list(ports.container_addresses(params["addresses"]).values()) if self.present else []
            if self.specs and not self.addresses:
                raise ValidationError("ports: host ports %s are given without the container's address (addresses:) "
                                      "to forward them to" % ", ".join(spec.text() for spec in self.specs))
        self.session = nat.NatSession(lock=not self.check_mode, only_removes=not self.present)
        self.publisher = PortPublisher(self.container, self.check_mode, self.session) if self.container else None
        self.blocking: t.List[nat.BlockingChain] = []

    # --- read / desired ------------------------------------------------------------------------------------
    def read(self) -> t.Dict[str, t.Any]:
        if self.publisher is not None:
            return {"published": self.publisher.current()}
        self.blocking = self.session.forward_drop_chains()
        self.record = forwarding.Record(self.session.state_dir)
        self.current_rules = self.session.state().rules_of(self.bridge)
        keys = set(self.record.keys_of(self.bridge))
        self.link = links.Session()
        try:
            bridge = self.link.link(self.bridge)
            self.bridge_networks = ([] if bridge is None else
                                    subnet_list(a for a in self.link.addresses(bridge) if not links.is_kernel_link_local(a)))
        finally:
            self.link.close()
        self.bridge_exists = bridge is not None
        self.wanted_sysctls = self._wanted_sysctls()
        keys |= set(self.wanted_sysctls)
        self.sysctls_before = {key: forwarding.read(key) for key in sorted(keys)}
        return {"rules": [rule.text() for rule in self.current_rules], "sysctls": dict(self.sysctls_before)}

    def _wanted_sysctls(self) -> t.Dict[str, str]:
        if not self.present:
            return {}
        if not self.bridge_exists:
            raise ValidationError("bridge %s does not exist: create it first (kernelbox.containers.bridge)" % self.bridge)
        subnets = self.subnets if self.subnets is not None else self.bridge_networks
        if not subnets:
            raise ValidationError("bridge %s has no address to take its subnet from: give subnets:" % self.bridge)
        self.spec = nat.NetworkSpec(self.bridge, tuple(subnets), self.params["masquerade"], self.params["isolate"],
                                    self.params["localhost"])
        return forwarding.wanted(self.bridge, subnets, self.params["forwarding"], self.params["localhost"])

    def desired(self, current: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        if self.publisher is not None:
            specs, addresses = (self.specs, self.addresses) if self.present else ([], [])
            return {"published": self.publisher.desired(specs, addresses)}
        self.wanted_rules = nat.network_rules(self.spec) if self.present else []
        sysctls = dict(self.sysctls_before)
        for key in self.record.keys_of(self.bridge):
            if key not in self.wanted_sysctls and sysctls.get(key) is not None:
                entry = self.record.entries[key]
                if not self._others(key) and sysctls[key] == entry.get("set") and entry.get("before") is not None:
                    sysctls[key] = entry.get("before")
        sysctls.update(self.wanted_sysctls)
        return {"rules": [rule.text() for rule in self.wanted_rules], "sysctls": sysctls}

    # --- plan ----------------------------------------------------------------------------------------------
    def plan(self, current: t.Dict[str, t.Any], desired: t.Dict[str, t.Any]) -> t.List[Step]:
        self._warn()
        if self.publisher is not None:
            return self.publisher.plan(why_remove="state=absent" if not self.present else "no longer asked for")
        rule_steps = self._rule_steps()
        sysctl_steps = self._sysctl_steps()
        # Forwarding goes on only once the isolation rules are in, and off before they go.
        return rule_steps + sysctl_steps if self.present else sysctl_steps + rule_steps

    def _rule_steps(self) -> t.List[Step]:
        state, transaction = self.session.state(), self.session.transaction
        wanted = {rule.comment: rule for rule in self.wanted_rules}
        seen: t.Set[str] = set()
        stale = []
        for rule in self.current_rules:
            if rule.comment not in wanted or rule.comment in seen:
                stale.append(rule)
            seen.add(rule.comment)
        missing = [rule for rule in self.wanted_rules if rule.comment not in seen]
        steps = table_steps(self.session, "for network %s" % self.bridge) if missing else []
        why_remove = "state=absent" if not self.present else "not asked for any more"
        for rule in stale:
            steps.append(Step("delete rule %s" % rule.text(), functools.partial(transaction.queue, [nat.delete_rule(rule)]),
                              why_remove, commit=transaction.commit))
        for rule in missing:
            steps.append(Step("add rule %s" % rule.text(), functools.partial(transaction.queue, [nat.add_rule(rule)]),
                              "missing", commit=transaction.commit))
        if not self.present and state.exists and state.empty_without(bridges=[self.bridge]):
            steps.append(Step("delete table %s %s" % (nat.FAMILY, nat.TABLE),
                              functools.partial(transaction.queue, [nat.delete_table()]),
                              "nothing of kernelbox's is left in it", commit=transaction.commit))
        return steps

    def _sysctl_steps(self) -> t.List[Step]:
        steps = []
        record, bridge = self.record, self.bridge
        for key, value in sorted(self.wanted_sysctls.items()):
            before = self.sysctls_before.get(key)
            if before != value:
                steps.append(Step("set %s = %s" % (key, value), functools.partial(self._set, key, value, before),
                                  "was %s; network %s needs it" % (before, bridge)))
            elif key in record.entries and bridge not in record.users(key):
                steps.append(Step("record that network %s needs %s = %s" % (bridge, key, value),
                                  functools.partial(record.claim, key, bridge, before, value),
                                  "kernelbox set it for %s" % ", ".join(record.users(key))))
        for key in record.keys_of(bridge):
            if key in self.wanted_sysctls:
                continue
            steps.append(self._release_step(key))
        return steps

    def _others(self, key: str) -> t.List[str]:
        """The other networks that still need ``key``.  One without rules in the table is gone (a run killed
        between its sysctl and its rules, or a table deleted by hand) and needs nothing any more."""
        live = set(self.session.state().owners())
        return [user for user in self.record.users(key) if user != self.bridge and user in live]

    def _release_step(self, key: str) -> Step:
        record, bridge = self.record, self.bridge
        entry = record.entries[key]
        others = self._others(key)
        now = self.sysctls_before.get(key)
        if others:
            return Step("release %s for network %s" % (key, bridge), functools.partial(record.release, key, bridge),
                        "still needed by %s" % ", ".join(others))
        for stale in [user for user in record.users(key) if user != bridge]:
            record.entries[key]["users"].remove(stale)
        if now is None or now != entry.get("set") or entry.get("before") is None:
            return Step("forget the record of %s" % key, functools.partial(record.release, key, bridge),
                        "no network needs it; left at %s (changed since kernelbox set it, or gone)" % now)
        return Step("put %s back to %s" % (key, entry["before"]), functools.partial(self._restore, key, entry["before"]),
                    "kernelbox set it to %s for network %s, which no longer needs it" % (entry.get("set"), bridge))

    def _set(self, key: str, value: str, before: t.Optional[str]) -> None:
        self.record.claim(key, self.bridge, before, value)  # first, so a crash after the write still knows
        forwarding.write(key, value)

    def _restore(self, key: str, value: str) -> None:
        forwarding.write(key, value)
        self.record.release(key, self.bridge)

    def _warn(self) -> None:
        if self.publisher is not None:
            self.warnings.extend(self.publisher.warnings)
            return
        for chain in self.blocking:
            self.warnings.append(
                "%s also sees forwarded packets and drops them by default, so container traffic through this host "
                "is dropped whatever kernelbox accepts (a packet must be accepted by every base chain of its hook); "
                "let the bridge's traffic through there: %s" % (chain.text(), chain.fix(self.bridge)))
        if self.bridge and self.present and forwarding.IPV6_FORWARDING in self.wanted_sysctls and \
                self.sysctls_before.get(forwarding.IPV6_FORWARDING) != "1":
            interfaces = forwarding.ra_interfaces()
            if interfaces:
                self.warnings.append(
                    "turning on IPv6 forwarding makes %s ignore router advertisements (accept_ra=1), and their IPv6 "
                    "default route came from one: set net.ipv6.conf.%s.accept_ra=2 first, or the route expires"
                    % (", ".join(interfaces), interfaces[0]))

    # --- report --------------------------------------------------------------------------------------------
    def refresh(self, current: t.Dict[str, t.Any], acted: bool) -> t.Dict[str, t.Any]:
        if not acted:
            return current
        if self.publisher is not None:
            return {"published": self.publisher.current()}
        state = self.session.state()  # read again: the commit made the old one stale
        return {"rules": [rule.text() for rule in state.rules_of(self.bridge)],
                "sysctls": {key: forwarding.read(key) for key in sorted(current["sysctls"])}}

    def result(self, state: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        table = self.session.state()
        common = {"table": "%s %s" % (nat.FAMILY, nat.TABLE), "table_exists": table.exists,
                  "forward_blocked_by": [chain.text() for chain in (
                      self.publisher.blocking if self.publisher is not None else self.blocking)]}
        if self.publisher is not None:
            common.update(container=self.container, published=self.publisher.published())
            return common
        common.update(bridge=self.bridge, subnets=list(self.spec.subnets) if self.present else [],
                      rules=state["rules"], sysctls=state["sysctls"], sysctls_before=self.sysctls_before)
        return common

    def close(self) -> None:
        session = getattr(self, "session", None)  # absent when validation failed
        if session is not None:
            session.close()
