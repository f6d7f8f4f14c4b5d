# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the container spec, shaped like the OCI runtime spec.

One dataclass tree mirrors config.json (runtime-spec 1.x, Linux).  Python
attributes are snake_case; ``from_oci``/``to_oci`` map them to the camelCase
keys one to one.  Both the container_process module and an OCI bundle feed the
same launcher through it.

Unknown or unsupported config.json fields are **refused**, never silently
ignored: a runtime that drops a security setting it does not understand (a
personality, a scheduler policy) runs the container less confined than its
author asked.  ``ociVersion`` must be one this code reads (``OCI_VERSION_MIN``
to ``OCI_VERSION_MAX``).  Fields that depend on the host (AppArmor and SELinux
labels) are modelled here and checked against the host by the launcher.

``Spec.validate()`` (called by ``from_oci``) normalises in place (capability
names, namespace type aliases, path spelling) and raises ``ValidationError``
naming the dotted key, so two specs that mean the same thing compare equal.
The semantic checks live in spec_checks.py.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp_lib
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.capabilities import (
    DOCKER_DEFAULT as DOCKER_DEFAULT_CAPS)
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

OCI_VERSION = "1.1.0"
# The runtime-spec versions whose config.json this code reads (what `features` reports).
OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.3.0"

HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")

# Keys whose change is applied to a running container in place (cgroup files);
# every other difference forces a recreate, including linux.resources.devices
# (the device program is attached when the container starts).
IN_PLACE_KEYS = ("linux.resources",)
RECREATE_SUBKEYS = ("linux.resources.devices",)

# Annotations that carry the content of a file the launcher puts in the
# container's /etc (on a private tmpfs, so the rootfs is never written).
ETC_FILE_ANNOTATIONS = {
    "io.kernelbox.etc.hosts": "/etc/hosts",
    "io.kernelbox.etc.hostname": "/etc/hostname",
    "io.kernelbox.etc.resolv-conf": "/etc/resolv.conf",
}


# --- field declarations ------------------------------------------------------
# Each field records its OCI key and its kind: "str", "int", "bool", a
# dataclass, ("list", kind), ("map", kind), or ("oci", cls) for a class that
# brings its own from_oci()/to_oci() (the seccomp profile).

def _f(oci: str, kind: t.Any, default: t.Any = None, factory: t.Optional[t.Callable[[], t.Any]] = None,
       required: bool = False, keep_empty: bool = False) -> t.Any:
    meta = {"oci": oci, "kind": kind, "required": required, "keep_empty": keep_empty}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)  # pylint: disable=invalid-field-call
    return field(default=default, metadata=meta)  # pylint: disable=invalid-field-call


def _list(kind: t.Any) -> t.Tuple[str, t.Any]:
    return ("list", kind)


def _map(kind: t.Any) -> t.Tuple[str, t.Any]:
    return ("map", kind)


@dataclass
class User:
    uid: int = _f("uid", "int", 0)
    gid: int = _f("gid", "int", 0)
    additional_gids: t.List[int] = _f("additionalGids", _list("int"), factory=list)
    umask: t.Optional[int] = _f("umask", "int")

    _oci_ignorable = ("username",)


@dataclass
class Capabilities:
    """The five sets; an absent set is empty (never 'everything')."""

    bounding: t.List[str] = _f("bounding", _list("str"), factory=list, keep_empty=True)
    effective: t.List[str] = _f("effective", _list("str"), factory=list, keep_empty=True)
    permitted: t.List[str] = _f("permitted", _list("str"), factory=list, keep_empty=True)
    inheritable: t.List[str] = _f("inheritable", _list("str"), factory=list, keep_empty=True)
    ambient: t.List[str] = _f("ambient", _list("str"), factory=list, keep_empty=True)


@dataclass
class Rlimit:
    type: str = _f("type", "str", required=True)
    soft: int = _f("soft", "int", required=True)
    hard: int = _f("hard", "int", required=True)


@dataclass
class ConsoleSize:
    height: int = _f("height", "int", required=True)
    width: int = _f("width", "int", required=True)


