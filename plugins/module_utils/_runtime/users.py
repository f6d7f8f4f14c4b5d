# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a ``user`` such as ``nobody`` or ``www-data:adm``, as the container sees it.

Names are looked up in the container's own /etc/passwd and /etc/group, as
Docker does: ``NAME`` or ``UID`` (the group is the user's primary group, or
0 for a UID without an entry), ``NAME:GROUP``, ``UID:GID``; the supplementary
groups are the groups that list the user as a member.

The files belong to the container, so they are read the way a hostile one
cannot abuse: resolved inside its root (openat2 RESOLVE_IN_ROOT, no magic
links), opened O_PATH first and read only if they are regular files (a FIFO
or a device is never opened for reading, so nothing can block), at most
``LIMIT`` bytes.  ``read_file`` reads a mounted root; ``read_from_layers``
reads the topmost copy in overlay lower layers (before the root is mounted),
honouring overlayfs whiteouts and opaque directories.
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

LIMIT = 1 << 20  # bytes read of /etc/passwd or /etc/group at most
_XATTR_OPAQUE = "trusted.overlay.opaque"


class NeedsMountedRoot(Exception):
    """The layers alone cannot say (a symlink on the way): read the mounted root instead."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    additional_gids: t.Tuple[int, ...] = ()


def parse_passwd(text: str) -> t.List[t.Tuple[str, int, int]]:
    """(name, uid, gid) for each well-formed line (pure)."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        try:
            entries.append((fields[0], int(fields[2]), int(fields[3])))
        except ValueError:
            continue
    return entries


def parse_group(text: str) -> t.List[t.Tuple[str, int, t.List[str]]]:
    """(name, gid, members) for each well-formed line (pure)."""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 3 or not fields[0] or line.startswith(("#", "+", "-")):
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        members = [m for m in (fields[3].split(",") if len(fields) > 3 else []) if m]
        entries.append((fields[0], gid, members))
    return entries


def _id(text: str) -> t.Optional[int]:
    return int(text) if text.isdigit() else None


def resolve(user: str, passwd: t.Optional[str], group: t.Optional[str]) -> Identity:
    """``user`` as numeric ids, from the container's /etc/passwd and /etc/group text (None: no such file)."""
    name, _sep, group_part = user.partition(":")
    users = parse_passwd(passwd or "")
    groups = parse_group(group or "")
    uid = _id(name)
    entry = next((e for e in users if (e[1] == uid if uid is not None else e[0] == name)), None)
    if uid is None:
        if entry is None:
            raise ValidationError("user: there is no user %r in the container's /etc/passwd%s"
                                  % (name, "" if passwd is not None else " (it has none)"))
        uid = entry[1]
    gid = entry[2] if entry is not None else 0
    if group_part:
        gid_given = _id(group_part)
        if gid_given is None:
            found = next((g for g in groups if g[0] == group_part), None)
            if found is None:
                raise ValidationError("user: there is no group %r in the container's /etc/group%s"
                                      % (group_part, "" if group is not None else " (it has none)"))
            gid_given = found[1]
        gid = gid_given
    member_of = entry[0] if entry is not None else None
    extra = sorted({g[1] for g in groups if member_of and member_of in g[2] and g[1] != gid})
    return Identity(uid, gid, tuple(extra))


# --- reading the container's files ------------------------------------------------------------

def _read_regular(path_fd: int, shown: str) -> str:
    info = os.fstat(path_fd)
    if not stat.S_ISREG(info.st_mode):
        raise ValidationError("user: %s in the container is not a regular file; refusing to read it" % shown)
    fd = os.open("/proc/self/fd/%d" % path_fd, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        data = os.read(fd, LIMIT + 1)
    finally:
        os.close(fd)
    if len(data) > LIMIT:
        raise ValidationError("user: %s in the container is larger than %d bytes" % (shown, LIMIT))
    return data.decode("utf-8", "replace")


def read_file(root: str, path: str) -> t.Optional[str]:
    """The text of ``path`` in the mounted root ``root``, or None when it does not exist."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = mounts.open_in_root(root_fd, path, os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise
        try:
            return _read_regular(fd, path)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)


def _is_whiteout(fd: int) -> bool:
    info = os.fstat(fd)
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0


def _opaque(dir_fd: int) -> bool:
    try:
        return os.getxattr("/proc/self/fd/%d" % dir_fd, _XATTR_OPAQUE) == b"y"
    except OSError:
        return False


def _layer_lookup(layer_fd: int, parts: t.List[str]) -> t.Tuple[str, t.Optional[int]]:
    """('found', fd) | ('hidden', None) | ('absent', None) for ``parts`` in one layer, without following links."""
    current = os.dup(layer_fd)
    try:
        for index, name in enumerate(parts):
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except FileNotFoundError:
                return ("hidden" if index and _opaque(current) else "absent"), None
            except NotADirectoryError:
                raise NeedsMountedRoot("/".join(parts[:index]))
            if _is_whiteout(fd):
                os.close(fd)
                return "hidden", None
            os.close(current)
            current = fd
        fd, current = current, -1
        return "found", fd
    finally:
        if current >= 0:
            os.close(current)


def read_from_layers(lowers: t.Sequence[str], path: str) -> t.Optional[str]:
    """The text of ``path`` as the overlay of ``lowers`` (topmost first) will show it, or None.

    Raises NeedsMountedRoot when a symlink is on the way (only the mounted root resolves it).
    """
    parts = [p for p in path.split("/") if p]
    for lower in lowers:
        layer_fd = os.open(lower, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            status, fd = _layer_lookup(layer_fd, parts)
        finally:
            os.close(layer_fd)
        if status == "hidden":
            return None
        if fd is not None:
            try:
                if stat.S_ISLNK(os.fstat(fd).st_mode):
                    raise NeedsMountedRoot(path)
                return _read_regular(fd, path)
            finally:
                os.close(fd)
    return None
