# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: one pass over /proc, and what a process's status says about it.

``scan()`` reads every process once (its stat line and, optionally, which PID
namespace it lives in), so callers that need to place many processes (one
container or two hundred) into trees never rescan /proc per container.

The parsers (credentials from /proc/PID/status, uid_map/gid_map) are pure and
unit-tested on recorded text; the ``read_*`` helpers beside them do the I/O.
"""

from __future__ import annotations

import os
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import procfs

NAMESPACE_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


@dataclass
class ProcEntry:
    """One process as one pass over /proc saw it."""

    pid: int
    ppid: int
    comm: str
    state: str
    starttime: int
    pidns: t.Optional[int] = None  # inode of /proc/PID/ns/pid, when asked for


def scan(with_pidns: bool = False, proc: str = "/proc") -> t.Dict[int, ProcEntry]:
    """Every process now: pid -> ProcEntry.  Processes that exit mid-scan are left out."""
    found: t.Dict[int, ProcEntry] = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open("%s/%s/stat" % (proc, name), "rb") as handle:
                stat = procfs.parse_proc_stat(handle.read().decode("utf-8", "replace"))
            pidns = os.stat("%s/%s/ns/pid" % (proc, name)).st_ino if with_pidns else None
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile (or a kernel thread we may not inspect)
        found[stat.pid] = ProcEntry(stat.pid, stat.ppid, stat.comm, stat.state, stat.starttime, pidns)
    return found


def children_map(entries: t.Mapping[int, ProcEntry]) -> t.Dict[int, t.List[int]]:
    """ppid -> sorted child PIDs."""
    children: t.Dict[int, t.List[int]] = {}
    for entry in entries.values():
        children.setdefault(entry.ppid, []).append(entry.pid)
    for pids in children.values():
        pids.sort()
    return children


def descendants(root: int, children: t.Mapping[int, t.Sequence[int]]) -> t.List[int]:
    """``root`` and every process below it, parents before children (breadth first)."""
    order = [root]
    index = 0
    while index < len(order):
        order.extend(children.get(order[index], ()))
        index += 1
    return order


# --- /proc/PID/status ----------------------------------------------------------------

@dataclass
class Credentials:
    """Identity and privilege of a process, from /proc/PID/status (ids as the reader's user namespace maps them)."""

    uid: int             # effective
    gid: int             # effective
    groups: t.List[int]
    cap_inheritable: int
    cap_permitted: int
    cap_effective: int
    cap_bounding: int
    cap_ambient: int
    no_new_privs: bool
    seccomp_mode: int    # 0 off, 1 strict, 2 filter
    seccomp_filters: int
    nspid: t.List[int] = field(default_factory=list)  # the PID in each nested PID namespace, outermost first


def parse_credentials(text: str) -> Credentials:
    status = procfs.parse_status(text)

    def ids(key: str) -> t.List[int]:
        return [int(x) for x in status.get(key, "").split()]

    def cap(key: str) -> int:
        return int(status.get(key, "0") or "0", 16)

    def number(key: str) -> int:
        value = status.get(key, "0").strip()
        return int(value) if value.isdigit() else 0

    uids, gids = ids("Uid"), ids("Gid")
    return Credentials(
        uid=uids[1] if len(uids) > 1 else 0, gid=gids[1] if len(gids) > 1 else 0, groups=ids("Groups"),
        cap_inheritable=cap("CapInh"), cap_permitted=cap("CapPrm"), cap_effective=cap("CapEff"),
        cap_bounding=cap("CapBnd"), cap_ambient=cap("CapAmb"),
        no_new_privs=number("NoNewPrivs") == 1, seccomp_mode=number("Seccomp"),
        seccomp_filters=number("Seccomp_filters"), nspid=ids("NSpid"))


def read_credentials(pid: int, dir_fd: t.Optional[int] = None) -> Credentials:
    """Credentials of ``pid``; with ``dir_fd`` (an open /proc/PID) the read cannot hit a recycled PID."""
    if dir_fd is not None:
        fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as handle:
            return parse_credentials(handle.read())
    with open("/proc/%d/status" % pid, encoding="utf-8", errors="replace") as handle:
        return parse_credentials(handle.read())


# --- user namespace id maps ------------------------------------------------------------

IdMap = t.List[t.Tuple[int, int, int]]  # (id inside, id outside as the reader sees it, count)


def parse_id_map(text: str) -> IdMap:
    """/proc/PID/uid_map or gid_map text."""
    result = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            result.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return result


def inside_id(outside: int, mapping: IdMap) -> t.Optional[int]:
    """The id inside the namespace that ``outside`` maps to, or None when it is not mapped."""
    for first_inside, first_outside, count in mapping:
        if first_outside <= outside < first_outside + count:
            return first_inside + outside - first_outside
    return None


def outside_id(inside: int, mapping: IdMap) -> t.Optional[int]:
    """The id outside that ``inside`` stands for, or None when it is not mapped."""
    for first_inside, first_outside, count in mapping:
        if first_inside <= inside < first_inside + count:
            return first_outside + inside - first_inside
    return None


def read_id_map(pid: int, kind: str, dir_fd: t.Optional[int] = None) -> IdMap:
    name = "%s_map" % kind
    if dir_fd is not None:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "r", encoding="ascii") as handle:
            return parse_id_map(handle.read())
    with open("/proc/%d/%s" % (pid, name), encoding="ascii") as handle:
        return parse_id_map(handle.read())


def namespace_inodes(pid: t.Union[int, str], types: t.Iterable[str] = NAMESPACE_TYPES) -> t.Dict[str, int]:
    """type -> namespace inode (as lsns and readlink /proc/PID/ns/TYPE show it); missing types left out."""
    result = {}
    for kind in types:
        try:
            result[kind] = os.stat("/proc/%s/ns/%s" % (pid, kind)).st_ino
        except OSError:
            continue
    return result
