# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: a foreground ``run`` or ``exec`` with a terminal.

Without --console-socket and in the foreground, the runtime is the console
socket's other end itself: a socketpair stands in for it, the master arrives
over it, and ``relay`` copies the caller's stdin to the master and the master
to the caller's stdout until the container side hangs up.  When stdin is a
terminal it is put in raw mode for the duration (and restored), and its size
follows SIGWINCH.  Output is copied in bounded chunks, so a container that
writes without end costs memory only for one chunk.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import termios
import tty
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import console

CHUNK = 65536


def socket_pair() -> t.Tuple[socket.socket, int]:
    """(our end, the fd to give as the console socket)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return ours, theirs.detach()


def size_of(fd: int) -> t.Optional[t.Tuple[int, int]]:
    """(rows, columns) of the terminal ``fd``, or None."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.lines, size.columns


def relay_from(ours: socket.socket) -> None:
    """A foreground run's own console: take the terminal's master from our end of socket_pair(), then relay it."""
    master, _name = console.recv_master(ours, timeout=30)
    ours.close()
    try:
        relay(master)
    finally:
        os.close(master)


def relay(master: int, stdin: int = 0, stdout: int = 1) -> None:
    """Copy both ways until the master reports the slave side closed (EIO or EOF)."""
    saved = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin)
        size = size_of(stdin)
        if size is not None:
            console.set_size(master, *size)

    def resize(_signum: int, _frame: t.Any) -> None:
        size = size_of(stdin)
        if size is not None:
            console.set_size(master, *size)

    previous = signal.signal(signal.SIGWINCH, resize)
    readers = [master, stdin]
    try:
        while True:
            try:
                ready = select.select(readers, [], [])[0]
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, CHUNK)
                except OSError as exc:
                    if exc.errno == errno.EIO:
                        return
                    raise
                if not data:
                    return
                _write_all(stdout, data)
            if stdin in ready:
                data = os.read(stdin, CHUNK)
                if data:
                    _write_all(master, data)
                else:
                    readers.remove(stdin)
                    _write_all(master, b"\x04")  # end of input, as a terminal user types it
    finally:
        signal.signal(signal.SIGWINCH, previous)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
