# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the OCI ``create`` (and ``run``'s first half) and ``update``.

``create`` loads the bundle through the same spec code as container_process
(``spec.from_oci``), makes the container's cgroup (``linux.cgroupsPath``, its
limits, its device program) and calls ``launch.start`` with the OCI stages:
the start gate, the console socket and the hooks.  It returns once the
container is *created*: its init is confined and waits at the gate.  A failed
``create`` leaves nothing behind: no process, no cgroup it made, no state.
``update`` changes limits in place, through the same mapping.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup, cgroup_devices
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.cgroup_limits import NormalisedLimits
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state as kbstate
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import cgroups_path
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import resources as resource_map
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import containers
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci import store as oci_store
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.oci.store import Record, Store
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import console, hooks, launch, lsm
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

MAX_CONFIG = 64 << 20
KILL_WAIT = containers.KILL_WAIT


@dataclass
class CreateOptions:
    bundle: str = "."
    pid_file: t.Optional[str] = None
    console_socket: t.Optional[str] = None
    console_fd: t.Optional[int] = None  # a connected socket to use as the console socket (a foreground run's own)
    preserve_fds: int = 0
    systemd_cgroup: bool = False
    gate: bool = True            # False for ``run``: the process execs straight away
    warnings: t.List[str] = field(default_factory=list)


# --- the bundle --------------------------------------------------------------------------

def load_bundle(bundle: str) -> t.Tuple[specs.Spec, str]:
    """(spec, absolute bundle path); every problem named, before anything is made."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG + 1)
    except FileNotFoundError:
        raise KernelboxError("bundle %s: config.json not found (%s)" % (bundle, path))
    except OSError as exc:
        raise KernelboxError("bundle %s: cannot read config.json: %s" % (bundle, exc.strerror))
    if len(raw) > MAX_CONFIG:
        raise KernelboxError("bundle %s: config.json is larger than %d MiB" % (bundle, MAX_CONFIG >> 20))
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise KernelboxError("bundle %s: config.json is not valid JSON: %s" % (bundle, exc))
    if not isinstance(data, dict):
        raise KernelboxError("bundle %s: config.json does not hold a JSON object" % bundle)
    try:
        spec = specs.from_oci(data, bundle=bundle)
    except ValidationError as exc:
        raise KernelboxError("bundle %s: config.json: %s" % (bundle, exc))
    given = ((data.get("root") or {}).get("path")) or ""
    if not os.path.isabs(given):
        real_bundle, real_root = os.path.realpath(bundle), os.path.realpath(spec.root.path)
        if os.path.commonpath([real_bundle, real_root]) != real_bundle:
            raise KernelboxError("bundle %s: config.json: root.path: %r leads outside the bundle through a symlink "
                                 "(to %s); give an absolute root.path to use a rootfs elsewhere"
                                 % (bundle, given, real_root))
    if not os.path.isdir(spec.root.path):
        raise KernelboxError("bundle %s: config.json: root.path: %s is not a directory" % (bundle, spec.root.path))
    try:
        lsm.check(spec)
    except ValidationError as exc:
        raise KernelboxError("bundle %s: config.json: %s" % (bundle, exc))
    return spec, bundle


# --- the cgroup ------------------------------------------------------------------------

def prepare_cgroup(spec: specs.Spec, container_id: str, systemd: bool) -> t.Tuple[cgroup.Cgroup, bool]:
    """The container's group with its limits and device program; (group, made by us)."""
    if systemd:
        raise KernelboxError("--systemd-cgroup: kernelbox-runtime does not ask systemd for a scope (it does not "
                             "speak D-Bus); use the cgroupfs manager (podman: --cgroup-manager=cgroupfs). A "
                             "cgroupsPath in systemd's slice:prefix:name form is still placed where systemd "
                             "would put it")
    try:
        relative = cgroups_path.resolve(spec.linux.cgroups_path, container_id)
    except ValidationError as exc:
        raise KernelboxError(str(exc))
    hierarchy = cgroup.find_hierarchy()
    group = cgroup.resolve("/" + relative, parent="", hierarchy=hierarchy)
    normal = NormalisedLimits()
    if spec.linux.resources is not None:
        try:
            normal = resource_map.limits_from_oci(spec.linux.resources).normalise()
        except ValidationError as exc:
            raise KernelboxError(str(exc))
        normal = NormalisedLimits(files=resource_map.without_fresh_defaults(normal.files, hierarchy.controllers),
                                  io_rules=normal.io_rules)
    needed = normal.controllers()
    cgroup.require_controllers(hierarchy, needed)
    made = not group.exists()
    if not made and group.procs():
        raise KernelboxError("linux.cgroupsPath: %s already holds processes; a container needs an empty group"
                             % group.path)
    try:
        cgroup.ensure_group(group, needed)
        cgroup.apply_limits(group, normal)
        rules = resource_map.device_rules(spec.linux.resources)
        if rules is not None:
            cgroup_devices.attach(group.path, rules)
    except BaseException:
        if made:
            _remove_group(group.path)
        raise
    return group, made


def _remove_group(path: str) -> None:
    hierarchy = cgroup.find_hierarchy()
    relative = os.path.relpath(path, hierarchy.mount)
    if relative.startswith("..") or relative == ".":
        return
    cgroup.kill_and_remove(cgroup.resolve("/" + relative, parent="", hierarchy=hierarchy), timeout=KILL_WAIT)


# --- create, start, run ------------------------------------------------------------------