@dataclass
class Process:
    args: t.List[str] = _f("args", _list("str"), factory=list, required=True)
    env: t.List[str] = _f("env", _list("str"), factory=list)
    cwd: str = _f("cwd", "str", "/")
    user: User = _f("user", User, factory=User)
    capabilities: Capabilities = _f("capabilities", Capabilities, factory=Capabilities)
    rlimits: t.List[Rlimit] = _f("rlimits", _list(Rlimit), factory=list)
    no_new_privileges: bool = _f("noNewPrivileges", "bool", False)
    oom_score_adj: t.Optional[int] = _f("oomScoreAdj", "int")
    terminal: bool = _f("terminal", "bool", False)
    console_size: t.Optional[ConsoleSize] = _f("consoleSize", ConsoleSize)
    apparmor_profile: t.Optional[str] = _f("apparmorProfile", "str")  # applied only where the host has AppArmor
    selinux_label: t.Optional[str] = _f("selinuxLabel", "str")  # applied only where the host has SELinux


@dataclass
class Root:
    path: str = _f("path", "str", required=True)
    readonly: bool = _f("readonly", "bool", False)


@dataclass
class Mount:
    destination: str = _f("destination", "str", required=True)
    type: t.Optional[str] = _f("type", "str")
    source: t.Optional[str] = _f("source", "str")
    options: t.List[str] = _f("options", _list("str"), factory=list)


@dataclass
class Namespace:
    type: str = _f("type", "str", required=True)
    path: t.Optional[str] = _f("path", "str")


@dataclass
class IDMapping:
    container_id: int = _f("containerID", "int", required=True)
    host_id: int = _f("hostID", "int", required=True)
    size: int = _f("size", "int", required=True)


@dataclass
class TimeOffset:
    secs: int = _f("secs", "int", 0)
    nanosecs: int = _f("nanosecs", "int", 0)


@dataclass
class TimeOffsets:
    boottime: t.Optional[TimeOffset] = _f("boottime", TimeOffset)
    monotonic: t.Optional[TimeOffset] = _f("monotonic", TimeOffset)


@dataclass
class Device:
    """linux.devices: an extra device node the container gets in /dev."""

    path: str = _f("path", "str", required=True)
    type: str = _f("type", "str", required=True)
    major: t.Optional[int] = _f("major", "int")
    minor: t.Optional[int] = _f("minor", "int")
    file_mode: t.Optional[int] = _f("fileMode", "int")
    uid: t.Optional[int] = _f("uid", "int")
    gid: t.Optional[int] = _f("gid", "int")


# --- linux.resources (applied by the cgroup layer, in place) ----------------

@dataclass
class DeviceRule:
    allow: bool = _f("allow", "bool", required=True)
    type: t.Optional[str] = _f("type", "str")
    major: t.Optional[int] = _f("major", "int")
    minor: t.Optional[int] = _f("minor", "int")
    access: t.Optional[str] = _f("access", "str")


@dataclass
class Memory:
    limit: t.Optional[int] = _f("limit", "int")
    reservation: t.Optional[int] = _f("reservation", "int")
    swap: t.Optional[int] = _f("swap", "int")
    swappiness: t.Optional[int] = _f("swappiness", "int")
    disable_oom_killer: t.Optional[bool] = _f("disableOOMKiller", "bool")
    use_hierarchy: t.Optional[bool] = _f("useHierarchy", "bool")
    check_before_update: t.Optional[bool] = _f("checkBeforeUpdate", "bool")


@dataclass
class CPU:
    shares: t.Optional[int] = _f("shares", "int")
    quota: t.Optional[int] = _f("quota", "int")
    burst: t.Optional[int] = _f("burst", "int")
    period: t.Optional[int] = _f("period", "int")
    realtime_runtime: t.Optional[int] = _f("realtimeRuntime", "int")
    realtime_period: t.Optional[int] = _f("realtimePeriod", "int")
    cpus: t.Optional[str] = _f("cpus", "str")
    mems: t.Optional[str] = _f("mems", "str")
    idle: t.Optional[int] = _f("idle", "int")


