# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: pure parsers for /proc and /sys text.

Every function takes text and returns data; nothing here touches the
filesystem, so each parser is unit-tested on recorded samples.  Thin
``read_*`` helpers that do the I/O live next to them and are trivial.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape_octal(text: str) -> str:
    r"""Decode the kernel's octal escapes in mountinfo/mounts: '\040' -> ' ', '\134' -> '\'."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/PID/mountinfo (proc(5)), with paths decoded."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    mount_options: t.Tuple[str, ...]
    optional_fields: t.Tuple[str, ...]
    fstype: str
    source: str
    super_options: t.Tuple[str, ...]

    @property
    def propagation(self) -> str:
        """'shared', 'slave', 'unbindable' or 'private', from the optional fields."""
        tags = [f.split(":", 1)[0] for f in self.optional_fields]
        if "shared" in tags:
            return "shared"
        if "master" in tags:
            return "slave"
        if "unbindable" in tags:
            return "unbindable"
        return "private"

    def super_option(self, key: str) -> t.Optional[str]:
        """Value of ``key=value`` in the super options (e.g. overlay's lowerdir)."""
        prefix = key + "="
        for option in self.super_options:
            if option.startswith(prefix):
                return option[len(prefix):]
        return None


def split_escaped(text: str, separator: str) -> t.List[str]:
    r"""Split at each ``separator`` not escaped by a backslash; the escapes stay in the parts.

    overlayfs escapes a literal ',' in its options and a literal ':' in lowerdir as '\,' and '\:'.
    """
    parts: t.List[str] = []
    current: t.List[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def split_mount_options(text: str) -> t.Tuple[str, ...]:
    r"""Split a comma-separated option list; overlayfs escapes a literal comma as '\,'."""
    return tuple(part for part in split_escaped(text, ",") if part != "")


def parse_mountinfo_line(line: str) -> MountInfo:
    fields = line.rstrip("\n").split(" ")
    try:
        separator = fields.index("-", 6)
    except ValueError:
        raise ValueError("mountinfo line without ' - ' separator: %r" % line)
    major, minor = fields[2].split(":")
    return MountInfo(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        major=int(major),
        minor=int(minor),
        root=unescape_octal(fields[3]),
        mount_point=unescape_octal(fields[4]),
        mount_options=tuple(fields[5].split(",")),
        optional_fields=tuple(fields[6:separator]),
        fstype=fields[separator + 1],
        source=unescape_octal(fields[separator + 2]),
        super_options=split_mount_options(unescape_octal(fields[separator + 3]))
        if len(fields) > separator + 3 else (),
    )


def parse_mountinfo(text: str) -> t.List[MountInfo]:
    return [parse_mountinfo_line(line) for line in text.splitlines() if line.strip()]


def read_mountinfo(pid: t.Union[int, str] = "self") -> t.List[MountInfo]:
    with open("/proc/%s/mountinfo" % pid, "r", encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read())


def mounts_at(mounts: t.Iterable[MountInfo], mount_point: str) -> t.List[MountInfo]:
    """All mounts stacked at exactly ``mount_point`` (exact match, never a prefix), last is on top."""
    return [m for m in mounts if m.mount_point == mount_point]


def parse_status(text: str) -> t.Dict[str, str]:
    """/proc/PID/status as a dict of field -> raw value string."""
    result: t.Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            result[key.strip()] = value.strip()
    return result


def parse_flat_keyed(text: str) -> t.Dict[str, int]:
    """'key value' lines (memory.events, cpu.stat, cgroup.events) -> {key: int}."""
    result: t.Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                result[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return result


def parse_nested_keyed(text: str) -> t.Dict[str, t.Dict[str, str]]:
    """'name k=v k=v' lines (io.stat, io.max, PSI files) -> {name: {k: v}}."""
    result: t.Dict[str, t.Dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        values: t.Dict[str, str] = {}
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            if sep:
                values[key] = value
        result[parts[0]] = values
    return result


def parse_pressure(text: str) -> t.Dict[str, t.Dict[str, float]]:
    """PSI (cpu.pressure, memory.pressure, io.pressure) -> {'some': {...}, 'full': {...}}."""
    parsed = parse_nested_keyed(text)
    return {kind: {k: float(v) for k, v in values.items()} for kind, values in parsed.items()}


@dataclass(frozen=True)
class ProcCgroup:
    hierarchy_id: int
    controllers: t.Tuple[str, ...]
    path: str


def parse_proc_cgroup(text: str) -> t.List[ProcCgroup]:
    """/proc/PID/cgroup lines 'id:controllers:path'; the v2 entry is '0::/path'."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        hid, controllers, path = line.split(":", 2)
        entries.append(ProcCgroup(int(hid), tuple(c for c in controllers.split(",") if c), path))
    return entries


def cgroup2_path_of(text: str) -> t.Optional[str]:
    """The cgroup v2 path from /proc/PID/cgroup text, or None."""
    for entry in parse_proc_cgroup(text):
        if entry.hierarchy_id == 0 and not entry.controllers:
            return entry.path
    return None


_NS_LINK = re.compile(r"(?P<type>[a-z_]+):\[(?P<inode>[0-9]+)\]")


def parse_ns_link(text: str) -> t.Tuple[str, int]:
    """'net:[4026531992]' (readlink of /proc/PID/ns/net) -> ('net', 4026531992)."""
    match = _NS_LINK.fullmatch(text.strip())
    if not match:
        raise ValueError("not a namespace link: %r" % text)
    return match.group("type"), int(match.group("inode"))


@dataclass
class ProcStat:
    """The fields of /proc/PID/stat we use; the comm may hold spaces and ')'."""

    pid: int
    comm: str
    state: str
    ppid: int
    starttime: int  # clock ticks since boot: with the PID, a process identity that survives PID reuse
    extra: t.List[str] = field(default_factory=list)


def parse_proc_stat(text: str) -> ProcStat:
    start = text.index("(")
    end = text.rindex(")")
    rest = text[end + 2:].split()
    return ProcStat(pid=int(text[:start].strip()), comm=text[start + 1:end], state=rest[0],
                    ppid=int(rest[1]), starttime=int(rest[19]), extra=rest)


TCP_LISTEN = "0A"  # include/net/tcp_states.h: TCP_LISTEN = 10


def listening_tcp_ports(text: str) -> t.Set[int]:
    """Local ports in state LISTEN, from /proc/PID/net/tcp or tcp6 text (the process's network namespace)."""
    ports: t.Set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_LISTEN:
            continue
        _address, _sep, port = fields[1].rpartition(":")
        try:
            ports.add(int(port, 16))
        except ValueError:
            continue
    return ports
