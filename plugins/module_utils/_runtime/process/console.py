# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a container's terminal, and the console socket protocol.

With ``process.terminal`` the container's process gets a pseudoterminal made in
the container's own devpts instance (``/dev/pts/ptmx`` inside its root, checked
to be the ptmx node of a devpts filesystem): the slave becomes its stdin,
stdout, stderr and controlling terminal and is bound onto ``/dev/console``, and
the master goes to the caller over the console socket (runtime.md: an AF_UNIX
socket; the master fd travels as SCM_RIGHTS ancillary data, the message is the
slave's path inside the container, as runc sends it).

``allocate(root_fd)`` runs in the container before pivot_root (no process of
the container runs yet, so nothing can swap the nodes); ``send_master`` and
``recv_master`` are the two ends of the socket.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import stat
import struct
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

# include/uapi/asm-generic/ioctls.h
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
PTMX = (5, 2)
MAX_MESSAGE = 4096


def _check_ptmx(fd: int) -> None:
    info = os.fstat(fd)
    if not stat.S_ISCHR(info.st_mode) or (os.major(info.st_rdev), os.minor(info.st_rdev)) != PTMX:
        raise OSError(errno.ENODEV, "/dev/pts/ptmx is not the ptmx device 5:2")
    if libc.fstatfs_type(fd) != libc.DEVPTS_SUPER_MAGIC:
        raise OSError(errno.ENODEV, "/dev/pts/ptmx is not on a devpts filesystem")


def open_pair(ptmx_path: str) -> t.Tuple[int, int, str]:
    """(master, slave, slave name) from the ptmx at ``ptmx_path`` (a path with no symlink in it)."""
    master = os.open(ptmx_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        _check_ptmx(master)
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, struct.pack("I", 0)))[0]
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave, "/dev/pts/%d" % number


def set_size(fd: int, height: int, width: int) -> None:
    fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def make_controlling(slave: int) -> None:
    """A new session whose controlling terminal is ``slave`` (in the process that will exec)."""
    os.setsid()
    fcntl.ioctl(slave, TIOCSCTTY, 0)


def send_master(sock_fd: int, master: int, name: str) -> None:
    with socket.socket(fileno=os.dup(sock_fd)) as sock:
        sock.sendmsg([name.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])


def recv_master(sock: socket.socket, timeout: t.Optional[float] = None) -> t.Tuple[int, str]:
    """(master fd, slave name) from a console socket connection; extra fds sent along are closed."""
    sock.settimeout(timeout)
    fds = array.array("i")
    message, ancillary, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    if not fds:
        raise OSError(errno.EBADMSG, "the console socket message carried no file descriptor")
    for extra in fds[1:]:
        os.close(extra)
    return fds[0], message.decode("utf-8", "replace")


def connect(path: str) -> int:
    """A connected AF_UNIX stream socket to ``path`` (the --console-socket), as a plain fd."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock.detach()
