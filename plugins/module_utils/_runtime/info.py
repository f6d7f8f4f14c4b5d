# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: everything about containers at once, read-only (``container_info``).

Built to stay fast with hundreds of containers: state files are read once per
container; /proc is scanned **once** for all of them (each process's stat line
and PID namespace), and each container's processes are picked out of that one
table; the host's mountinfo is read once; each network namespace is dumped
once however many containers share it.  Per-process details (command line,
memory, user) are read only for processes inside containers.

Nothing here writes anything, opens a container's namespaces for longer than a
netlink dump, or signals anyone.
"""

from __future__ import annotations

import os
import time
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup, nat, overlay
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.mounts import visible_mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.supervise import logs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc, nftables, procfs, procscan
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import path_is_within

LIMIT_FILES = ("memory.max", "memory.high", "memory.low", "memory.swap.max", "cpu.max", "cpu.weight",
               "pids.max", "io.max", "cpuset.cpus")
NS_FILES = ("cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts")


class Snapshot:
    """What is read once and shared by every container of one call."""

    def __init__(self) -> None:
        self._procs: t.Optional[t.Dict[int, procscan.ProcEntry]] = None
        self._children: t.Optional[t.Dict[int, t.List[int]]] = None
        self._mounts: t.Optional[t.List[procfs.MountInfo]] = None
        self._hierarchy: t.Any = None
        self._hierarchy_error: t.Optional[str] = None
        self._networks: t.Dict[int, t.Any] = {}
        self._published: t.Optional[t.Dict[str, t.List[t.Dict[str, t.Any]]]] = None
        self.published_error: t.Optional[str] = None
        self.own_ns = procscan.namespace_inodes("self", NS_FILES)

    def published(self, name: str) -> t.Optional[t.List[t.Dict[str, t.Any]]]:
        """The container's published ports, from the nat table (read once); None when it cannot be read."""
        if self._published is None:
            self._published = {}
            if nftables.available():  # without libnftables no kernelbox table can exist
                session = nat.NatSession(lock=False)
                try:
                    self._published = nat.published_by_owner(session.state())
                except (KernelboxError, OSError) as exc:
                    self.published_error = getattr(exc, "msg", None) or str(exc)
                finally:
                    session.close()
        return None if self.published_error else self._published.get(name, [])

    @property
    def procs(self) -> t.Dict[int, procscan.ProcEntry]:
        if self._procs is None:
            self._procs = procscan.scan(with_pidns=True)
        return self._procs

    @property
    def children(self) -> t.Dict[int, t.List[int]]:
        if self._children is None:
            self._children = procscan.children_map(self.procs)
        return self._children

    @property
    def mounts(self) -> t.List[procfs.MountInfo]:
        if self._mounts is None:
            self._mounts = visible_mounts()
        return self._mounts

    def mount_holding(self, path: str) -> t.Optional[procfs.MountInfo]:
        """The top mount whose mount point is ``path`` or its nearest ancestor."""
        best = None
        for entry in self.mounts:
            if path_is_within(path, entry.mount_point) and (
                    best is None or len(entry.mount_point) >= len(best.mount_point)):
                best = entry
        return best

    def hierarchy(self) -> t.Any:
        if self._hierarchy is None and self._hierarchy_error is None:
            try:
                self._hierarchy = cgroup.find_hierarchy()
            except (KernelboxError, OSError) as exc:
                self._hierarchy_error = getattr(exc, "msg", None) or str(exc)
        return self._hierarchy

    def network(self, inode: int, pid: int) -> t.Any:
        """Interfaces of the network namespace ``inode`` (entered through ``pid``), dumped once."""
        if inode not in self._networks:
            self._networks[inode] = read_interfaces("/proc/%d/ns/net" % pid)
        return self._networks[inode]


