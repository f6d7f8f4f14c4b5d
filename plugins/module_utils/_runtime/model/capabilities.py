# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: Linux capabilities, by name, and applying them.

The table is include/uapi/linux/capability.h up to CAP_CHECKPOINT_RESTORE (40).
Names are normalised to the kernel macro spelling ("CAP_NET_ADMIN") whatever the
input case or prefix ("net_admin", "CAP_net_admin").

``apply_process_credentials`` is the one place that switches uid/gid and sets
the five capability sets, in the only order that works (see its docstring);
the launcher and ``container_exec`` (joining a running container) both call it.
"""

from __future__ import annotations

import os
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

# include/uapi/linux/capability.h
CAPABILITIES: t.Tuple[str, ...] = (
    "CAP_CHOWN",                # 0
    "CAP_DAC_OVERRIDE",         # 1
    "CAP_DAC_READ_SEARCH",      # 2
    "CAP_FOWNER",               # 3
    "CAP_FSETID",               # 4
    "CAP_KILL",                 # 5
    "CAP_SETGID",               # 6
    "CAP_SETUID",               # 7
    "CAP_SETPCAP",              # 8
    "CAP_LINUX_IMMUTABLE",      # 9
    "CAP_NET_BIND_SERVICE",     # 10
    "CAP_NET_BROADCAST",        # 11
    "CAP_NET_ADMIN",            # 12
    "CAP_NET_RAW",              # 13
    "CAP_IPC_LOCK",             # 14
    "CAP_IPC_OWNER",            # 15
    "CAP_SYS_MODULE",           # 16
    "CAP_SYS_RAWIO",            # 17
    "CAP_SYS_CHROOT",           # 18
    "CAP_SYS_PTRACE",           # 19
    "CAP_SYS_PACCT",            # 20
    "CAP_SYS_ADMIN",            # 21
    "CAP_SYS_BOOT",             # 22
    "CAP_SYS_NICE",             # 23
    "CAP_SYS_RESOURCE",         # 24
    "CAP_SYS_TIME",             # 25
    "CAP_SYS_TTY_CONFIG",       # 26
    "CAP_MKNOD",                # 27
    "CAP_LEASE",                # 28
    "CAP_AUDIT_WRITE",          # 29
    "CAP_AUDIT_CONTROL",        # 30
    "CAP_SETFCAP",              # 31
    "CAP_MAC_OVERRIDE",         # 32
    "CAP_MAC_ADMIN",            # 33
    "CAP_SYSLOG",               # 34
    "CAP_WAKE_ALARM",           # 35
    "CAP_BLOCK_SUSPEND",        # 36
    "CAP_AUDIT_READ",           # 37
    "CAP_PERFMON",              # 38
    "CAP_BPF",                  # 39
    "CAP_CHECKPOINT_RESTORE",   # 40
)
CAP_NUMBERS: t.Dict[str, int] = {name: number for number, name in enumerate(CAPABILITIES)}
LAST_KNOWN_CAP = len(CAPABILITIES) - 1

# Docker's default set (moby oci/caps/defaults.go): 14 capabilities.
DOCKER_DEFAULT: t.Tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def normalise_name(value: t.Any, option: str = "capabilities") -> str:
    """'net_admin', 'NET_ADMIN', 'cap_net_admin' -> 'CAP_NET_ADMIN'; unknown names are refused."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("%s: %r is not a capability name" % (option, value))
    name = value.strip().upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAP_NUMBERS:
        raise ValidationError("%s: unknown capability %r (known: CAP_CHOWN ... CAP_CHECKPOINT_RESTORE, "
                              "see capabilities(7))" % (option, value))
    return name


def normalise_names(values: t.Optional[t.Iterable[t.Any]], option: str = "capabilities") -> t.List[str]:
    """Validate, de-duplicate and sort by capability number (the order /proc shows them in)."""
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, set, frozenset)):
        raise ValidationError("%s: must be a list of capability names, got %r" % (option, values))
    names = {normalise_name(v, option) for v in values}
    return sorted(names, key=CAP_NUMBERS.__getitem__)


def mask_of(names: t.Iterable[str]) -> int:
    """The 64-bit mask /proc/PID/status prints (CapEff etc.) for normalised names."""
    mask = 0
    for name in names:
        mask |= 1 << CAP_NUMBERS[name]
    return mask


def names_of(mask: int) -> t.List[str]:
    """Names for the bits of a mask (bits beyond the table come out as 'CAP_<n>')."""
    result = []
    for bit in range(64):
        if mask & (1 << bit):
            result.append(CAPABILITIES[bit] if bit < len(CAPABILITIES) else "CAP_%d" % bit)
    return result


# --- applying them ---------------------------------------------------------------

@dataclass
class Credentials:
    """Everything ``apply_credentials`` needs, computed in the parent (no work in the child)."""

    uid: int
    gid: int
    groups: t.Optional[t.List[int]]  # None: keep the current supplementary groups (setgroups is denied)
    drop_bounding: t.List[int]
    effective: int
    permitted: int
    inheritable: int
    ambient: t.List[int]


_LAST_CAP: t.List[int] = []


def last_cap() -> int:
    """The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap), read once."""
    if not _LAST_CAP:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as handle:
                _LAST_CAP.append(int(handle.read().strip()))
        except (OSError, ValueError):
            _LAST_CAP.append(LAST_KNOWN_CAP)
    return _LAST_CAP[0]


def prepare_credentials(uid: int, gid: int, groups: t.Sequence[int], capsets: t.Any,
                        kernel_last_cap: t.Optional[int] = None) -> Credentials:
    """From a spec's process.user and process.capabilities (normalised names)."""
    top = last_cap() if kernel_last_cap is None else kernel_last_cap
    for set_name in SETS:
        for name in getattr(capsets, set_name):
            if CAP_NUMBERS[name] > top:
                raise ValidationError("process.capabilities.%s: %s is not known to this kernel (cap_last_cap is %d)"
                                      % (set_name, name, top))
    bounding = mask_of(capsets.bounding)
    return Credentials(
        uid=uid, gid=gid, groups=list(groups),
        drop_bounding=[cap for cap in range(top + 1) if not bounding & (1 << cap)],
        effective=mask_of(capsets.effective), permitted=mask_of(capsets.permitted),
        inheritable=mask_of(capsets.inheritable), ambient=[CAP_NUMBERS[name] for name in capsets.ambient])


def apply_credentials(creds: Credentials) -> None:
    """Switch uid/gid and set the five capability sets, in the only order that works.

    1. Drop the bounding set (PR_CAPBSET_DROP needs CAP_SETPCAP, still held).
    2. PR_SET_KEEPCAPS, so the permitted set survives a switch away from uid 0.
    3. setgroups, setresgid, setresuid (needs CAP_SETGID/CAP_SETUID, still held).
    4. capset E/P/I: only ever lowers the sets.
    5. Ambient: cleared, then each cap raised (each must be in P and I).

    Raises OSError; the caller names the step.  For uid 0 the kernel sets
    P = E = bounding | inheritable again at execve, so E/P equal to bounding
    (the default) is what /proc/PID/status then shows.
    """
    for cap in creds.drop_bounding:
        libc.prctl(libc.PR_CAPBSET_DROP, cap)
    libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    if creds.groups is not None:
        os.setgroups(creds.groups)
    os.setresgid(creds.gid, creds.gid, creds.gid)
    os.setresuid(creds.uid, creds.uid, creds.uid)
    libc.capset(creds.effective, creds.permitted, creds.inheritable)
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in creds.ambient:
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_RAISE, cap)
    libc.prctl(libc.PR_SET_KEEPCAPS, 0)
