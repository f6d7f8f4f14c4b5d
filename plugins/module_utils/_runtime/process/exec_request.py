# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what an exec into a container (or any process) runs with.

``open_container(name)`` finds a kernelbox container's init through its state
(PID + start time) and pins it; ``for_container`` builds the
``execution.Request`` from the container's stored spec; ``for_process`` does
the same for any process, from what /proc says about it.

The rule in both: **never more than the target has.**

* Capabilities: a kernelbox container's spec sets, each intersected with the
  init's current bounding set (CapBnd); any process's own five sets.
* no_new_privs: on if the spec or the init has it.
* seccomp: a kernelbox container's own profile (its stored spec), compiled as
  the launcher compiles it.  A target under a seccomp filter this code cannot
  reproduce (the spec has none, or exec by PID) is refused rather than
  joined unconfined.
* The user namespace is always joined when the target has its own, whatever
  ``namespaces`` says: privileges live there, so joining a subset (only
  ``net``, say) never runs with the host's root privileges.
"""

from __future__ import annotations

import copy
import errno
import os
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import capabilities
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import confine
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import execution
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process.inroot import StepFailure
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import procscan
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

HOLD_ENV = "KERNELBOX_TEST_EXEC_HOLD"  # tests only: seconds to pause inside the container, before confinement


class NotRunning(KernelboxError):
    """The container exists but its init is not running."""


class NoSuchContainer(KernelboxError):
    """There is no container by that name."""


@dataclass
class Options:
    """The module's options, validated."""

    argv: t.List[str]
    env: t.Dict[str, str] = field(default_factory=dict)
    cwd: t.Optional[str] = None
    uid: t.Optional[int] = None
    gid: t.Optional[int] = None
    groups: t.Optional[t.List[int]] = None
    namespaces: t.Sequence[str] = execution.NAMESPACES
    stdin: t.Optional[bytes] = None
    timeout: t.Optional[float] = None
    output_limit: t.Optional[int] = execution.DEFAULT_OUTPUT_LIMIT  # bytes kept per stream; None keeps all


def test_hold() -> float:
    try:
        return max(0.0, float(os.environ.get(HOLD_ENV, "0")))
    except ValueError:
        return 0.0


def describe_stopped(container: state.Container) -> str:
    runtime = container.runtime
    if runtime is None:
        return "container %s is not running (it was created but never started)" % container.name
    text = "container %s is not running (state: %s" % (container.name, runtime.status)
    if runtime.exit_code is not None:
        text += ", exit code %d" % runtime.exit_code
    if runtime.exit_signal:
        text += ", killed by %s" % runtime.exit_signal
    if runtime.exited_at:
        text += ", exited at %s" % runtime.exited_at
    if runtime.status in (state.RUNNING, state.STARTING, state.STOPPING):
        text += "; its recorded init (PID %s) is gone" % runtime.pid
    return text + ")"


def open_container(name: str, layout: state.Layout = state.DEFAULT_LAYOUT
                   ) -> t.Tuple[state.Container, execution.Target]:
    """The container's state and its pinned init; NoSuchContainer / NotRunning otherwise."""
    container = state.load(name, layout)
    if not container.exists:
        raise NoSuchContainer("no container named %s (no state under %s or %s)"
                              % (name, layout.lib_containers, layout.run_containers))
    proc = container.process()
    if proc is None:
        raise NotRunning(describe_stopped(container), state=container.runtime.status if container.runtime else "created")
    try:
        target = execution.Target.open(proc.pid, proc.starttime)
    except execution.TargetGone:
        raise NotRunning(describe_stopped(container))
    return container, target


def container_spec(container: state.Container) -> specs.Spec:
    if container.config is None or not container.consistent:
        raise KernelboxError("container %s has no complete stored spec (%s); recreate it with container_process"
                             % (container.name, container.paths.config_file))
    return specs.from_oci(container.config)


def for_container(container: state.Container, target: execution.Target, options: Options) -> execution.Request:
    spec = container_spec(container)
    status = target.credentials()
    process = copy.deepcopy(spec.process)
    env = _env_dict(process.env)
    env.update(options.env)
    process.args = list(options.argv)
    process.env = _env_entries(_with_path(env))
    process.cwd = options.cwd or process.cwd or "/"
    if options.uid is not None:
        process.user.uid = options.uid
        process.user.gid = options.uid if options.gid is None else options.gid
    if options.groups is not None:
        process.user.additional_gids = list(options.groups)
    prepared = _prepare(process, spec.linux.seccomp)
    restrict(prepared, status.cap_bounding, status.no_new_privs)
    if status.seccomp_mode != 0 and prepared.seccomp_program is None:
        raise KernelboxError("container %s: its init runs under a seccomp filter but its stored spec has no "
                             "profile, so exec cannot apply the same filter; refusing to run unconfined"
                             % container.name)
    return execution.Request(
        argv=list(options.argv), prepared=prepared, namespaces=list(options.namespaces), cwd=process.cwd,
        stdin=options.stdin, timeout=options.timeout, output_limit=options.output_limit,
        cgroup=_container_group(container, target), hold=test_hold())


