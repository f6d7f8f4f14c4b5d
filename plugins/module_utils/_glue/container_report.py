# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: what container_process and container return about a container.

Built from the state files alone (and the journal or ``systemctl show`` for a
systemd unit), so the container module's no-change path can report without
loading the runtime's spec, seccomp or cgroup code.
"""

from __future__ import annotations

import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import logs


def _systemd(layout: kbstate.Layout) -> t.Any:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import systemd
    return systemd.SystemdBackend(layout)


def log_tail(container: kbstate.Container, layout: kbstate.Layout, lines: int) -> t.List[str]:
    if not container.exists:
        return []
    settings = container.settings
    if settings is not None and settings.supervisor == "systemd":
        return _systemd(layout).log_tail(container.name, lines)
    return logs.tail(container.paths.log_file, lines)


def report(container: kbstate.Container, layout: kbstate.Layout, tail_lines: int = 20,
           recreate_keys: t.Sequence[str] = (), wait_result: t.Optional[t.Dict[str, t.Any]] = None,
           kind: t.Optional[str] = None) -> t.Dict[str, t.Any]:
    """The container's status, process, exit, settings and log tail (``kind``: the supervisor, when known)."""
    runtime = container.runtime if container.exists else None
    settings = container.settings if container.exists else None
    recorded = settings.supervisor if settings is not None else None
    kind = recorded or kind
    running = container.process() is not None
    out: t.Dict[str, t.Any] = {
        "name": container.name,
        "exists": container.exists,
        "status": (runtime.status if runtime else ("created" if container.exists else "absent")),
        "running": running,
        "pid": runtime.pid if runtime and running else None,
        "starttime": runtime.starttime if runtime and running else None,
        "started_at": runtime.started_at if runtime else None,
        "exited_at": runtime.exited_at if runtime else None,
        "exit_code": runtime.exit_code if runtime else None,
        "exit_signal": runtime.exit_signal if runtime else None,
        "exit_note": runtime.exit_note if runtime else None,
        "restart_count": runtime.restart_count if runtime else 0,
        "error": runtime.error if runtime else None,
        "namespaces": runtime.namespaces if runtime and running else {},
        "supervisor": dict(runtime.supervisor or {}, kind=recorded) if runtime else {"kind": recorded},
        "restart_policy": settings.restart_policy if settings else None,
        "enabled": settings.enabled if settings else False,
        "cgroup": (settings.cgroup.get("path") if settings else None),
        "config_digest": settings.digest if settings else None,
        "config": container.config if container.exists else None,
        "recreate_keys": list(recreate_keys),
        "log_path": container.paths.log_file if container.exists and kind == "kernelbox" else None,
        "log_tail": log_tail(container, layout, tail_lines),
        "wait_for": wait_result,
    }
    if container.exists and kind == "systemd":
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import systemd
        shown = _systemd(layout).show(container.name)
        if shown.get("NRestarts", "").isdigit():
            out["restart_count"] = int(shown["NRestarts"])
        out["supervisor"]["unit"] = systemd.unit_name(container.name)
    return out
