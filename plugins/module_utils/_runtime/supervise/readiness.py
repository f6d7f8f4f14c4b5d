# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: readiness checks (wait_for) against a running container.

* ``port``: a TCP socket in LISTEN state on that port in the container's
  network namespace (read from /proc/PID/net/tcp and tcp6 of its init, which
  show that namespace's sockets; nothing is joined).
* ``file``: the path exists inside the container, as the container sees it:
  a forked child joins its mount namespace and then its user namespace (so
  it has the container root's privileges, never the host's), and resolves
  the path inside the root (openat2 RESOLVE_IN_ROOT, no /proc magic links,
  or the same rules walked by hand), without opening the file itself, and
  within a deadline.
* ``command``: the argv exits 0 when run inside the container, with the
  container's namespaces, cgroup, user, capabilities, no_new_privs and
  seccomp profile (through execution.py, as container_exec).
"""

from __future__ import annotations

import os
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import inroot
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


FILE_CHECK_TIMEOUT = 10.0  # a lookup the container can slow down (its own FUSE, say) is given up after this


def _exists_as_the_container(proc_dir: int, path: str) -> bool:
    """In a forked child: join the mount namespace, then the user namespace, and look ``path`` up inside."""
    # Everything is opened and compared first: once in its mount namespace, /proc is the container's.
    joins = [(kind, os.open("ns/" + kind, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_dir), os.stat("/proc/self/ns/" + kind))
             for kind in ("mnt", "user")]
    for kind, fd, ours in joins:
        try:
            theirs = os.fstat(fd)
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):  # user: only when it has its own
                if kind == "user":
                    os.setgroups([])  # host root's groups would open group-readable host files
                libc.setns(fd, libc.NAMESPACE_FLAGS[kind], context="ns/" + kind)
                if kind == "user":  # become its root: still host uid 0 until now, the owner of host files
                    os.setresgid(0, 0, 0)
                    os.setresuid(0, 0, 0)
        finally:
            os.close(fd)
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(inroot.resolve(root, path))
        return True
    except OSError:
        return False
    finally:
        os.close(root)


def file_exists(pid: int, path: str, timeout: float = FILE_CHECK_TIMEOUT) -> bool:
    """Whether ``path`` exists inside the container whose init is ``pid``, as its root would see it."""
    try:
        proc_dir = os.open("/proc/%d" % pid, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return bool(forked.call_in_child(lambda: _exists_as_the_container(proc_dir, path), timeout=timeout))
    except (OSError, forked.ChildError):
        return False
    finally:
        os.close(proc_dir)


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
