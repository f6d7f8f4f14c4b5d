# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the container module's no-change path and its report.

Everything here is cheap and light: the definition's inputs (env_file, bind
sources), the few kernel facts recorded when the container was last
converged (``facts``) and checked on every run (``facts_hold``), and the
result.  No netlink library, no /proc scan, no runtime spec or seccomp code.
"""

from __future__ import annotations

import os
import socket
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_definition as defn
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_report
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.flow import KernelboxError, ValidationError
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import volumes
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue.container import ContainerTask

ENV_FILE_LIMIT = 1 << 20
OVERLAYFS_SUPER_MAGIC = 0x794C7630


def _merged_dir(task: "ContainerTask") -> str:
    return os.path.join(task.where, "merged")


def read_inputs(task: "ContainerTask") -> None:
    """Host files the definition names, read (env_file) or checked (bind sources) before anything changes."""
    merged = task.merged
    for index, item in enumerate(defn.value(merged, "volumes")):
        if item["kind"] == "bind" and not os.path.lexists(item["source"]):
            raise ValidationError("volumes[%d]: the source %s does not exist on this host" % (index, item["source"]))
    task.ctx["env_from_file"] = {}
    if merged.get("env_file"):
        path = merged["env_file"]
        try:
            with open(path, "rb") as handle:
                raw = handle.read(ENV_FILE_LIMIT + 1)
        except OSError as exc:
            raise ValidationError("env_file: cannot read %s: %s" % (path, exc.strerror))
        if len(raw) > ENV_FILE_LIMIT:
            raise ValidationError("env_file: %s is larger than %d bytes" % (path, ENV_FILE_LIMIT))
        task.ctx["env_from_file"] = defn.env_file(raw.decode("utf-8", "replace"), path)
        task.ctx["env_file_digest"] = defn.digest(raw.decode("utf-8", "replace"))


def overlay_mounted(path: str) -> bool:
    try:
        return libc.statfs_type(path) == OVERLAYFS_SUPER_MAGIC
    except OSError:
        return False


def facts(task: "ContainerTask") -> t.Dict[str, t.Any]:
    """The kernel and file facts the no-change path compares (see facts_hold)."""
    merged = task.merged
    found: t.Dict[str, t.Any] = {}
    if "image" in merged and merged["image"].startswith("/"):
        info = os.stat(merged["image"])
        found["image"] = [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns]
    found["lower"] = list(task.ctx.get("lower") or [])
    if "env_file_digest" in task.ctx:
        found["env_file"] = task.ctx["env_file_digest"]
    if defn.value(merged, "network") != defn.NO_NETWORK:
        from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import netns
        entry = netns.lookup(task.name)
        host_end = defn.veth_stem(task.name) + "h"
        try:
            index = socket.if_nametoindex(host_end)
        except OSError:
            index = None
        found["network"] = {"netns": entry.inode, "veth": host_end, "ifindex": index}
    return found


def facts_hold(task: "ContainerTask", recorded: t.Mapping[str, t.Any]) -> bool:
    """Whether the facts recorded when the container was last converged still hold (cheap reads only)."""
    merged = task.merged
    image = merged.get("image")
    if image is not None and image.startswith("/"):
        try:
            info = os.stat(image)
        except OSError:
            return False
        if [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns] != recorded.get("image"):
            return False
    elif image is not None and task.params.get("pull") == "always":
        return False  # only the registry can say whether the tag moved
    if not recorded.get("lower") or not all(os.path.isdir(path) for path in recorded["lower"]):
        return False
    if merged.get("env_file"):
        try:
            read_inputs(task)
        except ValidationError:
            return False
        if task.ctx.get("env_file_digest") != recorded.get("env_file"):
            return False
    if not overlay_mounted(_merged_dir(task)):
        return False
    if not all(os.path.isdir(volumes.data_dir(name, task.layout)) for name in defn.names_of(merged)):
        return False
    network = recorded.get("network")
    if defn.value(merged, "network") != defn.NO_NETWORK:
        from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import netns
        entry = netns.lookup(task.name)
        try:
            index = socket.if_nametoindex(defn.veth_stem(task.name) + "h")
        except OSError:
            return False
        if not network or entry.inode != network.get("netns") or index != network.get("ifindex"):
            return False
    if defn.value(merged, "ports") and not ports_hold(task):
        return False
    return True


# --- published ports ----------------------------------------------------------------------------

def wanted_ports(task: "ContainerTask") -> t.List[t.Any]:
    """The port specs to publish now: the definition's while the container runs (or is to run), else none."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import ports
    merged = task.merged
    if defn.value(merged, "network") == defn.NO_NETWORK or not defn.value(merged, "detach"):
        return []
    running = task.state in ("started", "healthy") or (task.state == "present" and task.container.is_running())
    return ports.parse_ports(defn.value(merged, "ports")) if running else []


