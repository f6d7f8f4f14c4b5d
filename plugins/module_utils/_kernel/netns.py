# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: named network namespaces, the iproute2 way.

A named netns is an nsfs bind mount at /run/netns/NAME, and /run/netns is
itself a shared mount, exactly as ``ip netns add`` makes them, so each tool
sees the other's namespaces.  Lookups are direct (lstat + statfs of one path),
never a scan of /run/netns or of mountinfo, and names match exactly.

An entry that exists but is not an nsfs mount (a crash between creating the
placeholder file and the bind mount, or a left-over after a lazy unmount) is
"stale": ``create`` repairs it and ``delete`` removes it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.forked import call_in_child
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import netns_name

NETNS_RUN_DIR = "/run/netns"

ABSENT = "absent"
STALE = "stale"
PRESENT = "present"


@dataclass
class NamedNetns:
    """What /run/netns/NAME currently is."""

    name: str
    path: str
    status: str  # absent | stale | present
    inode: t.Optional[int] = None  # the namespace id, as /proc/PID/ns/net shows it
    stale_reason: str = ""
    pids: t.List[int] = field(default_factory=list)


def netns_path(name: str, run_dir: str = NETNS_RUN_DIR) -> str:
    return os.path.join(run_dir, netns_name(name))


def lookup(name: str, run_dir: str = NETNS_RUN_DIR) -> NamedNetns:
    """Inspect /run/netns/NAME without following symlinks."""
    path = netns_path(name, run_dir)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return NamedNetns(name, path, ABSENT)
    if stat.S_ISLNK(info.st_mode):
        return NamedNetns(name, path, STALE, stale_reason="is a symlink, not an nsfs mount")
    if not stat.S_ISREG(info.st_mode):
        return NamedNetns(name, path, STALE, stale_reason="is not a regular file (mode %o)" % info.st_mode)
    try:
        fstype = libc.statfs_type(path)
    except OSError as exc:
        return NamedNetns(name, path, STALE, stale_reason="cannot be inspected: %s" % exc.strerror)
    if fstype != libc.NSFS_MAGIC:
        return NamedNetns(name, path, STALE, stale_reason="is not an nsfs mount (left by an interrupted run?)")
    return NamedNetns(name, path, PRESENT, inode=info.st_ino)


def ensure_run_dir(run_dir: str = NETNS_RUN_DIR) -> None:
    """Create /run/netns and make it a shared mount point, as iproute2 does.

    Shared propagation makes a netns mounted later visible to every mount
    namespace that already holds a copy of /run/netns (ip netns exec, containers).
    """
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    try:
        libc.mount("none", run_dir, None, libc.MS_SHARED | libc.MS_REC)
        return
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
    if not mounts.is_mount_point(run_dir):  # a bind onto itself counts: mount ids, not st_dev
        libc.mount(run_dir, run_dir, None, libc.MS_BIND | libc.MS_REC)
    libc.mount("none", run_dir, None, libc.MS_SHARED | libc.MS_REC)


def _unmount_all(path: str) -> None:
    """Detach every mount stacked at ``path``."""
    for _attempt in range(64):  # bound the loop: never spin on a path that will not unmount
        try:
            libc.umount2(path, libc.MNT_DETACH | libc.UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
                return
            raise
    raise OSError(errno.EBUSY, "could not unmount every mount stacked at %s" % path, path)


def _remove_entry(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        os.rmdir(path)
    else:
        os.unlink(path)


def create(name: str, run_dir: str = NETNS_RUN_DIR) -> NamedNetns:
    """Create (or repair a stale entry into) a named network namespace."""
    current = lookup(name, run_dir)
    if current.status == PRESENT:
        return current
    ensure_run_dir(run_dir)
    path = current.path
    if current.status == STALE:
        _unmount_all(path)
        _remove_entry(path)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o444)
    os.close(fd)

    def bind_new_netns() -> None:
        libc.unshare(libc.CLONE_NEWNET)
        libc.mount("/proc/self/ns/net", path, "none", libc.MS_BIND)

    try:
        call_in_child(bind_new_netns)
    except BaseException:
        _remove_entry(path)  # leave nothing half-made behind
        raise
    created = lookup(name, run_dir)
    if created.status != PRESENT:
        raise OSError(errno.EIO, "netns %s was bound but does not read back as nsfs: %s"
                      % (name, created.stale_reason), path)
    return created


def delete(name: str, run_dir: str = NETNS_RUN_DIR) -> None:
    """Remove the name: unmount the nsfs binding(s) and unlink the file.

    The namespace itself lives on while processes or other mounts hold it.
    """
    path = netns_path(name, run_dir)
    _unmount_all(path)
    try:
        _remove_entry(path)
    except FileNotFoundError:
        pass


def pids_in(inode: int, nstype: str = "net") -> t.List[int]:
    """PIDs whose /proc/PID/ns/<nstype> is the namespace ``inode``.

    One pass over /proc; only used for reporting and the absent warning.
    """
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat("/proc/%s/ns/%s" % (entry.name, nstype)).st_ino == inode:
                pids.append(int(entry.name))
        except OSError:
            continue  # exited meanwhile, or not ours to inspect
    return sorted(pids)


def _inside(netns: t.Optional[str]) -> t.ContextManager[None]:
    return libc.entered_netns(netns) if netns is not None else contextlib.nullcontext()


def read_sysctl(netns: t.Optional[str], key: str) -> t.Optional[str]:
    """Read a net.* sysctl as seen inside the namespace at path ``netns`` (None: our own); None if it does not exist.

    /proc/sys/net resolves against the opener's network namespace, so the
    file is opened while this thread is inside it.
    """
    path = "/proc/sys/" + key.replace(".", "/")
    with _inside(netns):
        try:
            with open(path, "r") as handle:
                return " ".join(handle.read().split())
        except FileNotFoundError:
            return None


def write_sysctl(netns: t.Optional[str], key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    with _inside(netns):
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if libc.fstatfs_type(fd) != libc.PROC_SUPER_MAGIC:
                raise OSError(errno.EXDEV, "refusing to write a sysctl that is not on procfs", path)
            os.write(fd, value.encode())
        finally:
            os.close(fd)


def sysctl_exists(key: str) -> bool:
    """Whether ``key`` names a sysctl file (net.* keys exist in every network namespace)."""
    return os.path.isfile("/proc/sys/" + key.replace(".", "/"))
