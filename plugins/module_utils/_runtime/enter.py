# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: run a command inside a running container (wait_for.command).

The process joins the container's cgroup and every namespace its init does
not share with us (one setns on a pidfd, so the kernel orders them), forks
to be inside the PID namespace, and then takes exactly the container's
confinement from its spec (confine.py, as the launcher does): user and
groups, capabilities, rlimits, no_new_privs and the seccomp filter.  It
makes itself non-dumpable before entering (CVE-2019-5736: a process inside
must not open /proc/<joiner>/exe, the host's Python).  stdin, stdout and
stderr are /dev/null: this is a readiness probe, its exit status is what
counts.  The ``container_exec`` module (issue 6) can grow from here.
"""

from __future__ import annotations

import os
import signal
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import confine, state
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.rootfs import StepFailure
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

# OCI namespace type -> (clone flag, /proc/PID/ns name)
_NAMESPACES = (("user", libc.CLONE_NEWUSER, "user"), ("mount", libc.CLONE_NEWNS, "mnt"),
               ("pid", libc.CLONE_NEWPID, "pid"), ("network", libc.CLONE_NEWNET, "net"),
               ("ipc", libc.CLONE_NEWIPC, "ipc"), ("uts", libc.CLONE_NEWUTS, "uts"),
               ("cgroup", libc.CLONE_NEWCGROUP, "cgroup"), ("time", libc.CLONE_NEWTIME, "time"))


def _flags_to_join(pid: int) -> int:
    """Every namespace of ``pid`` that differs from ours (joining one's own user namespace is EINVAL)."""
    flags = 0
    for _oci, flag, name in _NAMESPACES:
        try:
            theirs = os.stat("/proc/%d/ns/%s" % (pid, name)).st_ino
            ours = os.stat("/proc/self/ns/%s" % name).st_ino
        except FileNotFoundError:
            continue
        if theirs != ours:
            flags |= flag
    return flags


def _cgroup_procs(pid: int) -> t.Optional[str]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
    relative = cgroup.cgroup_of_pid(pid)
    if relative is None:
        return None
    return os.path.join(cgroup.find_hierarchy().mount, relative, "cgroup.procs")


def run(process: state.ProcessId, spec: t.Any, argv: t.Sequence[str], timeout: float,
        cwd: t.Optional[str] = None) -> int:
    """Run ``argv`` inside the container whose init is ``process``; its exit status (-1: could not run).

    A probe still running after ``timeout`` seconds is killed (SIGKILL) and counts as failed.
    """
    proc_spec = spec.process.__class__(**{f: getattr(spec.process, f) for f in spec.process.__dataclass_fields__})
    proc_spec.args = list(argv)
    prepared = confine.prepare(proc_spec, spec.linux.seccomp)
    pidfd = process.pidfd()
    if pidfd is None:
        return -1
    procs = _cgroup_procs(process.pid)
    flags = _flags_to_join(process.pid)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # never returns
        status = 126
        try:
            os.close(read_end)
            null = os.open("/dev/null", os.O_RDWR)
            libc.set_dumpable(False)
            if procs:
                with open(procs, "w") as handle:
                    handle.write("0")
            libc.setns(pidfd, flags, context="pid %d" % process.pid)
            grandchild = os.fork()
            if grandchild == 0:
                try:
                    os.chdir(cwd or spec.process.cwd or "/")
                    confine.confine(prepared)
                    confine.execute(prepared, [null, null, null], write_end)
                except (StepFailure, OSError):
                    pass
                os._exit(127)
            os.write(write_end, b"%d\n" % grandchild)
            _pid, wait_status = os.waitpid(grandchild, 0)
            status = os.waitstatus_to_exitcode(wait_status)
            status = status if status >= 0 else 128 - status
        except BaseException:  # the child must never unwind into the module's code
            status = 126
        finally:
            os._exit(status & 0xFF)
    os.close(write_end)
    os.close(pidfd)
    deadline = time.monotonic() + timeout
    inner = None
    try:
        while True:
            pid, wait_status = os.waitpid(child, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(wait_status)
            if inner is None:
                try:
                    data = os.read(read_end, 32) if _readable(read_end) else b""
                    inner = int(data.split()[0]) if data.strip() else None
                except (OSError, ValueError, IndexError):
                    inner = None
            if time.monotonic() >= deadline:
                for victim in ([inner] if inner else []) + [child]:
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                os.waitpid(child, 0)
                return -1
            time.sleep(0.01)
    finally:
        os.close(read_end)


def _readable(fd: int) -> bool:
    import select
    return bool(select.select([fd], [], [], 0)[0])