@dataclass
class Pids:
    limit: int = _f("limit", "int", required=True)


@dataclass
class WeightDevice:
    major: int = _f("major", "int", required=True)
    minor: int = _f("minor", "int", required=True)
    weight: t.Optional[int] = _f("weight", "int")
    leaf_weight: t.Optional[int] = _f("leafWeight", "int")


@dataclass
class ThrottleDevice:
    major: int = _f("major", "int", required=True)
    minor: int = _f("minor", "int", required=True)
    rate: int = _f("rate", "int", required=True)


@dataclass
class BlockIO:
    weight: t.Optional[int] = _f("weight", "int")
    leaf_weight: t.Optional[int] = _f("leafWeight", "int")
    weight_device: t.List[WeightDevice] = _f("weightDevice", _list(WeightDevice), factory=list)
    throttle_read_bps_device: t.List[ThrottleDevice] = _f("throttleReadBpsDevice", _list(ThrottleDevice),
                                                          factory=list)
    throttle_write_bps_device: t.List[ThrottleDevice] = _f("throttleWriteBpsDevice", _list(ThrottleDevice),
                                                           factory=list)
    throttle_read_iops_device: t.List[ThrottleDevice] = _f("throttleReadIOPSDevice", _list(ThrottleDevice),
                                                           factory=list)
    throttle_write_iops_device: t.List[ThrottleDevice] = _f("throttleWriteIOPSDevice", _list(ThrottleDevice),
                                                            factory=list)


@dataclass
class HugepageLimit:
    page_size: str = _f("pageSize", "str", required=True)
    limit: int = _f("limit", "int", required=True)


@dataclass
class Resources:
    devices: t.List[DeviceRule] = _f("devices", _list(DeviceRule), factory=list)
    memory: t.Optional[Memory] = _f("memory", Memory)
    cpu: t.Optional[CPU] = _f("cpu", CPU)
    pids: t.Optional[Pids] = _f("pids", Pids)
    block_io: t.Optional[BlockIO] = _f("blockIO", BlockIO)
    hugepage_limits: t.List[HugepageLimit] = _f("hugepageLimits", _list(HugepageLimit), factory=list)
    rdma: t.Dict[str, t.Dict[str, int]] = _f("rdma", _map(_map("int")), factory=dict)
    unified: t.Dict[str, str] = _f("unified", _map("str"), factory=dict)


@dataclass
class Linux:
    namespaces: t.List[Namespace] = _f("namespaces", _list(Namespace), factory=list)
    uid_mappings: t.List[IDMapping] = _f("uidMappings", _list(IDMapping), factory=list)
    gid_mappings: t.List[IDMapping] = _f("gidMappings", _list(IDMapping), factory=list)
    time_offsets: t.Optional[TimeOffsets] = _f("timeOffsets", TimeOffsets)
    devices: t.List[Device] = _f("devices", _list(Device), factory=list)
    resources: t.Optional[Resources] = _f("resources", Resources)
    cgroups_path: t.Optional[str] = _f("cgroupsPath", "str")
    rootfs_propagation: t.Optional[str] = _f("rootfsPropagation", "str")
    masked_paths: t.List[str] = _f("maskedPaths", _list("str"), factory=list)
    readonly_paths: t.List[str] = _f("readonlyPaths", _list("str"), factory=list)
    seccomp: t.Optional[seccomp_lib.Profile] = _f("seccomp", ("oci", seccomp_lib.Profile))
    sysctl: t.Dict[str, str] = _f("sysctl", _map("str"), factory=dict)
    mount_label: t.Optional[str] = _f("mountLabel", "str")  # SELinux only

    def namespace(self, oci_type: str) -> t.Optional[Namespace]:
        """The entry for ``oci_type`` ('pid', 'network', ...), or None when the host's is shared."""
        for entry in self.namespaces:
            if entry.type == oci_type:
                return entry
        return None


