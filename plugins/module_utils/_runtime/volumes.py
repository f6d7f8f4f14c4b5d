# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: named volumes, and handing a directory to a container's root.

A named volume is a directory kernelbox makes on first use, podman's layout::

    /var/lib/kernelbox/volumes/NAME/        0700 root
    /var/lib/kernelbox/volumes/NAME/_data   0755, owned by the container's root (its mapped host ids)

Container root is an unprivileged id outside (user namespace), so a
directory it must write has to belong to that id: ``chown_tree`` gives a
tree to it (podman's ``:U`` volume option).  The walk goes through
directory fds, never follows a symlink (it changes the link itself), never
crosses into another mount, and leaves alone a file with more than one
hard link (chowning it would also chown its other names, which may lie
outside the tree).
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state


def root_dir(layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(layout.lib_root, "volumes")


def data_dir(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> str:
    return os.path.join(root_dir(layout), name, "_data")


def owner(path: str) -> t.Optional[t.Tuple[int, int]]:
    """(uid, gid) of an existing directory, without following a symlink; None if it does not exist."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(errno.ENOTDIR, "not a directory", path)
    return info.st_uid, info.st_gid


def create(name: str, uid: int, gid: int, layout: state.Layout = state.DEFAULT_LAYOUT) -> None:
    """Make the named volume, its data directory owned by ``uid``:``gid`` (an existing one is kept)."""
    top = mounts.open_dir(os.path.join(root_dir(layout), name), create=True, mode=0o700)
    try:
        try:
            os.mkdir("_data", 0o755, dir_fd=top)
        except FileExistsError:
            return
        fd = os.open("_data", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o755)  # the umask must not narrow it
        finally:
            os.close(fd)
    finally:
        os.close(top)


def remove(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> None:
    mounts.remove_tree(os.path.join(root_dir(layout), name))
    try:
        os.rmdir(root_dir(layout))  # the last volume took the directory's reason to exist with it
    except OSError:
        pass


@dataclass
class ChownReport:
    changed: int = 0
    skipped_links: int = 0  # regular files with other hard links, left alone
    skipped_mounts: int = 0


def chown_tree(path: str, uid: int, gid: int) -> ChownReport:
    """Give ``path`` and everything below it to ``uid``:``gid``, safely (see the module docstring)."""
    report = ChownReport()
    found = mounts.open_dir(path)  # O_PATH, every component checked: reopened for reading and fchown
    try:
        top = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=found)
    finally:
        os.close(found)
    try:
        device = os.fstat(top).st_dev
        _chown_fd(top, uid, gid, report)
        _walk(top, device, uid, gid, report, depth=0)
    finally:
        os.close(top)
    return report


_MAX_DEPTH = 256


def _chown_fd(fd: int, uid: int, gid: int, report: ChownReport) -> None:
    info = os.fstat(fd)
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
        report.changed += 1


def _walk(dir_fd: int, device: int, uid: int, gid: int, report: ChownReport, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OSError(errno.ELOOP, "directories nested more than %d deep" % _MAX_DEPTH)
    for entry in os.scandir(dir_fd):
        info = entry.stat(follow_symlinks=False)
        if info.st_dev != device:
            report.skipped_mounts += 1
            continue
        if stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue  # gone, or swapped for a symlink meanwhile: never followed
                raise
            try:
                if os.fstat(child).st_dev != device:
                    report.skipped_mounts += 1
                    continue
                _chown_fd(child, uid, gid, report)
                _walk(child, device, uid, gid, report, depth + 1)
            finally:
                os.close(child)
            continue
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            report.skipped_links += 1
            continue
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.chown(entry.name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            report.changed += 1
