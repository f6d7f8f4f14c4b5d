# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: readiness checks (wait_for) against a running container.

* ``port``: a TCP socket in LISTEN state on that port in the container's
  network namespace (read from /proc/PID/net/tcp and tcp6 of its init, which
  show that namespace's sockets; nothing is joined).
* ``file``: the path exists inside the container, resolved in its mount
  namespace (a forked child joins it), so symlinks resolve as the container
  sees them.
* ``command``: the argv exits 0 when run inside the container, with the
  container's namespaces, cgroup, user, capabilities, no_new_privs and
  seccomp profile (through execution.py, as container_exec).
"""

from __future__ import annotations

import os
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import forked, libc, procfs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError


def port_listening(pid: int, port: int) -> bool:
    ports: t.Set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, name), encoding="ascii", errors="replace") as handle:
                ports |= procfs.listening_tcp_ports(handle.read())
        except FileNotFoundError:
            continue
    return port in ports


def _exists_in_mount_ns(pid: int, path: str) -> bool:
    fd = os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(fd, libc.CLONE_NEWNS, context="/proc/%d/ns/mnt" % pid)
    finally:
        os.close(fd)
    return os.path.exists(path)


def file_exists(pid: int, path: str) -> bool:
    """Whether ``path`` exists in the container's mount namespace (checked in a forked child)."""
    try:
        return bool(forked.call_in_child(lambda: _exists_in_mount_ns(pid, path)))
    except OSError:
        return False


class NotReady(KernelboxError):
    """The check did not pass in time, or the container exited while waiting."""


def wait(describe: str, check: t.Callable[[float], bool], process: state.ProcessId, timeout: float,
         interval: float = 0.2) -> float:
    """Poll ``check(remaining_seconds)`` until it passes; returns the seconds it took.

    Raises NotReady on timeout, or at once when the container's init exits.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        remaining = deadline - time.monotonic()
        if check(max(remaining, 0.1)):
            return time.monotonic() - start
        if not process.alive():
            raise NotReady("wait_for: the container exited while waiting for %s" % describe)
        if time.monotonic() >= deadline:
            raise NotReady("wait_for: %s was not ready within %gs" % (describe, timeout))
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