def read_interfaces(netns_path: str) -> t.Union[t.List[t.Dict[str, t.Any]], t.Dict[str, str]]:
    """Interfaces and addresses of the network namespace at ``netns_path``.

    This thread enters the namespace for the length of three calls into C
    (getifaddrs, the SIOCGIF* ioctls, if_nameindex: each opens its socket in
    the calling thread's namespace) and is returned to its own in ``finally``.
    That costs a fraction of a netlink session, which matters with hundreds
    of containers.
    """
    import socket
    import psutil  # deferred: an optional target dependency, checked by the module
    try:
        with libc.entered_netns(netns_path):
            addresses = psutil.net_if_addrs()
            stats = psutil.net_if_stats()
            indexes = {name: index for index, name in socket.if_nameindex()}
    except OSError as exc:
        return {"error": "cannot read the interfaces: %s" % (exc.strerror or exc)}
    found = []
    for name in sorted(indexes, key=indexes.__getitem__):
        mac, cidrs = None, []
        for entry in addresses.get(name, []):
            if entry.family == psutil.AF_LINK:
                mac = entry.address
            elif entry.family in (socket.AF_INET, socket.AF_INET6) and entry.netmask:
                cidrs.append(_cidr(entry.address, entry.netmask))
        stat = stats.get(name)
        found.append({"name": name, "index": indexes[name], "mtu": stat.mtu if stat else None,
                      "up": bool(stat and stat.isup), "mac": mac, "addresses": cidrs})
    return found


def _cidr(address: str, netmask: str) -> str:
    import ipaddress
    address = address.split("%", 1)[0]  # fe80::1%eth0: the scope is the interface itself
    prefix = bin(int(ipaddress.ip_address(netmask))).count("1")
    return "%s/%d" % (ipaddress.ip_address(address), prefix)


# --- one container ---------------------------------------------------------------------

def state_of(container: state.Container) -> t.Tuple[str, t.Optional[str]]:
    """(state, note): the recorded status, corrected by what /proc says about the init."""
    runtime = container.runtime
    if not container.exists:
        return "absent", None
    if runtime is None:
        return state.CREATED, None
    if runtime.status in (state.RUNNING, state.STARTING, state.STOPPING):
        if container.is_running():
            return runtime.status, None
        gone = "its init (PID %s) is gone and no supervisor recorded how it ended" % runtime.pid
        return state.EXITED, runtime.exit_note or gone
    return runtime.status, runtime.exit_note