def for_process(target: execution.Target, options: Options) -> execution.Request:
    status = target.credentials()
    if status.seccomp_mode != 0:
        raise KernelboxError("process %d runs under a seccomp filter (Seccomp: %d), which container_exec cannot "
                             "copy from another process; it will not run the command unconfined. Use the name of a "
                             "kernelbox container instead: its profile is in its spec" % (target.pid, status.seccomp_mode))
    uid, gid, groups = status.uid, status.gid, list(status.groups)
    joined = execution.plan_namespaces(target, options.namespaces)
    if "user" in joined:  # status shows host ids; setresuid inside needs the namespace's own
        uid_map, gid_map = target.id_map("uid"), target.id_map("gid")
        uid, gid = _inside(uid, uid_map, "uid", target.pid), _inside(gid, gid_map, "gid", target.pid)
        groups = [g for g in (procscan.inside_id(g, gid_map) for g in groups) if g is not None]
    if options.uid is not None:
        uid, gid = options.uid, options.uid if options.gid is None else options.gid
    env = {"PATH": execution.DEFAULT_PATH}
    env.update(options.env)
    process = specs.Process(
        args=list(options.argv), env=_env_entries(env), cwd=options.cwd or "/",
        user=specs.User(uid=uid, gid=gid,
                        additional_gids=list(groups if options.groups is None else options.groups)),
        capabilities=specs.Capabilities(
            bounding=_names(status.cap_bounding), effective=_names(status.cap_effective & status.cap_permitted),
            permitted=_names(status.cap_permitted), inheritable=_names(status.cap_inheritable),
            ambient=_names(status.cap_ambient & status.cap_permitted & status.cap_inheritable)),
        no_new_privileges=status.no_new_privs)
    prepared = _prepare(process, None)
    return execution.Request(
        argv=list(options.argv), prepared=prepared, namespaces=list(options.namespaces), cwd=process.cwd,
        stdin=options.stdin, timeout=options.timeout, output_limit=options.output_limit, cgroup=None,
        hold=test_hold())


def _prepare(process: specs.Process, profile: t.Any) -> confine.Prepared:
    try:
        return confine.prepare(process, profile)
    except StepFailure as exc:
        raise KernelboxError("cannot prepare the command: %s" % exc, step=exc.step, errno=exc.errno)


def _names(mask: int) -> t.List[str]:
    """Capability names for a mask, leaving out bits this collection has no name for."""
    return [name for name in capabilities.names_of(mask) if name in capabilities.CAP_NUMBERS]


def restrict(prepared: confine.Prepared, bounding: int, no_new_privs: bool) -> None:
    """Never more than a reference process has: every set intersected with its ``bounding`` mask (CapBnd of
    /proc/PID/status), and no_new_privs kept on if it has it.  In place."""
    creds = prepared.credentials
    top = capabilities.last_cap()
    outside = {cap for cap in range(top + 1) if not bounding & (1 << cap)}
    creds.drop_bounding = sorted(set(creds.drop_bounding) | outside)
    creds.effective &= bounding
    creds.permitted &= bounding
    creds.inheritable &= bounding
    creds.ambient = [cap for cap in creds.ambient if bounding & (1 << cap)]
    prepared.no_new_privileges = prepared.no_new_privileges or no_new_privs


def _inside(outside: int, mapping: procscan.IdMap, kind: str, pid: int) -> int:
    inside = procscan.inside_id(outside, mapping)
    if inside is None:
        raise KernelboxError("process %d runs as host %s %d, which its user namespace does not map"
                             % (pid, kind, outside))
    return inside


def _env_entries(env: t.Mapping[str, str]) -> t.List[str]:
    return ["%s=%s" % (key, value) for key, value in env.items()]


def _env_dict(entries: t.Iterable[str]) -> t.Dict[str, str]:
    env = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if sep:
            env[key] = value
    return env


def _with_path(env: t.Dict[str, str]) -> t.Dict[str, str]:
    if "PATH" not in env:
        env["PATH"] = execution.DEFAULT_PATH
    return env


def _container_group(container: state.Container, target: execution.Target) -> t.Optional[cgroup.Cgroup]:
    """The cgroup v2 group the init is in (the truth, whatever the state file says), unless it is the root."""
    try:
        relative = target.cgroup_path()
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise NotRunning(describe_stopped(container))
        raise
    if not relative:
        return None
    hierarchy = cgroup.find_hierarchy()
    return cgroup.resolve(relative, parent="", hierarchy=hierarchy)
