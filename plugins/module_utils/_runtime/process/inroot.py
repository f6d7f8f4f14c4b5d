# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: paths inside a container root, resolved safely.

``resolve(root_fd, path)`` gives an O_PATH fd for ``path`` resolved *inside*
the tree at ``root_fd``: symlinks are re-resolved relative to that root, so
nothing leads out of it (CVE-2021-30465), procfs magic links are refused
(CVE-2024-21626), and ``strict`` refuses every symlink (for /proc, /sys and
/dev).  Mounts then go through /proc/self/fd/N of the fd, never a path
string.  ``StepFailure`` is how every launch step reports its failure.

_kernel/mounts.py resolves host paths (no symlink at all, from "/") and
opens existing paths in a root with openat2; this module adds what the
launcher needs on top: creating missing mount targets along the way,
refusing a '..' that climbs out (cwd), and a fallback walk for kernels
without openat2.
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINKS = 40

# statvfs f_flag bits -> mount flags: what a remount must repeat, or the kernel refuses to
# clear flags that are locked in a user namespace.
_ST_TO_MS = ((1, libc.MS_RDONLY), (2, libc.MS_NOSUID), (4, libc.MS_NODEV), (8, libc.MS_NOEXEC),
             (1024, libc.MS_NOATIME), (2048, libc.MS_NODIRATIME), (4096, libc.MS_RELATIME),
             (0x2000, libc.MS_NOSYMFOLLOW))

_MS_TO_ATTR = ((libc.MS_RDONLY, libc.MOUNT_ATTR_RDONLY), (libc.MS_NOSUID, libc.MOUNT_ATTR_NOSUID),
               (libc.MS_NODEV, libc.MOUNT_ATTR_NODEV), (libc.MS_NOEXEC, libc.MOUNT_ATTR_NOEXEC))


class StepFailure(Exception):
    """A launch step failed: ``step`` for the user, ``errno`` and a detail naming the object."""

    def __init__(self, step: str, err: int, detail: str) -> None:
        super().__init__("%s: %s [errno %d]" % (step, detail, err))
        self.step = step
        self.errno = err
        self.detail = detail
        self.status_fd: t.Optional[int] = None


def _fail(step: str, exc: OSError, what: str) -> StepFailure:
    reason = str(exc.strerror or exc)
    # Our own OSErrors often name the path already: say it once.
    return StepFailure(step, exc.errno or 0, reason if reason.startswith(what) else "%s: %s" % (what, reason))


# --- safe resolution -------------------------------------------------------------

_OPENAT2 = [True]  # cleared once the kernel says ENOSYS (Linux < 5.6)


def resolve(root_fd: int, path: str, create: t.Optional[str] = None, strict: bool = False,
            clamp: bool = True, created: t.Optional[t.List[str]] = None) -> int:
    """An O_PATH fd for ``path`` inside the tree at ``root_fd``; the caller closes it.

    Symlinks are read and resolved again relative to the root, so nothing can
    lead out of it.  ``strict`` refuses any symlink on the way; ``clamp=False``
    refuses a '..' that would climb above the root instead of staying at it.
    ``create`` ('dir' or 'file') makes missing components (directories, and
    the last one as a file when 'file'), and appends each path it made to
    ``created`` (root-relative, absolute form, parents first).  Procfs magic
    links are refused.

    The kernel does the same in one call with openat2(RESOLVE_IN_ROOT |
    RESOLVE_NO_MAGICLINKS), used when it can; the component walk below is the
    fallback, and the only way for ``create`` and ``clamp=False``.
    """
    if clamp and _OPENAT2[0]:
        resolve_flags = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
        if strict:
            resolve_flags |= libc.RESOLVE_NO_SYMLINKS
        try:
            return libc.openat2(root_fd, path, os.O_PATH, resolve_flags)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                _OPENAT2[0] = False
            elif exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, "%s: a component is a %s, which is not allowed here"
                              % (path, "symlink" if strict else "magic link or a symlink loop"), path)
            elif not (exc.errno == errno.ENOENT and create):
                raise
    return _walk(root_fd, path, create, strict, clamp, created)


def _walk(root_fd: int, path: str, create: t.Optional[str], strict: bool, clamp: bool,
          created: t.Optional[t.List[str]] = None) -> int:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    stack = [os.dup(root_fd)]
    names: t.List[str] = []  # the path of stack[-1] inside the root
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    names.pop()
                elif not clamp:
                    raise OSError(errno.EXDEV, "%s climbs above the container's root" % path, path)
                continue
            fd, made = _open_component(stack[-1], name, create, last=not parts)
            if made and created is not None:
                created.append("/" + "/".join(names + [name]))
            info = os.fstat(fd)
            if stat.S_ISLNK(info.st_mode):
                target = _read_link(fd, path, strict)
                os.close(fd)
                links += 1
                if links > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many symlinks resolving %s" % path, path)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                    del names[:]
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            if parts and not stat.S_ISDIR(info.st_mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, "a component of %s is not a directory" % path, path)
            stack.append(fd)
            names.append(name)
        result = stack.pop()
        return result
    finally:
        for fd in stack:
            os.close(fd)


def _open_component(dir_fd: int, name: str, create: t.Optional[str], last: bool) -> t.Tuple[int, bool]:
    """An O_PATH fd of ``name``, made first when missing and ``create`` says so; and whether it was made."""
    try:
        return os.open(name, _O_PATH, dir_fd=dir_fd), False
    except FileNotFoundError:
        if create is None:
            raise
    made = True
    if last and create == "file":
        try:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                             dir_fd=dir_fd))
        except FileExistsError:
            made = False
    else:
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            made = False
    return os.open(name, _O_PATH, dir_fd=dir_fd), made


def _read_link(fd: int, path: str, strict: bool) -> str:
    if strict:
        raise OSError(errno.ELOOP, "%s: a component is a symlink, which is not allowed here" % path, path)
    target = os.readlink("", dir_fd=fd)
    if libc.fstatfs_type(fd) == libc.PROC_SUPER_MAGIC and not _is_plain_proc_link(target):
        raise OSError(errno.ELOOP, "%s goes through a /proc magic link (to %s), which could lead out of the "
                      "container" % (path, target), path)
    return target


def _is_plain_proc_link(target: str) -> bool:
    # /proc/self -> "123", /proc/mounts -> "self/mounts" are ordinary symlinks; the magic ones
    # (fd/N, cwd, root, exe, ns/*) read as an absolute path or as "pipe:[123]", "anon_inode:[...]"
    return not target.startswith("/") and ":" not in target.split("/")[0]


def locked_flags(fd: int) -> int:
    """The mount flags the mount under ``fd`` has now, as a remount must repeat them."""
    current = os.fstatvfs(fd).f_flag
    flags = 0
    for st_bit, ms_flag in _ST_TO_MS:
        if current & st_bit:
            flags |= ms_flag
    return flags


def _new_file(dir_fd: int, name: str) -> t.Optional[int]:
    """O_PATH fd of a regular file just created as ``name`` (the common case on a fresh tmpfs), else None."""
    if "/" in name:
        return None
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd))
    except FileExistsError:
        return None
    return os.open(name, _O_PATH, dir_fd=dir_fd)
