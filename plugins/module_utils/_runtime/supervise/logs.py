# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the per-container log file, its size cap and its tail.

The container's stdout and stderr are the log file itself, opened O_APPEND:
no process sits between the container and its log, so a supervisor crash or
upgrade can never block the container on a full pipe or kill it with
SIGPIPE.  The supervisor caps the size by copy-and-truncate: when the file
passes ``max_size`` its content moves to ``NAME.log.1`` (replacing the older
one) and the file is truncated in place; O_APPEND writers simply continue at
the new end.  Lines written between the copy and the truncate are lost, as
with logrotate's copytruncate; the check runs every second, so a container
writing faster than the cap per second can overshoot it until the next check.
"""

from __future__ import annotations

import os
import typing as t

OLD_SUFFIX = ".1"
_COPY_CHUNK = 1 << 20


def open_for_container(path: str) -> int:
    """The fd to hand the container as stdout and stderr (append-only, created 0600)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def append_line(path: str, text: str) -> None:
    """A line from the supervisor itself (restarts, launch errors), marked so it stands out."""
    fd = open_for_container(path)
    try:
        os.write(fd, ("[kernelbox] %s\n" % text).encode("utf-8", "replace"))
    finally:
        os.close(fd)


def rotate_if_needed(path: str, max_size: int) -> bool:
    """Copy-truncate ``path`` into ``path.1`` when it is larger than ``max_size``; True if it did."""
    if max_size <= 0:
        return False
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return False
    if size <= max_size:
        return False
    old = path + OLD_SUFFIX
    temp = old + ".tmp"
    src = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        dst = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            while True:
                chunk = os.read(src, _COPY_CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
        finally:
            os.close(dst)
        os.rename(temp, old)
        os.ftruncate(src, 0)
    finally:
        os.close(src)
    return True


def tail(path: str, lines: int = 20, max_bytes: int = 64 << 10) -> t.List[str]:
    """The last ``lines`` lines of the log (reaching into ``path.1`` when the current file is short)."""
    if lines <= 0:
        return []
    collected: t.List[str] = []
    for candidate in (path, path + OLD_SUFFIX):
        chunk = _read_end(candidate, max_bytes)
        if chunk is None:
            continue
        text = chunk.decode("utf-8", "replace")
        found = text.split("\n")
        if found and found[-1] == "":
            found.pop()
        collected = found + collected
        if len(collected) >= lines:
            break
    return collected[-lines:]


def _read_end(path: str, max_bytes: int) -> t.Optional[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - max_bytes)
        data = os.pread(fd, size - start, start)
    finally:
        os.close(fd)
    if start > 0:  # drop the partial first line
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    return data


def remove(path: str) -> None:
    for candidate in (path, path + OLD_SUFFIX, path + OLD_SUFFIX + ".tmp"):
        try:
            os.unlink(candidate)
        except FileNotFoundError:
            pass