def ports_hold(task: "ContainerTask") -> bool:
    """The no-change path: the table holds exactly the ports the definition asks for now (read without the lock)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import nat, ports
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import nftables
    address = ((task.record.get("summary") or {}).get("network") or {}).get("ip")
    try:
        specs = wanted_ports(task)
        if specs and not address:
            return False
        wanted = ports.expand(specs, ports.container_addresses([address] if specs else []), task.name)
        session = nat.NatSession(lock=False)
        try:
            held = session.state().mappings_of(task.name)
        finally:
            session.close()
    except (ValidationError, KernelboxError, nftables.NftUnavailable, OSError):
        return False  # the full path says why
    return set(held) == set(wanted)


def summary(task: "ContainerTask") -> t.Dict[str, t.Any]:
    """What the module returns about the parts, kept in the record for the no-change path."""
    ctx = task.ctx
    out: t.Dict[str, t.Any] = {"image": ctx.get("identity"), "storage": task.where}
    if ctx.get("bridge"):
        out["network"] = {"bridge": ctx["bridge"], "ip": ctx.get("address"), "prefix": ctx.get("prefix"),
                          "gateway": ctx.get("gateway"), "interface": "eth0",
                          "veth": defn.veth_stem(task.name) + "h"}
    if ctx.get("idmap"):
        out["userns"] = {"mode": ctx.get("userns"), "uid_map": list(ctx["idmap"][0]),
                         "gid_map": list(ctx["idmap"][1])}
    else:
        out["userns"] = {"mode": ctx.get("userns")}
    return out


def result(task: "ContainerTask", state: t.Any) -> t.Dict[str, t.Any]:
    """The container as the state files say after the task, and its parts as found (or recorded)."""
    process = task.process
    out = container_report.report(task.container, task.layout,
                                  recreate_keys=process.recreated_keys if process is not None else (),
                                  wait_result=None)
    out.pop("config", None)  # the whole OCI spec: container_info returns it; config_digest names it here
    out.pop("wait_for", None)
    record = kbstate.load_definition(task.name, task.layout) if out["exists"] else None
    definition = getattr(task, "merged", None) if task.state != "absent" else None
    out.update(definition=definition if definition is not None else (record or {}).get("definition"),
               changed_options=list(task.changed_options))
    parts = (record or {}).get("summary") or {}
    if task.ctx.get("identity") is not None and task.state != "absent":
        parts = summary(task)
    definition_now = out["definition"] or {}
    out["health"] = None
    if definition_now.get("healthcheck") and out["exists"]:
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import health
        record = health.for_run(health.load(task.name, task.layout), task.container.runtime)
        out["health"] = {"status": record["status"], "failing_streak": record.get("failing_streak", 0),
                         "last": (record.get("log") or [None])[-1]}
    job = job_output(task)
    if job is not None:
        out.update(rc=job["rc"], stdout=job["stdout"], stderr=job["stderr"],
                   stdout_lines=job["stdout"].splitlines(), stderr_lines=job["stderr"].splitlines(),
                   start=job["start"], end=job["end"], stdout_dropped=job["stdout_dropped"],
                   stderr_dropped=job["stderr_dropped"])
    out["image"] = parts.get("image")
    out["network"] = parts.get("network")
    out["ip"] = (parts.get("network") or {}).get("ip")
    out["userns"] = parts.get("userns")
    return out


def job_output(task: "ContainerTask") -> t.Optional[t.Dict[str, t.Any]]:
    """The output of a job (detach=false) for the container's current spec: this run's, or the recorded one."""
    if task.state == "absent" or defn.value(getattr(task, "merged", task.stored), "detach"):
        return None
    process = task.process
    output = getattr(getattr(process, "backend", None), "output", None)
    if output is None:
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import job
        output = job.load_output(task.name, task.layout)
    settings = task.container.settings if task.container.exists else None
    if output is None or settings is None or output.get("digest") != settings.digest:
        return None
    return output