@dataclass
class Hook:
    """One hook: a host program run with the container's state (JSON) on its stdin."""

    path: str = _f("path", "str", required=True)
    args: t.List[str] = _f("args", _list("str"), factory=list)
    env: t.List[str] = _f("env", _list("str"), factory=list)
    timeout: t.Optional[int] = _f("timeout", "int")


@dataclass
class Hooks:
    """The lifecycle hooks, in the order the runtime calls them (runtime.md "Lifecycle")."""

    prestart: t.List[Hook] = _f("prestart", _list(Hook), factory=list)
    create_runtime: t.List[Hook] = _f("createRuntime", _list(Hook), factory=list)
    create_container: t.List[Hook] = _f("createContainer", _list(Hook), factory=list)
    start_container: t.List[Hook] = _f("startContainer", _list(Hook), factory=list)
    poststart: t.List[Hook] = _f("poststart", _list(Hook), factory=list)
    poststop: t.List[Hook] = _f("poststop", _list(Hook), factory=list)

    def of(self, oci_name: str) -> t.List[Hook]:
        """The hooks of one kind, by its config.json name ('createRuntime', ...)."""
        return list(getattr(self, _HOOK_ATTRS[oci_name]))


_HOOK_ATTRS = {"prestart": "prestart", "createRuntime": "create_runtime", "createContainer": "create_container",
               "startContainer": "start_container", "poststart": "poststart", "poststop": "poststop"}


@dataclass
class Spec:
    process: Process = _f("process", Process, required=True)
    root: Root = _f("root", Root, required=True)
    hostname: t.Optional[str] = _f("hostname", "str")
    domainname: t.Optional[str] = _f("domainname", "str")
    mounts: t.List[Mount] = _f("mounts", _list(Mount), factory=list)
    linux: Linux = _f("linux", Linux, factory=Linux)
    annotations: t.Dict[str, str] = _f("annotations", _map("str"), factory=dict)
    hooks: t.Optional[Hooks] = _f("hooks", Hooks)
    oci_version: str = _f("ociVersion", "str", OCI_VERSION)

    def validate(self) -> "Spec":
        """Normalise in place and check; raises ValidationError naming the dotted key.  Returns self.

        What normalisation had to give up is listed in ``self.warnings`` (ambient
        capabilities the kernel cannot raise), for the caller to show.
        """
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec_checks
        self.warnings = spec_checks.check(self)  # pylint: disable=attribute-defined-outside-init
        return self

    def to_oci(self) -> t.Dict[str, t.Any]:
        return to_oci(self)

    def copy(self) -> "Spec":
        return copy.deepcopy(self)


# --- OCI mapping ---------------------------------------------------------------

_T = t.TypeVar("_T")


def from_oci(data: t.Mapping[str, t.Any], bundle: t.Optional[str] = None) -> Spec:
    """A validated Spec from a config.json object.

    A relative ``root.path`` is taken relative to ``bundle`` (the bundle
    directory), as the OCI spec says; without a bundle it is an error.
    """
    spec = _from(Spec, data, "")
    if not os.path.isabs(spec.root.path):
        if bundle is None:
            raise ValidationError("root.path: %r is relative, and no bundle directory was given" % spec.root.path)
        spec.root.path = os.path.normpath(os.path.join(os.path.abspath(bundle), spec.root.path))
    return spec.validate()


