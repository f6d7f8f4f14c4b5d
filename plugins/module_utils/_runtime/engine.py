# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what the supervisor needs from launch and the cgroup library.

The supervisor calls these few functions; they map onto ``launch.start()``
(the caller is a child subreaper and waitpid()s the init) and onto
``_kernel.cgroup``.  Keeping the seam here keeps the supervisor's event loop
free of launch's and cgroup's details, and bounds how long it can block.
"""

from __future__ import annotations

import os
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.cgroup_limits import NormalisedLimits
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import launch
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

LaunchError = launch.LaunchError
KILL_WAIT = 2.0  # the supervisor's loop never blocks longer on a kill


def start(config: t.Dict[str, t.Any], log_fd: int, cgroup_dir: t.Optional[str]) -> launch.Launched:
    """Launch the OCI ``config`` with stdout and stderr on ``log_fd``; raises LaunchError."""
    try:
        spec = specs.from_oci(config)
    except ValidationError as exc:
        raise LaunchError("spec", 22, str(exc))  # EINVAL: the stored spec is not valid here
    return launch.start(spec, stdin=None, stdout=log_fd, stderr=log_fd, cgroup_dir=cgroup_dir)


def describe_launch_error(exc: Exception) -> t.Dict[str, t.Any]:
    return {"step": getattr(exc, "step", "launch"), "errno": getattr(exc, "errno", None),
            "msg": getattr(exc, "msg", None) or str(exc)}


def unified_limits(config: t.Mapping[str, t.Any]) -> t.Dict[str, str]:
    """The cgroup files the spec asks for (linux.resources.unified)."""
    return dict(((config.get("linux") or {}).get("resources") or {}).get("unified") or {})


def group_of(path: str) -> cgroup.Cgroup:
    """The handle of an absolute cgroup directory (containment checked against the cgroup2 mount)."""
    hierarchy = cgroup.find_hierarchy()
    relative = os.path.relpath(path, hierarchy.mount)
    if relative == "." or relative.startswith(".."):
        raise KernelboxError("%s is not a group below the cgroup2 mount %s" % (path, hierarchy.mount))
    return cgroup.resolve("/" + relative, parent="", hierarchy=hierarchy)


def prepare_leaf(placement: t.Mapping[str, t.Any], files: t.Mapping[str, str]) -> bool:
    """The container's own leaf with its limits; True if it was created now.

    An existing leaf is reused after killing whatever a crashed run left in it.
    """
    group = group_of(placement["path"])
    limits = NormalisedLimits(files=dict(files))
    if group.exists():
        if group.populated():
            cgroup_kill(placement["path"])
        cgroup.require_controllers(group.hierarchy, limits.controllers())
        cgroup.ensure_group(group, limits.controllers())
        cgroup.apply_limits(group, limits)
        return False
    parent = placement.get("parent")
    if parent is not None and placement.get("name"):
        cgroup.create_leaf(placement["name"], parent=parent, limits=limits, hierarchy=group.hierarchy)
    else:
        cgroup.create_leaf("/" + group.relpath, parent="", limits=limits, hierarchy=group.hierarchy)
    return True


def cgroup_kill(path: str) -> None:
    """SIGKILL everything in the group (cgroup.kill, or freeze and signal), waiting at most KILL_WAIT."""
    try:
        cgroup.kill(group_of(path), timeout=KILL_WAIT)
    except KernelboxError:
        pass  # a process in D state dies when its I/O returns; the exit is seen then


def remove_leaf(path: str) -> None:
    """Kill what is left in the leaf and remove it; a missing leaf is fine."""
    cgroup.kill_and_remove(group_of(path))
