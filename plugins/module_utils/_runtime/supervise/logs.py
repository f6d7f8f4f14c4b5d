# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the per-container log, a pipe the supervisor drains into a capped file.

The container's stdout and stderr are a FIFO (``log.fifo`` in the
container's run directory), never a host file: ftruncate, fallocate, pwrite,
lseek and O_APPEND games all fail on a pipe, so nothing the container does
to its fds can make a host file sparse, huge or written far out (as
conmon and containerd's shim do, the runtime holds the file, the container
holds a pipe).

* The container's end is opened O_RDWR, so the container itself counts as a
  reader: while no supervisor reads (it crashed, or re-executes for an
  upgrade) writes fill the pipe (1 MiB) and then block, and never fail with
  EPIPE or kill with SIGPIPE.  The next supervisor opens the FIFO again by
  path and finds what was buffered.
* The supervisor's ``Sink`` reads at most ``CHUNK`` bytes per container per
  turn of its loop, so a container that floods its output cannot starve the
  others, and memory stays one chunk.  Past ``max_size`` the file is renamed
  to ``NAME.log.1`` (replacing the older one) and a new one is started:
  rotation copies nothing.
* A container started by an older supervisor still holds the log file itself
  (no FIFO next to it); ``rotate_legacy`` caps those, copying at most
  ``max_size`` bytes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import typing as t

OLD_SUFFIX = ".1"
FIFO_NAME = "log.fifo"
CHUNK = 1 << 16                 # read per container per loop turn
PIPE_SIZE = 1 << 20             # what a container may write while no supervisor reads
_F_SETPIPE_SZ = 1031            # include/uapi/linux/fcntl.h (F_LINUX_SPECIFIC_BASE + 7)
_COPY_CHUNK = 1 << 20


def fifo_path(run_dir: str) -> str:
    return os.path.join(run_dir, FIFO_NAME)


def make_fifo(path: str) -> None:
    """A fresh FIFO at ``path`` (mode 0600): each run of a container gets a pipe of its own."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.mkfifo(path, 0o600)


def _open_fifo(path: str, flags: int) -> int:
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a FIFO", path)
    return fd


def open_for_container(path: str) -> int:
    """The fd to hand the container as stdout and stderr: the FIFO, read-write (see the module docstring)."""
    fd = _open_fifo(path, os.O_RDWR)
    try:
        with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as handle:
            size = min(PIPE_SIZE, int(handle.read()))
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except (OSError, ValueError):
        pass  # the default 64 KiB pipe works too; a supervisor gap then blocks the container sooner
    return fd


def _line(text: str) -> bytes:
    return ("[kernelbox] %s\n" % text).encode("utf-8", "replace")


def _open_log(path: str) -> int:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def append_output(path: str, data: bytes) -> None:
    """Output the runtime already holds (a job's bounded streams, read from its pipes) appended to the log."""
    fd = _open_log(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def append_line(path: str, text: str) -> None:
    """A line from the supervisor itself (restarts, launch errors), marked so it stands out."""
    fd = _open_log(path)
    try:
        os.write(fd, _line(text))
    finally:
        os.close(fd)


class Sink:
    """The supervisor's end of one container's log: drains the FIFO into the capped file."""

    def __init__(self, log_path: str, fifo: str, max_size: int) -> None:
        self.log_path = log_path
        self.max_size = max_size
        self.reader = _open_fifo(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.out = -1
        self.size = 0
        self.ended = False  # EOF: every process holding the container's end has exited

    def fileno(self) -> int:
        return self.reader

    def pump(self) -> bool:
        """Move one chunk from the pipe to the file; False once the pipe is empty (or has no writer left)."""
        try:
            data = os.read(self.reader, CHUNK)
        except BlockingIOError:
            return False
        if not data:
            self.ended = True
            return False
        self.write(data)
        return True

    def drain(self, limit: int = 2 * PIPE_SIZE) -> None:
        """What is left in the pipe after the container's exit (bounded: the pipe holds at most PIPE_SIZE)."""
        moved = 0
        while moved < limit and self.pump():
            moved += CHUNK

    def note(self, text: str) -> None:
        self.write(_line(text))

    def write(self, data: bytes) -> None:
        if self.out < 0:
            self.out = _open_log(self.log_path)
            self.size = os.fstat(self.out).st_size
        if 0 < self.max_size < self.size + len(data) and self.size > 0:
            self._rotate()
        view = memoryview(data)
        while view:
            view = view[os.write(self.out, view):]
        self.size += len(data)

    def _rotate(self) -> None:
        """Rename the full file to NAME.log.1 and start a new one: nothing is copied."""
        os.close(self.out)
        self.out = -1
        os.rename(self.log_path, self.log_path + OLD_SUFFIX)
        self.out = _open_log(self.log_path)
        self.size = 0

    def set_max_size(self, max_size: int) -> None:
        self.max_size = max_size

    def close(self) -> None:
        for fd in (self.reader, self.out):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.reader = self.out = -1


def rotate_legacy(path: str, max_size: int) -> bool:
    """Cap a log file a container still holds itself (started by an older supervisor); True if it did.

    The file may be sparse or huge (the container can ftruncate it): only its
    last ``max_size`` bytes are copied to ``path.1``, then it is truncated.
    """
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
            offset = max(0, os.fstat(src).st_size - max_size)
            left = max_size
            while left > 0:
                chunk = os.pread(src, min(_COPY_CHUNK, left), offset)
                if not chunk:
                    break
                offset += len(chunk)
                left -= len(chunk)
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
