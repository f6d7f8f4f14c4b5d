# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what the lifecycle needs from launch and the cgroup library.

The supervisor and the module call these few functions; they map onto
``launch.start()`` (the caller is a child subreaper and waitpid()s the init)
and onto ``_kernel.cgroup``.  Keeping the seam here keeps the supervisor free
of launch's and cgroup's details.
"""

from __future__ import annotations

import errno
import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import _standin

LaunchError = _standin.LaunchError


def start(config: t.Dict[str, t.Any], log_fd: int, cgroup_dir: t.Optional[str]) -> t.Any:
    """Launch the OCI ``config``; returns an object with pid, starttime and namespaces."""
    return _standin.start(config, stdin=None, stdout=log_fd, stderr=log_fd, cgroup_dir=cgroup_dir)


def describe_launch_error(exc: Exception) -> t.Dict[str, t.Any]:
    step = getattr(exc, "step", "launch")
    err = getattr(exc, "errno", None)
    return {"step": step, "errno": err, "msg": str(exc)}


def cgroup_root() -> str:
    return _standin.cgroup2_mount()


def prepare_leaf(path: str, limits: t.Dict[str, t.Any]) -> bool:
    """Make the container's own leaf (with its limits); True if it was created now.

    An existing leaf is reused after killing whatever a crashed run left in it.
    """
    if os.path.isdir(path):
        if _standin.procs(path):
            _standin.kill(path)
        return False
    _standin.create_leaf(path, limits)
    return True


def apply_limits(path: str, limits: t.Dict[str, t.Any]) -> None:
    _standin.apply_limits(path, limits)


def cgroup_kill(path: str) -> None:
    _standin.kill(path)


def cgroup_procs(path: str) -> t.List[int]:
    return _standin.procs(path)


def remove_leaf(path: str) -> None:
    """Kill what is left in the leaf and remove it; a missing leaf is fine."""
    try:
        _standin.remove(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
