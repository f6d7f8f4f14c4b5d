# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: interface flags through the classic ioctls, no netlink library.

The launcher brings up ``lo`` in a container's new network namespace from
inside it, right after ``unshare``, where importing pyroute2 would cost more
than the whole launch: one datagram socket and two ioctls do it.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct

# include/uapi/linux/sockios.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1  # include/uapi/linux/if.h

_IFREQ_SIZE = 40  # struct ifreq on 64-bit and 32-bit ABIs: 16-byte name + a 24-byte union
_IFNAMSIZ = 16


def _ifreq(name: str, flags: int = 0) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= _IFNAMSIZ:
        raise OSError(errno.EINVAL, "interface name %r is not valid" % name)
    return struct.pack("16sH", raw, flags).ljust(_IFREQ_SIZE, b"\0")


def link_flags(name: str) -> int:
    """The interface's flags (IFF_*) in the caller's network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        reply = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _ifreq(name))
    return struct.unpack_from("16sH", reply)[1]


def link_up(name: str = "lo") -> bool:
    """Set IFF_UP on ``name`` in the caller's network namespace; False if it was up already."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _ifreq(name)))[1]
        if flags & IFF_UP:
            return False
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, _ifreq(name, flags | IFF_UP))
    return True
