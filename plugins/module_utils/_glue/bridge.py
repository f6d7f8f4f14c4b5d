# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the bridge module and _kernel.links."""

from __future__ import annotations

import functools
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.addresses import address_steps
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import Resource, Step
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import links
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    name=dict(type="str", required=True),
    addresses=dict(type="list", elements="str"),
    mtu=dict(type="int"),
    state=dict(type="str", default="present", choices=["present", "absent"]),
)


class BridgeResource(Resource):
    """A Linux bridge in the target's own network namespace."""

    def validate(self) -> None:
        params = self.params
        self.name = validate.interface_name(params["name"], "name")
        self.addresses = (validate.cidr_list(params["addresses"], "addresses")
                          if params["addresses"] is not None else None)
        self.mtu = (validate.int_in_range(params["mtu"], links.MTU_MIN, links.MTU_MAX, "mtu")
                    if params["mtu"] is not None else None)
        self.present = params["state"] == "present"
        self.session = links.Session()  # opens nothing until first used

    def read(self) -> t.Optional[t.Dict[str, t.Any]]:
        bridge = links.find_bridge(self.session, self.name)
        self.link = bridge
        self.ports = links.bridge_ports(self.session, bridge) if bridge is not None else []
        if bridge is None:
            return None
        return {
            "name": self.name,
            "mtu": bridge.mtu,
            "up": bridge.up,
            "addresses": links.managed_addresses(self.session.addresses(bridge), self.addresses),
        }

    def desired(self, current: t.Optional[t.Dict[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
        if not self.present:
            return None
        wanted: t.Dict[str, t.Any] = {"name": self.name}
        # Without an explicit mtu the kernel follows the smallest port: not ours to manage.
        if self.mtu is not None:
            wanted["mtu"] = self.mtu
        elif current is not None:
            wanted["mtu"] = current["mtu"]
        wanted["up"] = True
        if self.addresses is not None:
            wanted["addresses"] = self.addresses
        elif current is not None:
            wanted["addresses"] = current["addresses"]
        return wanted

    def plan(self, current: t.Optional[t.Dict[str, t.Any]],
             desired: t.Optional[t.Dict[str, t.Any]]) -> t.List[Step]:
        session, name = self.session, self.name
        if desired is None:
            if current is None:
                return []
            if self.ports:
                self.warnings.append("bridge %s had ports %s; the kernel detaches them, they are not deleted"
                                     % (name, ", ".join(self.ports)))
            return [Step("delete bridge %s" % name, functools.partial(links.delete_link, session, name),
                         "state=absent")]
        fresh = current is None
        current = current or {}
        steps = []
        if fresh:
            steps.append(Step("create bridge %s" % name, functools.partial(links.create_bridge, session, name),
                              "absent"))
        if self.mtu is not None and (fresh or current["mtu"] != self.mtu):
            steps.append(Step("set mtu %d on bridge %s" % (self.mtu, name),
                              functools.partial(links.pin_bridge_mtu, session, name, self.mtu),
                              "new bridge" if fresh else "was %s" % current["mtu"]))
        if not current.get("up"):
            steps.append(Step("bring up bridge %s" % name, functools.partial(links.set_up, session, name),
                              "new bridge" if fresh else "down"))
        if self.addresses is not None:
            steps += address_steps(session, name, "bridge %s" % name, current.get("addresses", []), self.addresses,
                                   "new bridge" if fresh else "missing")
        return steps

    def result(self, state: t.Optional[t.Dict[str, t.Any]]) -> t.Dict[str, t.Any]:
        link = self.link if state is not None else None
        return {
            "name": self.name,
            "exists": link is not None,
            "ifindex": link.index if link is not None else None,
            "mtu": (state or {}).get("mtu"),
            "addresses": (state or {}).get("addresses"),
            "ports": self.ports if link is not None else [],
        }

    def close(self) -> None:
        session = getattr(self, "session", None)  # absent when validation failed
        if session is not None:
            session.close()
