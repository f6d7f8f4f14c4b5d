# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: TEMPORARY stand-ins for launch.start() and the cgroup library.

Deleted once branches ``launch`` and ``cgroup`` are merged: a plain fork +
chroot + exec with the same signature, no isolation at all.
"""

from __future__ import annotations

import errno
import os
import typing as t
from dataclasses import dataclass, field


class LaunchError(OSError):
    def __init__(self, step: str, err: int, detail: str = "") -> None:
        super().__init__(err, "%s: %s%s" % (step, os.strerror(err), (" (%s)" % detail) if detail else ""))
        self.step = step


@dataclass
class Launched:
    pid: int
    starttime: int
    namespaces: t.Dict[str, int] = field(default_factory=dict)


def start(spec: t.Dict[str, t.Any], *, stdin: t.Optional[int] = None, stdout: int, stderr: int,
          cgroup_dir: t.Optional[str] = None) -> Launched:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
    process = spec.get("process", {})
    args = process.get("args") or []
    root = spec.get("root", {}).get("path", "/")
    env = dict(item.split("=", 1) for item in process.get("env", []) if "=" in item)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            step = "cgroup"
            if cgroup_dir:
                with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as handle:
                    handle.write("0")
            step = "stdio"
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(stdin if stdin is not None else null, 0)
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            step = "chroot"
            os.chroot(root)
            os.chdir(process.get("cwd") or "/")
            step = "exec"
            os.execve(args[0], args, env)
        except OSError as exc:
            os.write(write_end, ("%s %d" % (step, exc.errno or errno.EIO)).encode())
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = reader.read().decode()
    if report:
        os.waitpid(pid, 0)
        step, err = report.split()
        raise LaunchError(step, int(err))
    ident = state.ProcessId.of(pid)
    if ident is None:  # exited (and is a zombie we reap later): still report it
        return Launched(pid, 0)
    return Launched(pid, ident.starttime)


# --- cgroup stand-in ---------------------------------------------------------------

def cgroup2_mount() -> str:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                return fields[4]
    raise OSError(errno.ENOENT, "no cgroup2 mount", "/proc/self/mountinfo")


def create_leaf(path: str, limits: t.Optional[t.Dict[str, t.Any]] = None) -> None:
    os.makedirs(path, exist_ok=True)
    for key, value in (limits or {}).items():
        with open(os.path.join(path, key), "w") as handle:
            handle.write(str(value))


def apply_limits(path: str, limits: t.Dict[str, t.Any]) -> None:
    create_leaf(path, limits)


def kill(path: str) -> None:
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as handle:
            handle.write("1")
    except FileNotFoundError:
        pass


def procs(path: str) -> t.List[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as handle:
            return [int(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def remove(path: str, timeout: float = 5.0) -> None:
    import time
    deadline = time.monotonic() + timeout
    while os.path.isdir(path):
        kill(path)
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
