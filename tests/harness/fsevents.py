# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An independent witness that nobody opened, read or wrote a file: inotify, read by the test itself."""

from __future__ import annotations

import ctypes
import os
import struct
import typing as t

IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_OPEN = 0x1, 0x2, 0x4, 0x8, 0x20
IN_NONBLOCK = os.O_NONBLOCK
NAMES = {IN_ACCESS: "access", IN_MODIFY: "modify", IN_ATTRIB: "attrib", IN_CLOSE_WRITE: "close_write",
         IN_OPEN: "open"}


class Watch:
    """Every open, read, write and attribute change of ``paths`` from now on (inotify sees all mount namespaces)."""

    def __init__(self, paths: t.Iterable[str]) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.paths: t.Dict[int, str] = {}
        for path in paths:
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), IN_ACCESS | IN_MODIFY | IN_ATTRIB
                                              | IN_CLOSE_WRITE | IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), "inotify_add_watch", path)
            self.paths[wd] = path

    def events(self) -> t.List[t.Tuple[str, str]]:
        """(path, event) pairs seen so far."""
        found = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                for bit, name in NAMES.items():
                    if mask & bit:
                        found.append((self.paths.get(wd, "?"), name))

    def close(self) -> None:
        os.close(self.fd)
