# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Independent readers of host state, for leak checks and check-mode proofs.

Everything here reads the kernel with tools other than the code under test
(iproute2, iptables, /proc, the cgroup filesystem), per the rule "verify with
an independent reader".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import typing as t

# /run/kernelbox-runtime is kernelbox-runtime's default --root: any container directory inside it counts.
STATE_DIRS = ("/run/kernelbox", "/var/lib/kernelbox", "/run/kernelbox-runtime")


def _run_json(argv: t.List[str]) -> t.Any:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout or "null")


def netns_names() -> t.List[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def links(netns: t.Optional[str] = None, detailed: bool = False) -> t.Dict[str, t.Any]:
    """name -> attributes, from ``ip -d -j addr`` (optionally inside a named netns)."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-d", "-j", "addr", "show"]
    data = _run_json(argv) or []
    result = {}
    for link in data:
        kind = (link.get("linkinfo") or {}).get("info_kind")
        if detailed:
            result[link["ifname"]] = {
                "kind": kind,
                "mtu": link.get("mtu"),
                "flags": sorted(link.get("flags", [])),
                "master": link.get("master"),
                "address": link.get("address"),
                "addrs": sorted("%s/%s" % (a["local"], a["prefixlen"]) for a in link.get("addr_info", [])),
            }
        else:
            result[link["ifname"]] = kind
    return result


def routes(netns: t.Optional[str] = None) -> t.List[str]:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["route", "show", "table", "all"]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False)
    return sorted(line.strip() for line in proc.stdout.splitlines() if line.strip())


# /run/netns as a shared bind mount of itself is infrastructure that stays, as with iproute2.
PERSISTENT_MOUNTS = {("/run/netns", "tmpfs")}


def mounts() -> t.List[t.Tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount in this mount namespace."""
    result = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            if (fields[4], fields[sep + 1]) in PERSISTENT_MOUNTS:
                continue
            result.append((fields[4], fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""))
    return sorted(result)


def cgroup2_root() -> t.Optional[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                return fields[4]
    return None


def cgroups(parent: t.Optional[str] = None) -> t.List[str]:
    """Every cgroup directory under the test run's parent (relative paths)."""
    root = cgroup2_root()
    parent = parent or os.environ.get("KB_TEST_CGROUP_PARENT", "")
    if not root or not parent:
        return []
    top = os.path.join(root, parent)
    found = []
    for dirpath, _dirs, _files in os.walk(top):
        found.append(os.path.relpath(dirpath, root))
    return sorted(found)


# Infrastructure that stays when no container does, as /run/netns does: the empty state
# directories, and the supervisor's code copy (content-addressed; boot start needs it).
STATE_INFRASTRUCTURE = {"/run/kernelbox/containers", "/var/lib/kernelbox/containers", "/var/lib/kernelbox/runtime",
                        "/var/lib/kernelbox/allocations"}
# image_layers' store keeps its empty skeleton and lock file; any layer inside it still counts.
STATE_INFRASTRUCTURE |= {"/var/lib/kernelbox/layers" + suffix for suffix in (
    "", "/.lock", "/.writers", "/by-blob", "/by-blob/sha256", "/sha256", "/tmp", "/images", "/images/sha256",
    "/downloads", "/downloads/sha256")}
# The container role's default storage parent; each container's own directory inside it still counts.
STATE_INFRASTRUCTURE.add("/var/lib/kernelbox/rootfs")
# The nat module's lock (its sysctl record, sysctls.json, still counts: it must go with the last network).
STATE_INFRASTRUCTURE |= {"/run/kernelbox/nat", "/run/kernelbox/nat/lock"}


def cgroup_root_children() -> t.List[str]:
    """The groups directly below the cgroup2 root, except the one that holds the test parent: tests never make any.

    The test parent is ``kbtest/<run>`` (tests/harness/sandbox_init.py); ``kbtest`` holds every concurrent run's
    parent, so it is left out by its exact name, and other runs' parents inside it are never looked at.
    """
    root = cgroup2_root()
    if not root:
        return []
    top = os.environ.get("KB_TEST_CGROUP_PARENT", "").split("/")[0]
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and entry.name != top)


def cgroup_root_subtree_control() -> t.Optional[str]:
    """The root's cgroup.subtree_control: tests must never change it (it is outside the test parent)."""
    root = cgroup2_root()
    if not root:
        return None
    with open(os.path.join(root, "cgroup.subtree_control"), encoding="utf-8") as handle:
        return handle.read().strip()


def state_files() -> t.List[str]:
    found = []
    for top in STATE_DIRS:
        for dirpath, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if os.path.join(dirpath, d) != "/var/lib/kernelbox/runtime"]
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                if path not in STATE_INFRASTRUCTURE:
                    found.append(path)
    return sorted(found)