def to_oci(obj: t.Any) -> t.Any:
    """A dataclass tree back to config.json shape (None and empty optional lists left out)."""
    if isinstance(obj, seccomp_lib.Profile):
        return obj.to_oci()
    if dataclasses.is_dataclass(obj):
        out: t.Dict[str, t.Any] = {}
        for item in dataclasses.fields(obj):
            value = getattr(obj, item.name)
            if value is None:
                continue
            if isinstance(value, (list, dict)) and not value and not item.metadata.get("keep_empty"):
                continue
            out[item.metadata["oci"]] = to_oci(value)
        return out
    if isinstance(obj, list):
        return [to_oci(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_oci(v) for k, v in obj.items()}
    return obj


def _join(path: str, key: str) -> str:
    return key if not path else "%s.%s" % (path, key)


def _from(cls: t.Type[_T], data: t.Any, path: str) -> _T:
    if not isinstance(data, dict):
        raise ValidationError("%s: must be an object, got %r" % (path or "spec", data))
    known = {item.metadata["oci"]: item for item in dataclasses.fields(cls)}
    ignorable = getattr(cls, "_oci_ignorable", ())
    dropped = getattr(cls, "_oci_dropped", ())
    for key in data:
        if key in known or key in dropped:
            continue
        where = _join(path, key)
        if key in ignorable:
            if data[key] in (None, "", {}, [], False):
                continue
            raise ValidationError("%s: kernelbox cannot apply this setting, and will not run the container "
                                  "without it; remove it or leave it empty" % where)
        raise ValidationError("%s: unknown or unsupported field (supported here: %s)"
                              % (where, ", ".join(sorted(known))))
    kwargs = {}
    for key, item in known.items():
        value = data.get(key)
        if value is None:
            if item.metadata["required"]:
                raise ValidationError("%s: is required" % _join(path, key))
            continue
        kwargs[item.name] = _convert(item.metadata["kind"], value, _join(path, key))
    return cls(**kwargs)  # type: ignore[call-arg]


def _convert(kind: t.Any, value: t.Any, path: str) -> t.Any:
    if kind == "str":
        if not isinstance(value, str):
            raise ValidationError("%s: must be a string, got %r" % (path, value))
        if "\0" in value:
            raise ValidationError("%s: must not contain a NUL byte" % path)
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("%s: must be an integer, got %r" % (path, value))
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValidationError("%s: must be true or false, got %r" % (path, value))
        return value
    if isinstance(kind, tuple) and kind[0] == "oci":
        return seccomp_lib.from_oci(value, where=path)
    if isinstance(kind, tuple) and kind[0] == "list":
        if not isinstance(value, list):
            raise ValidationError("%s: must be a list, got %r" % (path, value))
        return [_convert(kind[1], v, "%s[%d]" % (path, i)) for i, v in enumerate(value)]
    if isinstance(kind, tuple) and kind[0] == "map":
        if not isinstance(value, dict):
            raise ValidationError("%s: must be an object, got %r" % (path, value))
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError("%s: keys must be strings, got %r" % (path, key))
            out[key] = _convert(kind[1], item, "%s[%r]" % (path, key))
        return out
    return _from(kind, value, path)


# --- recreate decisions ------------------------------------------------------

def _without_in_place(spec: Spec) -> t.Dict[str, t.Any]:
    data = to_oci(spec)
    kept = {dotted: _lookup(data, dotted) for dotted in RECREATE_SUBKEYS}
    for dotted in IN_PLACE_KEYS:
        parent = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            parent = parent.get(part, {})
        parent.pop(parts[-1], None)
    for dotted, value in kept.items():
        if value is not None:
            parent = data
            parts = dotted.split(".")
            for part in parts[:-1]:
                parent = parent.setdefault(part, {})
            parent[parts[-1]] = value
    return data


def _lookup(data: t.Mapping[str, t.Any], dotted: str) -> t.Any:
    value: t.Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def recreate_digest(spec: Spec) -> str:
    """sha256 of every field that forces a recreate (all but linux.resources), key-order independent."""
    text = json.dumps(_without_in_place(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def recreate_keys(old: Spec, new: Spec) -> t.List[str]:
    """Dotted OCI keys whose difference forces a recreate, sorted ('process.env', 'mounts', ...).

    Objects are compared key by key; lists are compared whole and named by
    their key.  linux.resources is left out: the cgroup layer changes it live.
    """
    found: t.List[str] = []
    _diff_keys(_without_in_place(old), _without_in_place(new), "", found)
    return sorted(found)


def _diff_keys(old: t.Any, new: t.Any, path: str, found: t.List[str]) -> None:
    if isinstance(old, dict) or isinstance(new, dict):
        old = {} if old is None else old
        new = {} if new is None else new
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            name = ("%s[%r]" % (path, key)) if "." in key else _join(path, key)
            _diff_keys(old.get(key), new.get(key), name, found)
    elif old != new:
        found.append(path)


# --- secure defaults -----------------------------------------------------------

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# runc's maskedPaths plus moby's powercap (a power side channel: kubernetes PR #125970).
DEFAULT_MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# Root inside is 100000 outside, and the 65536 ids above it follow: the
# example in the issue, and the same shape as /etc/subuid ranges.
DEFAULT_ID_MAPPING = (0, 100000, 65536)


def default_mounts() -> t.List[Mount]:
    """The filesystems every container gets (runc's and Docker's defaults, plus /tmp)."""
    return [
        Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts",
              ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        Mount("/sys/fs/cgroup", "cgroup2", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro"]),
        Mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"]),
    ]


def default_spec(rootfs: str, args: t.Sequence[str], *, hostname: t.Optional[str] = "kernelbox",
                 user_namespace: bool = True,
                 id_mapping: t.Tuple[int, int, int] = DEFAULT_ID_MAPPING,
                 seccomp: bool = True) -> Spec:
    """The secure defaults: every namespace but time, Docker's 14 capabilities, no_new_privs.

    * Namespaces: user, pid, network, ipc, uts, mount and cgroup are new;
      time is off (it only matters to software that reads CLOCK_BOOTTIME or
      CLOCK_MONOTONIC across a migration).
    * User namespace: a user namespace without id maps maps nothing, so the
      default maps container ids 0..65535 to host ids 100000..165535
      (``id_mapping`` as (container_id, host_id, size)).  Root inside is
      then an unprivileged id outside: an escape through a kernel bug lands
      as uid 100000, not as root.  Files the container must write (an
      overlay upper dir, volumes) must be owned by the mapped ids; files
      owned by host root show up as nobody (65534) and are read-only to it.
      Every container gets the same range unless the caller passes another:
      give each container its own range to isolate containers from each
      other as well as from the host.  ``user_namespace=False`` turns it off.
    * Capabilities: bounding = effective = permitted = Docker's 14;
      inheritable and ambient empty (CVE-2022-24769).
    * no_new_privileges; RLIMIT_NOFILE 1024:1024; umask 0022.
    * Mounts: see ``default_mounts``; /dev also gets the default devices
      (null, zero, full, random, urandom, tty, ptmx) bound from the host.
    * runc's masked and read-only paths.
    * Seccomp: Docker's default profile for these capabilities
      (seccomp.default_profile); it depends on the bounding set, so a caller
      that changes the capabilities rebuilds it with ``default_seccomp(spec)``.
      ``seccomp=False`` leaves the container unfiltered.
    """
    namespaces = [Namespace(kind) for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    mappings: t.List[IDMapping] = []
    if user_namespace:
        namespaces.insert(0, Namespace("user"))
        mappings = [IDMapping(*id_mapping)]
    docker = list(DOCKER_DEFAULT_CAPS)
    spec = Spec(
        process=Process(
            args=list(args),
            env=[DEFAULT_PATH],
            cwd="/",
            user=User(uid=0, gid=0, umask=0o022),
            capabilities=Capabilities(bounding=list(docker), effective=list(docker), permitted=list(docker)),
            rlimits=[Rlimit("RLIMIT_NOFILE", 1024, 1024)],
            no_new_privileges=True,
        ),
        root=Root(path=rootfs, readonly=False),
        hostname=hostname,
        mounts=default_mounts(),
        linux=Linux(
            namespaces=namespaces,
            uid_mappings=mappings,
            gid_mappings=copy.deepcopy(mappings),
            masked_paths=list(DEFAULT_MASKED_PATHS),
            readonly_paths=list(DEFAULT_READONLY_PATHS),
        ),
    )
    if seccomp:
        spec.linux.seccomp = default_seccomp(spec)
    return spec.validate()


def default_seccomp(spec: Spec) -> seccomp_lib.Profile:
    """Docker's default seccomp profile for the spec's bounding set (what Docker does on --cap-add)."""
    return seccomp_lib.default_profile(spec.process.capabilities.bounding)
