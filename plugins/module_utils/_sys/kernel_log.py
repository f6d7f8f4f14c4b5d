# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what the kernel logged about our own last call.

Many syscalls only return an errno, and the reason goes to the kernel log
("overlayfs: workdir and upperdir must reside under the same mount").  Open a
reader *before* the call, positioned at the end of /dev/kmsg, and read what was
added *after* it fails.  Other activity on the host may log meanwhile, so
callers filter by a prefix.  Without /dev/kmsg (a container, no privilege) the
reader is None and nothing is read.
"""

from __future__ import annotations

import errno
import os
import typing as t


def open_reader() -> t.Optional[int]:
    """A non-blocking /dev/kmsg fd at the end of the log, or None."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        os.close(fd)
        return None
    return fd


def read_new(fd: t.Optional[int], prefix: str, limit: int = 256) -> t.List[str]:
    """Messages logged since ``open_reader`` that start with ``prefix``; closes ``fd``."""
    if fd is None:
        return []
    lines = []
    try:
        for _record in range(limit):
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten meanwhile: keep reading
                    continue
                break
            # "priority,sequence,timestamp,flags;message\n" followed by continuation lines
            message = record.split(";", 1)[-1].splitlines()[0] if ";" in record else record.strip()
            if message.startswith(prefix):
                lines.append(message)
    finally:
        os.close(fd)
    return lines