def spec_summary(config: t.Optional[t.Mapping[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
    """The stored spec (config.json, as kernelbox wrote it) in a few lines; environment *names* only, since
    the values may be secrets.  Read straight from the JSON: validating it again costs more than everything
    else this module does, and the launcher validated it when it was stored."""
    if config is None:
        return None
    if not isinstance(config, dict) or not isinstance(config.get("process"), dict):
        return {"error": "the stored spec cannot be read: it has no process section"}
    process, linux, root = config["process"], config.get("linux") or {}, config.get("root") or {}
    user, caps = process.get("user") or {}, process.get("capabilities") or {}
    seccomp = linux.get("seccomp")
    return {
        "rootfs": root.get("path"),
        "readonly_rootfs": bool(root.get("readonly", False)),
        "command": list(process.get("args") or []),
        "cwd": process.get("cwd", "/"),
        "user": "%s:%s" % (user.get("uid", 0), user.get("gid", 0)),
        "groups": list(user.get("additionalGids") or []),
        "env_names": sorted(str(entry).partition("=")[0] for entry in process.get("env") or []),
        "hostname": config.get("hostname"),
        "namespaces": {entry.get("type"): entry.get("path") or "new" for entry in linux.get("namespaces") or []},
        "uid_map": [[m.get("containerID"), m.get("hostID"), m.get("size")] for m in linux.get("uidMappings") or []],
        "capabilities": list(caps.get("bounding") or []),
        "no_new_privileges": bool(process.get("noNewPrivileges", False)),
        "seccomp": None if not isinstance(seccomp, dict) else {
            "default_action": seccomp.get("defaultAction"), "rules": len(seccomp.get("syscalls") or [])},
        "rlimits": {limit.get("type"): [limit.get("soft"), limit.get("hard")] for limit in process.get("rlimits") or []},
        "mounts": [m.get("destination") for m in config.get("mounts") or []],
        "masked_paths": len(linux.get("maskedPaths") or []),
        "readonly_paths": len(linux.get("readonlyPaths") or []),
        "cgroups_path": linux.get("cgroupsPath"),
        "resources": linux.get("resources") or {},
    }


def _group_of(snapshot: Snapshot, path: t.Optional[str]) -> t.Optional[cgroup.Cgroup]:
    hierarchy = snapshot.hierarchy()
    if hierarchy is None or not path:
        return None
    relative = os.path.relpath(path, hierarchy.mount) if os.path.isabs(path) else path.strip("/")
    if relative.startswith("..") or relative == ".":
        return None
    return cgroup.Cgroup(hierarchy, tuple(p for p in relative.split("/") if p))


def cgroup_info(snapshot: Snapshot, path: t.Optional[str]) -> t.Optional[t.Dict[str, t.Any]]:
    group = _group_of(snapshot, path)
    if group is None:
        return None
    if not group.exists():
        return {"path": group.path, "exists": False}
    try:
        stats = cgroup.read_stats(group)
        limits = {}
        for name in LIMIT_FILES:
            value = group.read_optional(name)
            if value is not None:
                limits[name] = " ".join(value.split())
    except OSError as exc:
        return {"path": group.path, "exists": group.exists(), "error": exc.strerror or str(exc)}
    return {"path": group.path, "relpath": group.relpath, "exists": True, "limits": limits, "stats": stats,
            "exec_groups": [child.parts[-1] for child in _children(group) if child.parts[-1].startswith("kb-exec-")]}


def _children(group: cgroup.Cgroup) -> t.List[cgroup.Cgroup]:
    try:
        return group.children()
    except OSError:
        return []


def member_pids(snapshot: Snapshot, init: int) -> t.List[int]:
    """The container's processes: everything in the init's PID namespace (exec'd commands too), or, when
    the container shares the host's, the init's descendants."""
    entry = snapshot.procs.get(init)
    if entry is None:
        return []
    if entry.pidns is not None and entry.pidns != snapshot.own_ns.get("pid"):
        return sorted(pid for pid, proc in snapshot.procs.items() if proc.pidns == entry.pidns)
    return procscan.descendants(init, snapshot.children)


def process_table(snapshot: Snapshot, pids: t.Iterable[int]) -> t.List[t.Dict[str, t.Any]]:
    import psutil  # deferred: an optional target dependency, checked by the module
    table = []
    for pid in pids:
        entry = snapshot.procs.get(pid)
        if entry is None:
            continue
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                info = proc.as_dict(attrs=["name", "cmdline", "status", "uids", "memory_info", "create_time",
                                           "num_threads"])
            nspid = _nspid(pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        memory = info.get("memory_info")
        table.append({
            "pid": pid, "ns_pid": nspid, "ppid": entry.ppid, "name": info.get("name") or entry.comm,
            "cmdline": info.get("cmdline") or [], "status": info.get("status"),
            "uid": info["uids"].effective if info.get("uids") else None,
            "rss": memory.rss if memory else None, "threads": info.get("num_threads"),
            "started": _iso(info.get("create_time")),
        })
    return table


def _nspid(pid: int) -> t.Optional[int]:
    try:
        with open("/proc/%d/status" % pid, encoding="utf-8", errors="replace") as handle:
            values = procfs.parse_status(handle.read()).get("NSpid", "").split()
    except OSError:
        return None
    return int(values[-1]) if values else None


def _iso(stamp: t.Optional[float]) -> t.Optional[str]:
    if not stamp:
        return None
    from datetime import datetime, timezone
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat()


def rootfs_info(snapshot: Snapshot, root: t.Optional[str]) -> t.Optional[t.Dict[str, t.Any]]:
    """The mount at the root directory (an overlay from overlay_rootfs, with its layers), or, for a plain
    directory, the filesystem it lives on; from the host's mountinfo, read once for all containers."""
    if not root:
        return None
    found, top = overlay.find_overlay(root, snapshot.mounts)
    mount = None
    if found is not None:
        mount = {"fstype": "overlay", "source": found.info.source, "lower": list(found.lower), "upper": found.upper,
                 "work": found.work, "readonly": found.readonly, "options": dict(found.shown_options)}
    elif top is not None:
        mount = {"fstype": top.fstype, "source": top.source}
    holder = snapshot.mount_holding(root)
    return {"path": root, "mount": mount,
            "filesystem": None if holder is None else {"fstype": holder.fstype, "source": holder.source,
                                                       "mount_point": holder.mount_point}}


def log_info(container: state.Container, lines: int) -> t.Dict[str, t.Any]:
    path = container.paths.log_file
    try:
        size = os.stat(path).st_size
    except OSError:
        size = None
    return {"path": path, "size": size, "tail": logs.tail(path, lines) if size is not None else []}


def namespace_info(snapshot: Snapshot, pid: int) -> t.Tuple[t.Dict[str, int], t.List[str]]:
    inodes = procscan.namespace_inodes(pid, NS_FILES)
    shared = sorted(kind for kind in inodes if kind in snapshot.own_ns and inodes[kind] == snapshot.own_ns[kind]
                    and "_for_children" not in kind)
    return inodes, shared


def describe(name: str, snapshot: Snapshot, layout: state.Layout = state.DEFAULT_LAYOUT,
             log_lines: int = 10) -> t.Dict[str, t.Any]:
    """One container, as container_info returns it."""
    try:
        container = state.load(name, layout)
    except KernelboxError as exc:
        return {"name": name, "state": "unknown", "error": exc.msg}
    status, note = state_of(container)
    result: t.Dict[str, t.Any] = {"name": name, "state": status, "running": status in (
        state.RUNNING, state.STARTING, state.STOPPING)}
    if status == "absent":
        return result
    runtime, settings = container.runtime, container.settings
    consistent = container.consistent  # a digest of the whole config: compute it once
    proc = container.process() if result["running"] else None
    pid = proc.pid if proc is not None else None
    result.update({
        "pid": pid,
        "started_at": runtime.started_at if runtime else None,
        "exited_at": None if result["running"] or runtime is None else runtime.exited_at,
        "exit_code": None if result["running"] or runtime is None else runtime.exit_code,
        "exit_signal": None if result["running"] or runtime is None else runtime.exit_signal,
        "note": note,
        "restart_count": runtime.restart_count if runtime else 0,
        "restart_policy": settings.restart_policy if settings else None,
        "enabled": settings.enabled if settings else None,
        "supervisor": settings.supervisor if settings else None,
        "error": runtime.error if runtime else None,
        "spec": spec_summary(container.config if consistent else None),
        "log": log_info(container, log_lines),
    })
    cgroup_path = (runtime.cgroup if runtime and runtime.cgroup else None) or (
        settings.cgroup.get("path") if settings else None)
    result["cgroup"] = cgroup_info(snapshot, cgroup_path)
    result["ports"] = snapshot.published(name)
    root = (result["spec"] or {}).get("rootfs")
    if pid is None:
        result.update(namespaces=None, namespaces_shared_with_host=None, processes=[], network=None)
        result["rootfs"] = rootfs_info(snapshot, root)
        return result
    inodes, shared = namespace_info(snapshot, pid)
    result["namespaces"] = inodes
    result["namespaces_shared_with_host"] = shared
    result["processes"] = process_table(snapshot, member_pids(snapshot, pid))
    if "net" in shared or "net" not in inodes:
        result["network"] = None
    else:
        result["network"] = snapshot.network(inodes["net"], pid)
    result["rootfs"] = rootfs_info(snapshot, root)
    return result


def collect(names: t.Optional[t.Sequence[str]], layout: state.Layout = state.DEFAULT_LAYOUT,
            log_lines: int = 10, cpu_sample: float = 0.0) -> t.List[t.Dict[str, t.Any]]:
    """Every container named (all that have state when ``names`` is None), sorted by name."""
    wanted = sorted(set(names)) if names is not None else state.list_names(layout)
    snapshot = Snapshot()
    found = [describe(name, snapshot, layout, log_lines) for name in wanted]
    if cpu_sample > 0:
        sample_cpu(found, cpu_sample)
    return found


def sample_cpu(containers: t.List[t.Dict[str, t.Any]], interval: float) -> None:
    """cpu_percent for running containers: cpu.stat usage_usec read twice, ``interval`` apart (one sleep for all)."""
    first: t.Dict[str, t.Tuple[float, int]] = {}
    for item in containers:
        usage = _usage(item)
        if usage is not None:
            first[item["name"]] = (time.monotonic(), usage)
    if not first:
        return
    time.sleep(interval)
    for item in containers:
        if item["name"] not in first:
            continue
        usage = _usage(item)
        started, before = first[item["name"]]
        elapsed = time.monotonic() - started
        if usage is not None and elapsed > 0:
            item["cgroup"]["stats"]["cpu_percent"] = round((usage - before) / (elapsed * 1e6) * 100.0, 2)


def _usage(item: t.Mapping[str, t.Any]) -> t.Optional[int]:
    group = item.get("cgroup") or {}
    if not item.get("running") or not group.get("exists") or "stats" not in group:
        return None
    try:
        with open(os.path.join(group["path"], "cpu.stat"), encoding="ascii") as handle:
            return procfs.parse_flat_keyed(handle.read()).get("usage_usec")
    except OSError:
        return None
