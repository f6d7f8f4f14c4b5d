# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Independent readers (iproute2's ``ip -j``) and clean-up for the network tests."""

from __future__ import annotations

import json
import os
import subprocess
import time
import typing as t


def ip(*args: str, netns: t.Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=check)


def ip_json(*args: str, netns: t.Optional[str] = None) -> t.Any:
    proc = ip("-j", *args, netns=netns, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else []


def link(name: str, netns: t.Optional[str] = None) -> t.Optional[t.Dict[str, t.Any]]:
    """``ip -d -j link show dev NAME``: kind in linkinfo.info_kind, master, mtu, flags, link_netnsid..."""
    found = ip_json("-d", "link", "show", "dev", name, netns=netns)
    return found[0] if found else None


def kind(name: str, netns: t.Optional[str] = None) -> t.Optional[str]:
    info = link(name, netns)
    return (info.get("linkinfo") or {}).get("info_kind") if info else None


def is_up(name: str, netns: t.Optional[str] = None) -> bool:
    info = link(name, netns)
    return bool(info) and "UP" in info.get("flags", [])


def addresses(name: str, netns: t.Optional[str] = None) -> t.List[str]:
    """Every address of the link (link-local ones included), as 'addr/prefix'."""
    found = ip_json("addr", "show", "dev", name, netns=netns)
    return sorted("%s/%s" % (a["local"], a["prefixlen"]) for entry in found for a in entry.get("addr_info", []))


def default_routes(netns: t.Optional[str] = None) -> t.List[t.Tuple[str, t.Optional[str], str]]:
    """(family, gateway, dev) of every default route in the main tables."""
    routes = []
    for family in ("-4", "-6"):
        for route in ip_json(family, "route", "show", "default", netns=netns):
            routes.append((family, route.get("gateway"), route.get("dev")))
    return sorted(routes, key=str)


def link_names(netns: t.Optional[str] = None) -> t.List[str]:
    return sorted(entry["ifname"] for entry in ip_json("link", "show", netns=netns))


def netns_names() -> t.List[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def wait_for_dad(timeout: float = 5.0) -> None:
    """Wait until no IPv6 address is tentative, here or in any named netns.

    Duplicate address detection finishes about a second after an address (or a
    kernel link-local one) appears, and only then adds its local route: a
    snapshot taken earlier would see that route appear later.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(ip("-6", "addr", "show", "tentative", netns=ns, check=False).stdout.strip()
                   for ns in [None] + netns_names()):
            return
        time.sleep(0.1)


def remove_test_objects(prefix: str) -> None:
    """Delete every link and named netns whose name starts with ``prefix``.

    Links first: a veth whose peer sits in a namespace would otherwise vanish
    only later, when the kernel tears that namespace down asynchronously.
    """
    for name in link_names():
        if name.startswith(prefix):
            ip("link", "delete", name, check=False)
    for name in netns_names():
        if name.startswith(prefix):
            ip("netns", "delete", name, check=False)
            path = "/run/netns/" + name
            if os.path.lexists(path):  # a stale entry a test made on purpose
                subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL, check=False)
                os.unlink(path)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(n.startswith(prefix) for n in link_names()):
        time.sleep(0.05)


def play(*tasks: t.Dict[str, t.Any], name: str = "test") -> str:
    """A one-play playbook against localhost, as YAML text (JSON is YAML)."""
    return json.dumps([{"name": name, "hosts": "all", "gather_facts": False, "tasks": list(tasks)}], indent=1)


def task(title: str, module: str, args: t.Dict[str, t.Any], **extra: t.Any) -> t.Dict[str, t.Any]:
    fqcn = module if "." in module else "kernelbox.containers." + module
    entry = {"name": title, fqcn: args}
    entry.update(extra)
    return entry
