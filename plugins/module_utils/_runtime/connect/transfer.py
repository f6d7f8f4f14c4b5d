# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: copying a file into or out of a container, from inside it.

``receive`` and ``send`` run as ``execution.Request.inside``: in a process
that joined the container like any exec (its namespaces, chrooted to its
root, its user, capabilities, no_new_privs and seccomp filter, its cgroup),
that never executes anything of the container's and stays non-dumpable.  So
a file is written or read exactly as the container's own process user could,
owned by that user, and a path is resolved in the container's root twice
over: the process's root *is* that root, and ``openat2(RESOLVE_IN_ROOT |
RESOLVE_NO_MAGICLINKS)`` keeps even a /proc magic link planted in the path
(``/proc/self/fd/0``, ``/proc/1/root``) from leading anywhere else.  Only
regular files are opened (a FIFO or a device could block or never end), and
a fetch stops at its size limit.

The host side of the copy is the process's stdin (``receive``) or stdout
(``send``): a host file or pipe the helper opened.  Errors go to stderr as
one line, and the exit code says which kind (``EXIT_*``).
"""

from __future__ import annotations

import errno
import os
import stat
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import inroot
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

EXIT_OK = 0
EXIT_MISSING = 2          # the path (or a directory on the way) does not exist
EXIT_REFUSED = 3          # not a regular file, a magic link, a loop, no permission...
EXIT_TOO_LARGE = 4        # fetch: over the size limit
EXIT_IO = 5               # reading or writing failed midway
CHUNK = 1 << 20
_RESOLVE = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS


def open_in_root(path: str, flags: int, mode: int = 0) -> int:
    """Open ``path`` inside the process's root; only a regular file is returned (blocking I/O)."""
    flags |= os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC  # a FIFO must not block the open
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = libc.openat2(root, path, flags, _RESOLVE, mode)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:  # openat2 is missing (Linux < 5.6), or the container's seccomp denies it
                raise
            fd = _open_walking(root, path, flags, mode)
    finally:
        os.close(root)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (%s)" % _kind(info.st_mode), path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_walking(root: int, path: str, flags: int, mode: int) -> int:
    """The same without openat2: the directory resolved inside the root, the last component not followed."""
    parent_path, _sep, name = path.rstrip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise OSError(errno.EISDIR, "not a file name", path)
    parent = inroot.resolve(root, parent_path or "/")
    try:
        return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=parent)
    finally:
        os.close(parent)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "mode %o" % stat.S_IFMT(mode)


def _report(stderr: int, code: int, text: str) -> int:
    try:
        os.write(stderr, text.encode("utf-8", "replace")[:4096] + b"\n")
    except OSError:
        pass
    return code


def _exit_for(exc: OSError) -> int:
    return EXIT_MISSING if exc.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_REFUSED


def _describe(exc: OSError, path: str) -> str:
    return "%s: %s" % (path, exc.strerror or exc)


def _copy(source: int, target: int, limit: t.Optional[int]) -> int:
    """Copy until EOF; returns the bytes copied, or -1 once more than ``limit`` bytes were offered."""
    copied = 0
    while True:
        want = CHUNK if limit is None else min(CHUNK, limit + 1 - copied)
        chunk = os.read(source, want)
        if not chunk:
            return copied
        copied += len(chunk)
        if limit is not None and copied > limit:
            return -1
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view):]


def receive(dest: str, mode: int, stdin: int, _stdout: int, stderr: int) -> int:
    """put_file, inside: write what stdin holds to ``dest`` (created with ``mode`` or truncated)."""
    try:
        fd = open_in_root(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as exc:
        return _report(stderr, _exit_for(exc), _describe(exc, dest))
    try:
        _copy(stdin, fd, None)
    except OSError as exc:
        return _report(stderr, EXIT_IO, "writing %s" % _describe(exc, dest))
    finally:
        os.close(fd)
    return EXIT_OK


def send(src: str, limit: int, _stdin: int, stdout: int, stderr: int) -> int:
    """fetch_file, inside: copy ``src`` to stdout, refusing more than ``limit`` bytes (it may grow meanwhile)."""
    try:
        fd = open_in_root(src, os.O_RDONLY)
    except OSError as exc:
        return _report(stderr, _exit_for(exc), _describe(exc, src))
    try:
        if _copy(fd, stdout, limit) < 0:
            return _report(stderr, EXIT_TOO_LARGE, "%s is larger than the limit of %d bytes" % (src, limit))
    except OSError as exc:
        return _report(stderr, EXIT_IO, "reading %s" % _describe(exc, src))
    finally:
        os.close(fd)
    return EXIT_OK


# --- read from the host side: the container's /etc/passwd, for HOME -------------------------------

PASSWD_LIMIT = 1 << 20


def home_of(passwd: str, uid: int) -> t.Optional[str]:
    """The home directory of ``uid`` in /etc/passwd text (the first entry wins, as getpwuid's does)."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[2].isdigit() and int(fields[2]) == uid:
            home = fields[5]
            return home if home.startswith("/") and "\0" not in home else None
    return None


def read_in_root(root_fd: int, path: str, limit: int = PASSWD_LIMIT) -> t.Optional[bytes]:
    """A small regular file inside the root at ``root_fd`` (an O_PATH fd of /proc/PID/root), read from the host.

    Resolved inside that root only (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), opened non-blocking and checked to
    be a regular file, and read at most ``limit`` bytes: None when it is missing, anything else, or larger.
    """
    try:
        fd = libc.openat2(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, _RESOLVE)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(CHUNK, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
