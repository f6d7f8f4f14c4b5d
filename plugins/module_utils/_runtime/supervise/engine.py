# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: starting and killing containers for the supervisor.

The supervisor stays small and stays up: every start runs in a short-lived
*launcher* child forked from it.  The launcher imports the heavy code (spec,
seccomp compiler, launch, the cgroup library), makes the container's cgroup
leaf, becomes a child subreaper and calls ``launch.start()``; then it reports
``Launched`` over a pipe and exits.  The container's init, re-parented to the
launcher, is re-parented again to the supervisor (the nearest living
subreaper), which then collects its exit status with waitpid(); if the init
exits first, its zombie follows the same path with its status intact.  So the
supervisor never maps the launcher's modules (about half its memory), and a
crash in launch code (a ctypes fault) kills a launcher, never the supervisor.

The functions the module itself uses (``group_of``, ``remove_leaf``) import the
cgroup library when called.
"""

from __future__ import annotations

import errno
import os
import signal
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.forked import ChildError, call_in_child

KILL_WAIT = 2.0  # seconds a kill may wait for the group to empty, in a launcher or the module


def unified_limits(config: t.Mapping[str, t.Any]) -> t.Dict[str, str]:
    """The cgroup files the spec asks for (linux.resources.unified)."""
    return dict(((config.get("linux") or {}).get("resources") or {}).get("unified") or {})


def group_of(path: str) -> t.Any:
    """The cgroup library's handle of an absolute cgroup directory (contained in the cgroup2 mount)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
    hierarchy = cgroup.find_hierarchy()
    relative = os.path.relpath(path, hierarchy.mount)
    if relative == "." or relative.startswith(".."):
        raise KernelboxError("%s is not a group below the cgroup2 mount %s" % (path, hierarchy.mount))
    return cgroup.resolve("/" + relative, parent="", hierarchy=hierarchy)


def prepare_leaf(placement: t.Mapping[str, t.Any], files: t.Mapping[str, str], devices: t.Any = None) -> bool:
    """The container's own leaf with its limits and device program; True if it was created now.

    An existing leaf is reused after killing whatever a crashed run left in it.
    """
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup, cgroup_devices
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.cgroup_limits import NormalisedLimits
    group = group_of(placement["path"])
    limits = NormalisedLimits(files=dict(files))
    created = not group.exists()
    if not created:
        if group.populated():
            cgroup.kill(group, timeout=KILL_WAIT)
        cgroup.require_controllers(group.hierarchy, limits.controllers())
        cgroup.ensure_group(group, limits.controllers())
        cgroup.apply_limits(group, limits)
    elif placement.get("parent") is not None and placement.get("name"):
        cgroup.create_leaf(placement["name"], parent=placement["parent"], limits=limits, hierarchy=group.hierarchy)
    else:
        cgroup.create_leaf("/" + group.relpath, parent="", limits=limits, hierarchy=group.hierarchy)
    if devices is not None:
        cgroup_devices.attach(group.path, devices)
    return created


def remove_leaf(path: str) -> None:
    """Kill what is left in the leaf and remove it; a missing leaf is fine."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
    cgroup.kill_and_remove(group_of(path))


def describe_error(exc: BaseException, default_step: str) -> t.Dict[str, t.Any]:
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
    step = getattr(exc, "step", None) or default_step
    err = getattr(exc, "errno", None)
    if isinstance(exc, KernelboxError):
        text = exc.msg
    elif isinstance(exc, OSError):
        text = "%s%s" % (exc.strerror or exc, (": %s" % exc.filename) if exc.filename else "")
    else:
        text = "%s: %s" % (type(exc).__name__, exc)
    return {"step": step, "errno": err, "msg": text}


def launch_here(config: t.Dict[str, t.Any], placement: t.Optional[t.Mapping[str, t.Any]],
                log: t.Union[str, int, t.Tuple[int, int]], fault: t.Optional[str] = None) -> t.Dict[str, t.Any]:
    """In this process: leaf, log, launch.start(); the Launched fields, or raise.

    ``log`` is the path of the log FIFO the supervisor drains, or an fd already
    open for stdout and stderr (the journal's stream socket, with systemd), or a
    pair of fds (stdout, stderr: a job's pipes).
    """
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import launch
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import logs
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import resources as resource_map
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError
    try:
        spec = specs.from_oci(config)
    except ValidationError as exc:
        raise launch.LaunchError("spec", errno.EINVAL, str(exc))
    created = False
    cgroup_dir = placement.get("path") if placement else None
    try:
        if placement and placement.get("owned"):
            try:
                created = prepare_leaf(placement, unified_limits(config),
                                       resource_map.device_rules(spec.linux.resources))
            except Exception as exc:
                raise launch.LaunchError("cgroup", getattr(exc, "errno", None) or errno.EINVAL,
                                         getattr(exc, "msg", None) or str(exc))
            if fault == "supervisor-cgroup":  # test only: the supervisor dies while its launcher works on
                os.kill(os.getppid(), signal.SIGKILL)
        if isinstance(log, tuple):
            out_fd, err_fd = log
        else:
            out_fd = err_fd = logs.open_for_container(log) if isinstance(log, str) else log
        libc.set_child_subreaper()
        launched = launch.start(spec, stdin=None, stdout=out_fd, stderr=err_fd, cgroup_dir=cgroup_dir)
    except BaseException:
        if created and cgroup_dir:
            try:
                remove_leaf(cgroup_dir)
            except Exception:  # the launch error is what matters; absent removes the leaf later
                pass
        raise
    return {"pid": launched.pid, "starttime": launched.starttime, "namespaces": dict(launched.namespaces),
            "root": spec.root.path, "created": list(launched.created)}


def start(config: t.Dict[str, t.Any], placement: t.Optional[t.Mapping[str, t.Any]], log_fifo: str,
          fault: t.Optional[str] = None) -> t.Tuple[t.Optional[t.Dict[str, t.Any]], t.Optional[t.Dict[str, t.Any]]]:
    """Start a container through a launcher child: (launched fields, None) or (None, error).

    The container's stdout and stderr are ``log_fifo``, which the caller drains (logs.Sink).

    The caller must be a child subreaper (it inherits the init) and reap with waitpid().
    """
    def launcher() -> t.Dict[str, t.Any]:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        try:
            return {"ok": launch_here(config, placement, log_fifo, fault)}
        except BaseException as exc:  # reported as data: the supervisor must learn the step and errno
            return {"error": describe_error(exc, "launch")}

    try:
        payload = call_in_child(launcher)
    except ChildError as exc:
        return None, {"step": "launch", "errno": None, "msg": "the launcher process failed: %s" % exc}
    return payload.get("ok"), payload.get("error")


def cgroup_kill(path: str) -> None:
    """SIGKILL everything in the group, without blocking the supervisor.

    cgroup.kill (Linux 5.14) is one write; older kernels need the library's
    freeze-and-signal, which runs in a forked child the supervisor does not wait on
    for long.
    """
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as handle:
            handle.write("1")
        return
    except FileNotFoundError:
        if not os.path.isdir(path):
            return
    except OSError:
        return
    pid = os.fork()
    if pid == 0:
        try:
            from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
            cgroup.kill(group_of(path), timeout=KILL_WAIT)
        finally:
            os._exit(0)
    # Reaped by the supervisor's waitpid(-1) loop like any other child that is not a container.
