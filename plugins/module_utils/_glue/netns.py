# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: glue between the netns module and _kernel.netns."""

from __future__ import annotations

import functools
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import (
    KernelboxError, Resource, Step)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import netns
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import netlink
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    loopback=dict(type="bool", default=True),
    sysctls=dict(type="dict", default={}),
)


class NetnsResource(Resource):
    """A named network namespace at /run/netns/NAME."""

    def validate(self) -> None:
        self.name = validate.netns_name(self.params["name"])
        self.sysctls = {}
        for key, value in (self.params["sysctls"] or {}).items():
            self.sysctls[validate.sysctl_key(key, required_prefix="net.")] = validate.sysctl_value(value)

    def read(self) -> t.Optional[t.Dict[str, t.Any]]:
        entry = netns.lookup(self.name)
        self.entry = entry
        for key in self.sysctls:
            if not netns.sysctl_exists(key):
                raise KernelboxError("sysctls: %s does not exist on this kernel" % key)
        if entry.status == netns.ABSENT:
            return None
        if entry.status == netns.STALE:
            return {"name": self.name, "path": entry.path, "status": "stale", "problem": entry.stale_reason}
        with netlink.rtnl(entry.path) as nl:
            loopback = nl.link_by_name("lo")
        return {
            "name": self.name,
            "path": entry.path,
            "status": "present",
            "loopback": bool(loopback and loopback.up),
            "sysctls": {key: netns.read_sysctl(entry.path, key) for key in sorted(self.sysctls)},
        }

    def desired(self, current: t.Optional[t.Dict[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
        if self.params["state"] == "absent":
            return None
        loopback = True if self.params["loopback"] else bool(current and current.get("loopback"))
        return {
            "name": self.name,
            "path": netns.netns_path(self.name),
            "status": "present",
            "loopback": loopback,
            "sysctls": dict(sorted(self.sysctls.items())),
        }

    def plan(self, current: t.Optional[t.Dict[str, t.Any]],
             desired: t.Optional[t.Dict[str, t.Any]]) -> t.List[Step]:
        name = self.name
        path = netns.netns_path(name)
        if desired is None:
            if current is None:
                return []
            if current["status"] == "stale":
                return [Step("remove stale entry %s" % path, lambda: netns.delete(name), current["problem"])]
            self._warn_about_users()
            return [Step("delete netns %s" % name, lambda: netns.delete(name), "state=absent")]

        steps = []
        if current is None:
            steps.append(Step("create netns %s" % name, lambda: netns.create(name), "absent"))
        elif current["status"] == "stale":
            steps.append(Step("repair netns %s" % name, lambda: netns.create(name),
                              "%s %s" % (path, current["problem"])))
        fresh = current is None or current["status"] == "stale"
        if desired["loopback"] and (fresh or not current["loopback"]):
            steps.append(Step("bring up lo in netns %s" % name, lambda: self._loopback_up(path),
                              "new namespace" if fresh else "lo is down"))
        for key, value in desired["sysctls"].items():
            before = None if fresh else current["sysctls"].get(key)
            if before != value:
                steps.append(Step("set %s=%s in netns %s" % (key, value, name),
                                  functools.partial(netns.write_sysctl, path, key, value),
                                  "new namespace" if fresh else "was %s" % before))
        return steps

    def _warn_about_users(self) -> None:
        pids = netns.pids_in(self.entry.inode) if self.entry.inode else []
        if pids:
            self.warnings.append(
                "netns %s: the name is removed, but processes still live in the namespace, so the "
                "kernel keeps it (and its interfaces) until they exit: PIDs %s"
                % (self.name, ", ".join(str(p) for p in pids)))

    @staticmethod
    def _loopback_up(path: str) -> None:
        with netlink.rtnl(path) as nl:
            lo = nl.link_by_name("lo")
            if lo is None:
                raise KernelboxError("netns %s has no loopback interface" % path)
            nl.link_set(lo.index, "lo", state="up")

    def result(self, state: t.Optional[t.Dict[str, t.Any]]) -> t.Dict[str, t.Any]:
        entry = netns.lookup(self.name)
        present = entry.status == netns.PRESENT
        return {
            "name": self.name,
            "path": entry.path,
            "exists": present,
            "inode": entry.inode if present else None,
            "pids": netns.pids_in(entry.inode) if present and entry.inode else [],
            "sysctls": (state or {}).get("sysctls", {}) if present else {},
        }