def iptables_rules() -> t.List[str]:
    if not shutil.which("iptables"):
        return []
    rules = []
    for table in ("filter", "nat"):
        proc = subprocess.run(["iptables", "-t", table, "-S"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, check=False)
        rules += ["%s %s" % (table, line) for line in proc.stdout.splitlines() if not line.startswith("-P")]
    return sorted(rules)


# PIDs of daemons a session fixture runs for many tests and stops itself (the test registries).
SHARED_DAEMONS: t.Set[int] = set()


def nftables_ruleset() -> t.List[str]:
    """Every nftables table, chain, rule and map element of this namespace, as ``nft list ruleset`` prints them.

    iptables-nft's tables are in here too: this is the kernel's one packet-filtering ruleset.
    """
    if not shutil.which("nft"):
        return []
    proc = subprocess.run(["nft", "list", "ruleset"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          check=False)
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def nftables_tables(ruleset: t.List[str]) -> t.List[t.Tuple[str, str]]:
    """(family, name) of each table in a ``nftables_ruleset()`` listing."""
    return [tuple(line.split()[1:3]) for line in ruleset if line.startswith("table ")]  # type: ignore[misc]


# The forwarding sysctls of the sandbox's own namespace (a bridge's route_localnet goes with the bridge).
FORWARDING_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv6.conf.default.forwarding",
                      "net.ipv4.conf.all.route_localnet", "net.ipv4.conf.default.route_localnet",
                      "net.ipv4.conf.all.forwarding", "net.ipv4.conf.default.forwarding")


def forwarding_sysctls() -> t.Dict[str, str]:
    found = {}
    for key in FORWARDING_SYSCTLS:
        try:
            with open("/proc/sys/" + key.replace(".", "/"), encoding="ascii") as handle:
                found[key] = handle.read().strip()
        except OSError:
            continue
    return found


def stray_processes(exclude: t.Iterable[int] = ()) -> t.List[t.Tuple[int, str]]:
    """Processes re-parented to the sandbox (daemons, orphans) or left as children of this test process.

    The sandbox init is a child subreaper, so anything a test leaves running
    ends up as its child or as ours.
    """
    parents = {os.getpid()}
    sandbox = os.environ.get("KB_SANDBOX_PID")
    if sandbox:
        parents.add(int(sandbox))
    skip = set(exclude) | {os.getpid()} | SHARED_DAEMONS
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                cmd = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        tail = stat[stat.rindex(")") + 2:].split()
        if tail[0] == "Z":
            continue  # a zombie the subreaper has not collected yet: already dead
        if int(tail[1]) in parents:
            found.append((int(entry), cmd))
    return sorted(found)


def host_state(detailed: bool = True) -> t.Dict[str, t.Any]:
    """Everything a test could change, in comparable form."""
    names = netns_names()
    return {
        "links": links(detailed=detailed),
        "routes": routes(),
        "netns": {name: (links(name, detailed=detailed), routes(name)) for name in names},
        "mounts": mounts(),
        "cgroups": cgroups(),
        "cgroup_root_controllers": cgroup_root_subtree_control(),
        "cgroup_root_children": cgroup_root_children(),
        "state_files": state_files(),
        "iptables": iptables_rules(),
        "nftables": nftables_ruleset(),
        "forwarding_sysctls": forwarding_sysctls(),
    }


def cgroups_to_remove(before: t.Dict[str, t.Any], after: t.Dict[str, t.Any], parent: str) -> t.List[str]:
    """The groups a leaking test left that the suite may remove: new ones strictly below the run's test parent,
    deepest first.  Groups new beside the test parent (``cgroup_root_children``) are never among them: on a
    shared host they may be another workload's."""
    new = set(after["cgroups"]) - set(before["cgroups"])
    return sorted((path for path in new if path.startswith(parent + "/")), key=lambda path: (-len(path), path))