def _stdio() -> t.Tuple[t.List[t.Optional[int]], t.List[int]]:
    """The caller's fds 0-2 for the container (closed ones replaced by /dev/null), and what we opened."""
    fds: t.List[t.Optional[int]] = []
    opened = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            opened.append(null)
            fds.append(null if fd else None)
    return fds, opened


def _preserved(count: int) -> t.List[int]:
    fds = list(range(3, 3 + count))
    for fd in fds:
        try:
            os.fstat(fd)
        except OSError:
            raise KernelboxError("--preserve-fds %d: fd %d is not open" % (count, fd))
    return fds


def _console(spec: specs.Spec, options: CreateOptions) -> t.Optional[int]:
    if options.console_fd is not None:
        return os.dup(options.console_fd)
    if spec.process.terminal and not options.console_socket:
        raise KernelboxError("cannot allocate a tty: the config asks for process.terminal and no --console-socket "
                             "was given to receive it")
    if options.console_socket and not spec.process.terminal:
        raise KernelboxError("cannot use --console-socket: the config does not ask for process.terminal")
    if not options.console_socket:
        return None
    try:
        return console.connect(options.console_socket)
    except OSError as exc:
        raise KernelboxError("--console-socket %s: cannot connect: %s" % (options.console_socket, exc.strerror))


def _runtime_hooks(spec: specs.Spec, state: t.Callable[[str, int], bytes]) -> t.Callable[[int], None]:
    def run(pid: int) -> None:
        for name in ("prestart", "createRuntime"):
            hooks.run(name, hooks.calls(spec.hooks, name), state("creating", pid))
    return run


def create(store: Store, container_id: str, options: CreateOptions) -> Record:
    """The OCI create (or the first half of run): see the module docstring."""
    spec, bundle = load_bundle(options.bundle)
    options.warnings.extend(getattr(spec, "warnings", []))
    extra = _preserved(options.preserve_fds)
    store.claim(container_id)
    made_group = False
    group = None
    launched = None
    fds: t.List[int] = []
    try:
        group, made_group = prepare_cgroup(spec, container_id, options.systemd_cgroup)
        console_fd = _console(spec, options)
        if console_fd is not None:
            fds.append(console_fd)
        gate = None
        if options.gate:
            gate = _listen(store, container_id).detach()
            fds.append(gate)

        def state(status: str, pid: t.Optional[int]) -> bytes:
            return hooks.state_json(spec.oci_version, container_id, status, pid, bundle, spec.annotations)

        stdio, opened = _stdio()
        fds.extend(opened)
        stages = launch.Stages(console_socket=console_fd, hook_state=state("creating", None),
                               start_gate=gate,
                               runtime_hooks=_runtime_hooks(spec, state) if spec.hooks is not None else None)
        libc.set_child_subreaper()
        try:
            launched = launch.start(spec, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2], cgroup_dir=group.path,
                                    extra_files=extra, stages=stages)
        except hooks.HookError as exc:
            raise KernelboxError("%s failed: %s" % (exc.name, exc))
        record = Record(id=container_id, bundle=bundle, rootfs=spec.root.path, config=spec.to_oci(),
                        created=kbstate.now_iso(), pid=launched.pid, starttime=launched.starttime,
                        boot=kbstate.boot_id(), started=not options.gate, cgroup=group.path, cgroup_made=made_group)
        store.save(record)
        if options.pid_file:
            kbstate.write_bytes_atomic(os.path.abspath(options.pid_file), b"%d" % launched.pid, mode=0o644)
        return record
    except BaseException:
        if launched is not None:
            _kill_child(launched.pid)
        if made_group and group is not None:
            try:
                _remove_group(group.path)
            except (OSError, KernelboxError):
                pass
        store.remove(container_id)
        raise
    finally:
        for fd in fds:
            oci_store.close_quietly(fd)


def _listen(store: Store, container_id: str) -> socket.socket:
    dir_fd, path = oci_store.unix_path(store.path(container_id), oci_store.GATE)
    try:
        gate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        gate.bind(path)
        gate.listen(4)
        return gate
    finally:
        os.close(dir_fd)


def _kill_child(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def update(store: Store, container_id: str, changes: t.Mapping[str, t.Any]) -> t.List[t.Tuple[str, t.Any, str]]:
    """Limits changed in place (linux.resources, merged over the container's); [(file, before, after)] written."""
    if "devices" in changes:
        raise KernelboxError("linux.resources.devices cannot be changed by update: the device program is set "
                             "when the container is created")
    with store.lock(container_id):
        record = store.load(container_id)
        if oci_store.status(record) == oci_store.STOPPED:
            raise KernelboxError("container not running")
        group = containers.group_of(record)
        if group is None or not group.exists():
            raise KernelboxError("container %s has no cgroup of its own to update" % container_id)
        linux = record.config.setdefault("linux", {})
        merged = _merge(dict(linux.get("resources") or {}), dict(changes))
        try:
            resources = specs._from(specs.Resources, merged, "linux.resources")  # pylint: disable=protected-access
            normal = resource_map.limits_from_oci(resources).normalise()
        except ValidationError as exc:
            raise KernelboxError(str(exc))
        hierarchy = group.hierarchy
        normal = NormalisedLimits(files=resource_map.without_fresh_defaults(normal.files, hierarchy.controllers),
                                  io_rules=normal.io_rules)
        cgroup.require_controllers(hierarchy, normal.controllers())
        cgroup.ensure_group(group, normal.controllers())
        written = cgroup.apply_limits(group, normal)
        linux["resources"] = merged
        store.save(record)
        return written


def _merge(base: t.Dict[str, t.Any], changes: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base
