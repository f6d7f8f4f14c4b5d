# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: start, stop and reload a container through its supervisor.

Two backends with the same methods: ``KernelboxBackend`` (our per-host
supervisor daemon, for hosts whose PID 1 is not systemd) and
``systemd.SystemdBackend`` (one unit per container).  The persistent state
(config.json, container.json) must be written before ``start``.

Fault injection for tests: with ``KERNELBOX_TEST_FAULT=<point>`` in its
environment the module SIGKILLs itself at that point, and a point named
``supervisor-*`` is passed to the supervisor, which SIGKILLs *itself* there.
Points: locked, persisted, materialised, supervisor, start-sent, started,
stop-sent, stopped, removing (module); supervisor-starting,
supervisor-cgroup, supervisor-launched (supervisor).  Never set it outside
tests: it exists to prove that a re-run converges after a crash.
"""

from __future__ import annotations

import os
import signal
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import client as clients
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import logs, materialise
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

FAULT_ENV = "KERNELBOX_TEST_FAULT"


def fault(point: str) -> None:
    """SIGKILL this process at ``point`` when the test asks for it (see the module docstring)."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def supervisor_fault() -> t.Optional[str]:
    requested = os.environ.get(FAULT_ENV, "")
    return requested if requested.startswith("supervisor-") else None


class LaunchFailed(KernelboxError):
    """The container could not be started; ``step`` and ``errno`` say where and why."""


def describe_error(name: str, error: t.Mapping[str, t.Any]) -> str:
    step = error.get("step") or "launch"
    err = error.get("errno")
    text = error.get("msg") or "failed"
    if err is not None:
        marker = "[errno %d]" % err
        named = "[errno %d %s]" % (err, _errno_name(err))
        text = text.replace(marker, named) if marker in text else "%s %s" % (text, named)
    return "container %s: start failed at step '%s': %s" % (name, step, text)


def _errno_name(err: int) -> str:
    import errno as errno_module
    return errno_module.errorcode.get(err, "?")


def rootfs_targets(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> t.Tuple[t.List[str], t.Optional[str]]:
    """The mount targets the container's launches made in its rootfs, and who else uses that rootfs.

    Returns (paths, other container or None): while another kernelbox
    container runs from the same root, the targets are its mount points too.
    """
    record = state.load_created(name, layout)
    if not record or not record["created"]:
        return [], None
    root = os.path.realpath(record["root"])
    for other in state.list_names(layout):
        if other == name:
            continue
        try:
            config = state.load(other, layout).config or {}
        except (KernelboxError, OSError):
            continue
        path = (config.get("root") or {}).get("path")
        if isinstance(path, str) and os.path.realpath(path) == root:
            return list(record["created"]), other
    return list(record["created"]), None


def release_rootfs_targets(name: str, layout: state.Layout = state.DEFAULT_LAYOUT) -> t.List[str]:
    """At removal: take back what launches made in the rootfs, or hand it to a container sharing the rootfs."""
    created, other = rootfs_targets(name, layout)
    record = state.load_created(name, layout)
    if not created or record is None:
        return []
    if other is not None:
        state.note_created(other, record["root"], created, layout)
        return []
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import rootfs
    try:
        root = os.open(record["root"], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []  # the rootfs is gone (an overlay removed first, say): so is what was made in it
    try:
        return rootfs.remove_created(root, created)
    finally:
        os.close(root)


class KernelboxBackend:
    """Containers parented by the kernelbox supervisor daemon."""

    kind = "kernelbox"

    def __init__(self, layout: state.Layout = state.DEFAULT_LAYOUT) -> None:
        self.layout = layout
        self._session: t.Optional[clients.Client] = None

    def session(self) -> clients.Client:
        if self._session is None:
            code = materialise.materialise(self.layout)
            fault("materialised")
            self._session = clients.Client(code, layout=self.layout)
            hello = self._session.ensure()
            fault("supervisor")
            materialise.collect_garbage([code, hello.get("code", "")], self.layout)
        return self._session

    def start(self, name: str) -> state.Runtime:
        """Start from the persistent state; returns once the init has exec'd.  Raises LaunchFailed."""
        session = self.session()
        reply = session.request("start", name=name, fault=supervisor_fault(),
                                after_send=lambda: fault("start-sent"))
        fault("started")
        runtime = reply.get("runtime")
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise LaunchFailed(describe_error(name, error), step=error.get("step"), errno=error.get("errno"))
        return _runtime(runtime, name)

    def stop(self, name: str, timeout: float) -> t.Optional[state.Runtime]:
        """Stop signal, then SIGKILL through the cgroup after ``timeout``; returns after the exit."""
        session = self.session()
        reply = session.request("stop", name=name, stop_timeout=timeout, timeout=timeout + 60.0,
                                after_send=lambda: fault("stop-sent"))
        fault("stopped")
        if not reply.get("ok"):
            raise KernelboxError("container %s: stop failed: %s" % (name, (reply.get("error") or {}).get("msg")))
        return _runtime(reply.get("runtime"), name) if reply.get("runtime") else None

    def configure(self, name: str, settings: state.Settings) -> bool:
        """container.json changed (restart policy, stop, log cap): tell a running supervisor.

        An enabled container also needs the code copy on disk, for ``kernelbox-supervisor.py boot``.
        """
        if settings.enabled:
            materialise.materialise(self.layout)
        if clients.running_supervisor(self.layout) is not None:
            self.session().request("reload", name=name)
        return False

    def shared_objects(self) -> t.List[str]:
        """What this backend keeps for all containers (named when a failed first start removes its container)."""
        found = []
        runtime = materialise.runtime_root(self.layout)
        if os.path.isdir(runtime):
            found.append("the supervisor's code copy in %s" % runtime)
        if clients.running_supervisor(self.layout) is not None:
            found.append("the kernelbox supervisor, which exits once it supervises nothing")
        return found

    def forget(self, name: str) -> None:
        """Nothing to undo: the supervisor dropped the container when it stopped."""

    def log_tail(self, name: str, lines: int) -> t.List[str]:
        return logs.tail(state.paths(name, self.layout).log_file, lines)

    def show(self, name: str) -> t.Dict[str, str]:
        return {}

    def adopt(self) -> None:
        """Make sure a supervisor runs: a new one adopts every running container."""
        self.session()

    def supervisor_alive(self, runtime: t.Optional[state.Runtime]) -> bool:
        info = (runtime.supervisor if runtime else None) or {}
        if not info.get("pid") or info.get("starttime") is None:
            return False
        return state.ProcessId(info["pid"], info["starttime"], runtime.boot_id if runtime else "").alive()


def _runtime(data: t.Optional[t.Mapping[str, t.Any]], name: str) -> state.Runtime:
    if not data:
        return state.Runtime(name)
    known = {k: v for k, v in data.items() if k in state.Runtime.__dataclass_fields__}  # pylint: disable=no-member
    return state.Runtime(**known)
