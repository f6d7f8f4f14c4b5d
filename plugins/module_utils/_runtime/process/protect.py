# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the container's filesystem after pivot_root.

Sysctls (written through procfs fds checked with fstatfs), masked paths
(a /dev/null checked to be char 1:3, CVE-2025-31133; directories get an
empty read-only tmpfs), read-only paths, the read-only root, the root's
propagation, and the working directory (resolved inside the root, no magic
links, no '..' out of it, getcwd checked: CVE-2024-21626).  Same order as
runc.  Everything raises StepFailure naming the step.
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.mounts import fd_path, mount_id_of
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.inroot import (
    StepFailure, _fail, locked_flags, resolve)
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.rootfs import RootfsPlan


PROC_ROOT_INO = 1  # fs/proc/root.c: the root directory of every procfs instance
_SYSCTL_RESOLVE = (libc.RESOLVE_BENEATH | libc.RESOLVE_NO_XDEV | libc.RESOLVE_NO_SYMLINKS
                   | libc.RESOLVE_NO_MAGICLINKS)


def write_sysctls(items: t.List[t.Tuple[str, bytes]]) -> None:
    """Write each sysctl through the container's own /proc mount, never through anything mounted on it.

    Being on procfs is not enough (CVE-2025-52881): a procfs file bound over
    another one (``/proc/sys/kernel/core_pattern`` over ``.../ip_forward``)
    is procfs too.  So /proc must be the root of a procfs instance, and the
    path below it is opened with openat2 RESOLVE_NO_XDEV (no mount crossed,
    a file covered by a mount included) and no symlink at all; kernels
    without openat2 get the same walk one component at a time, comparing
    each component's mount with /proc's.
    """
    if not items:
        return
    try:
        proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail("sysctl", exc, "/proc")
    try:
        if libc.fstatfs_type(proc) != libc.PROC_SUPER_MAGIC or os.fstat(proc).st_ino != PROC_ROOT_INO:
            raise StepFailure("sysctl", errno.EXDEV, "/proc is not the root of a procfs mount; refusing to write "
                              "sysctls through it")
        for path, value in items:
            _write_sysctl(proc, path, value)
    finally:
        os.close(proc)


def _write_sysctl(proc: int, path: str, value: bytes) -> None:
    key = path[len("/proc/sys/"):].replace("/", ".")
    try:
        fd = _open_sysctl(proc, path[len("/proc/"):])
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.ELOOP):
            raise StepFailure("sysctl", exc.errno, "%s: %s is covered by a mount or reached through a link, so it "
                              "may not be the sysctl it names; refusing to write it" % (key, path))
        raise _fail("sysctl", exc, key)
    try:
        os.write(fd, value)
    except OSError as exc:
        raise _fail("sysctl", exc, key)
    finally:
        os.close(fd)


def _open_sysctl(proc: int, relative: str) -> int:
    try:
        return libc.openat2(proc, relative, os.O_WRONLY, _SYSCTL_RESOLVE)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
    home = mount_id_of(proc)
    parts = relative.split("/")
    current = os.dup(proc)
    try:
        for name in parts[:-1]:
            step = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=current)
            os.close(current)
            current = step
            if mount_id_of(current) != home:
                raise OSError(errno.EXDEV, "a mount covers part of the path", relative)
        leaf = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
        try:
            if mount_id_of(leaf) != home:
                raise OSError(errno.EXDEV, "a mount covers the file", relative)
            return os.open(fd_path(leaf), os.O_WRONLY | os.O_CLOEXEC)  # that very inode, checked
        finally:
            os.close(leaf)
    finally:
        os.close(current)


def mask_and_protect(p: "RootfsPlan") -> None:
    """Masked paths, read-only paths, read-only root and root propagation, in runc's order."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if p.masked:
            _mask(root, p.masked)
        for path in p.readonly_paths:
            _readonly(root, path)
        if p.readonly:
            try:
                libc.mount(None, "/", None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | locked_flags(root))
            except OSError as exc:
                raise _fail("readonly rootfs", exc, "remount / read-only")
        if p.propagation is not None:
            try:
                libc.mount(None, "/", None, p.propagation)
            except OSError as exc:
                raise _fail("rootfs propagation", exc, "/")
    finally:
        os.close(root)


def _open_existing(root: int, path: str, step: str) -> t.Optional[int]:
    try:
        return resolve(root, path)
    except FileNotFoundError:
        return None  # nothing there to hide or protect (runc skips these too)
    except OSError as exc:
        raise _fail(step, exc, path)


def _mask(root: int, paths: t.List[str]) -> None:
    step = "masked paths"
    null = _open_existing(root, "/dev/null", step)
    if null is None:
        raise StepFailure(step, errno.ENOENT, "/dev/null is missing; masking needs the null device")
    try:
        info = os.fstat(null)
        if not stat.S_ISCHR(info.st_mode) or (os.major(info.st_rdev), os.minor(info.st_rdev)) != (1, 3):
            raise StepFailure(step, errno.ENODEV, "/dev/null is not the char device 1:3; refusing to mask with it")
        for path in paths:
            target = _open_existing(root, path, step)
            if target is None:
                continue
            try:
                if stat.S_ISDIR(os.fstat(target).st_mode):
                    libc.mount("tmpfs", fd_path(target), "tmpfs", libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV
                               | libc.MS_NOEXEC, "size=0,mode=0555")
                else:
                    libc.mount(fd_path(null), fd_path(target), None, libc.MS_BIND)
            except OSError as exc:
                raise _fail(step, exc, path)
            finally:
                os.close(target)
    finally:
        os.close(null)


def _readonly(root: int, path: str) -> None:
    step = "readonly paths"
    target = _open_existing(root, path, step)
    if target is None:
        return
    try:
        libc.mount(fd_path(target), fd_path(target), None, libc.MS_BIND | libc.MS_REC)
        top = resolve(root, path)
        try:
            libc.mount(None, fd_path(top), None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | locked_flags(top))
        finally:
            os.close(top)
    except OSError as exc:
        raise _fail(step, exc, path)
    finally:
        os.close(target)


def enter_cwd(cwd: str) -> None:
    """chdir to ``cwd`` resolved inside the root; refuse escapes and magic links, check getcwd."""
    step = "cwd"
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = resolve(root, cwd, clamp=False)
    except OSError as exc:
        raise _fail(step, exc, cwd)
    finally:
        os.close(root)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise StepFailure(step, errno.ENOTDIR, "%s is not a directory" % cwd)
        os.fchdir(fd)
        where = os.getcwd()
    except OSError as exc:
        raise _fail(step, exc, cwd)
    finally:
        os.close(fd)
    if not where.startswith("/"):
        raise StepFailure(step, errno.EXDEV, "%s resolves outside the container (%s)" % (cwd, where))
