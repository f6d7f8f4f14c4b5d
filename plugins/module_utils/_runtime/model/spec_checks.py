# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: semantic checks and normalisation of a Spec.

Called through ``Spec.validate()``.  Pure: nothing here touches the host.
Every error names the dotted OCI key, so a module can pass it on as ``msg``.
Rules come from the OCI runtime spec (config.md, config-linux.md) and from what
the kernel would refuse later anyway, caught here before anything is made.
"""

from __future__ import annotations

import posixpath
import re
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import capabilities as caps
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import mountopts
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import Spec

# OCI namespace types, in the order the launcher enters them.
NAMESPACE_TYPES = ("user", "pid", "network", "ipc", "uts", "mount", "cgroup", "time")
_NAMESPACE_ALIASES = {"net": "network", "mnt": "mount"}

# include/uapi/asm-generic/resource.h
RLIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
           "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
           "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME")
RLIM_INFINITY = (1 << 64) - 1

MAX_ID = (1 << 32) - 2  # (uid_t)-1 means "no change" to the kernel
HOST_NAME_MAX = 64
MAX_ID_MAP_LINES = 340  # kernel/user_namespace.c, since Linux 4.15
MAX_ETC_FILE = 64 * 1024

# Sysctls that are namespaced, and by what (runc's validator has the same table).
_IPC_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}
_UTS_SYSCTLS = {"kernel.hostname", "kernel.domainname"}

PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "unbindable", "runbindable")


def check(spec: "Spec") -> t.List[str]:
    """Check and normalise ``spec`` in place; returns warnings (what normalisation gave up)."""
    warnings: t.List[str] = []
    _check_version(spec.oci_version)
    _check_process(spec, warnings)
    _check_hooks(spec)
    spec.root.path = _abs_path(spec.root.path, "root.path", allow_root=True)
    _check_namespaces(spec)
    _check_id_mappings(spec)
    _check_time_offsets(spec)
    for key in ("hostname", "domainname"):
        value = getattr(spec, key)
        if value is None:
            continue
        if len(value.encode()) > HOST_NAME_MAX:
            raise ValidationError("%s: %r is longer than %d bytes" % (key, value, HOST_NAME_MAX))
        validate.hostname(value, key)  # RFC 1123: no newline or space can reach /etc/hostname or /etc/hosts
        if spec.linux.namespace("uts") is None:
            raise ValidationError("%s: setting it needs a uts namespace (it would change the host's)" % key)
    _check_mounts(spec)
    _check_linux_paths(spec)
    _check_sysctl(spec)
    _check_devices(spec)
    _check_annotations(spec)
    if spec.linux.rootfs_propagation is not None and spec.linux.rootfs_propagation not in PROPAGATIONS:
        raise ValidationError("linux.rootfsPropagation: %r is not one of %s (shared propagation would let "
                              "container mounts reach the host)"
                              % (spec.linux.rootfs_propagation, ", ".join(PROPAGATIONS)))
    if spec.linux.cgroups_path is not None and ".." in spec.linux.cgroups_path.split("/"):
        raise ValidationError("linux.cgroupsPath: %r must not contain '..'" % spec.linux.cgroups_path)
    if spec.linux.seccomp is not None:
        spec.linux.seccomp.validate()
    return warnings


def version_tuple(text: str) -> t.Optional[t.Tuple[int, int, int]]:
    """'1.0.2-dev' -> (1, 0, 2); None when it is not MAJOR.MINOR.PATCH (with an optional -suffix or +suffix)."""
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.+-]*)?$", text)
    return None if match is None else (int(match.group(1)), int(match.group(2)), int(match.group(3)))


def _check_version(text: str) -> None:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import (
        OCI_VERSION_MAX, OCI_VERSION_MIN)
    found = version_tuple(text)
    low, high = version_tuple(OCI_VERSION_MIN), version_tuple(OCI_VERSION_MAX)
    if found is None or low is None or high is None or not low <= found[:2] + (0,) <= high:
        raise ValidationError("ociVersion: %r is not a runtime-spec version this runtime reads (%s to %s.x)"
                              % (text, OCI_VERSION_MIN, OCI_VERSION_MAX.rsplit(".", 1)[0]))


def _check_hooks(spec: "Spec") -> None:
    hooks = spec.hooks
    if hooks is None:
        return
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import HOOK_NAMES
    for name in HOOK_NAMES:
        for index, hook in enumerate(hooks.of(name)):
            where = "hooks.%s[%d]" % (name, index)
            if not hook.path.startswith("/"):
                raise ValidationError("%s.path: %r must be an absolute path" % (where, hook.path))
            if hook.timeout is not None and hook.timeout <= 0:
                raise ValidationError("%s.timeout: %d must be greater than zero" % (where, hook.timeout))
            for position, entry in enumerate(hook.env):
                if "=" not in entry or entry.startswith("="):
                    raise ValidationError("%s.env[%d]: %r must look like NAME=value" % (where, position, entry))
    if not any(hooks.of(name) for name in HOOK_NAMES):
        spec.hooks = None  # an empty hooks object means the same as none


def _abs_path(value: str, where: str, allow_root: bool = False) -> str:
    """An absolute path with no '..' component, spelled canonically ('//a/./b/' -> '/a/b')."""
    if not value.startswith("/"):
        raise ValidationError("%s: %r must be an absolute path" % (where, value))
    if ".." in value.split("/"):
        raise ValidationError("%s: %r must not contain '..'" % (where, value))
    normal = posixpath.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if normal == "/" and not allow_root:
        raise ValidationError("%s: '/' is not allowed here" % where)
    return normal


def _check_id(value: int, where: str) -> None:
    if not 0 <= value <= MAX_ID:
        raise ValidationError("%s: %d is not a valid id (0..%d)" % (where, value, MAX_ID))


# include/uapi/linux/binfmts.h: one argv or envp string, and the floor of the whole (32 pages); the rest is
# fs/exec.c prepare_arg_pages(): strings plus pointers within min(3/4 of 8 MiB, RLIMIT_STACK / 4).
MAX_ARG_STRLEN = 32 * 4096
ARG_MAX_FLOOR = 32 * 4096
_STK_LIM = 8 << 20
_DEFAULT_STACK = 8 << 20


def exec_budget(process: t.Any) -> int:
    """How many bytes of argv and environment (strings and pointers) execve accepts under the container's
    RLIMIT_STACK (8 MiB when the spec sets none)."""
    stack = next((r.soft for r in process.rlimits if r.type == "RLIMIT_STACK"), _DEFAULT_STACK)
    return max(min(_STK_LIM // 4 * 3, stack // 4), ARG_MAX_FLOOR)


def _check_exec_size(process: t.Any) -> None:
    """What execve would refuse with E2BIG or EINVAL, refused now, naming the entry."""
    total = 0
    for key, values in (("process.args", process.args), ("process.env", process.env)):
        for index, text in enumerate(values):
            raw = text.encode("utf-8", "surrogateescape")
            if b"\0" in raw:
                raise ValidationError("%s[%d]: contains a NUL byte, which cannot pass through execve" % (key, index))
            if len(raw) + 1 > MAX_ARG_STRLEN:
                raise ValidationError("%s[%d]: is %d bytes; execve takes at most %d per string (MAX_ARG_STRLEN)"
                                      % (key, index, len(raw), MAX_ARG_STRLEN - 1))
            total += len(raw) + 1 + 8
    budget = exec_budget(process)
    if total > budget:
        raise ValidationError("process.args and process.env: %d bytes together (with their pointers); execve takes "
                              "at most %d here (a quarter of RLIMIT_STACK, 6 MiB at most)" % (total, budget))


def _check_process(spec: "Spec", warnings: t.List[str]) -> None:
    process = spec.process
    if not process.args:
        raise ValidationError("process.args: must name the command to run (a non-empty list)")
    if process.args[0] == "":
        raise ValidationError("process.args[0]: must not be empty")
    for index, entry in enumerate(process.env):
        name, sep, _value = entry.partition("=")
        if not sep or not name:
            raise ValidationError("process.env[%d]: %r must look like NAME=value" % (index, entry))
    _check_exec_size(process)
    if not process.cwd.startswith("/"):
        raise ValidationError("process.cwd: %r must be an absolute path" % process.cwd)
    if process.console_size is not None and (process.console_size.height < 0 or process.console_size.width < 0):
        raise ValidationError("process.consoleSize: height and width must not be negative")
    _check_id(process.user.uid, "process.user.uid")
    _check_id(process.user.gid, "process.user.gid")
    for index, gid in enumerate(process.user.additional_gids):
        _check_id(gid, "process.user.additionalGids[%d]" % index)
    process.user.additional_gids = sorted(set(process.user.additional_gids))
    if process.user.umask is not None and not 0 <= process.user.umask <= 0o777:
        raise ValidationError("process.user.umask: %r is not a umask (0..0777)" % process.user.umask)
    capset = process.capabilities
    for name in caps.SETS:
        setattr(capset, name, caps.normalise_names(getattr(capset, name), "process.capabilities.%s" % name))
    _subset(capset.effective, capset.permitted, "effective", "permitted")
    _subset(capset.permitted, capset.bounding, "permitted", "bounding")
    _subset(capset.inheritable, capset.bounding, "inheritable", "bounding")
    # The kernel keeps an ambient capability only while it is permitted and inheritable, and runc's own
    # example asks for ambient ones it never makes inheritable: those are dropped, with a warning, as runc
    # does.  Dropping them only ever leaves the process with fewer privileges.
    lost = [name for name in capset.ambient if name not in capset.permitted or name not in capset.inheritable]
    if lost:
        capset.ambient = [name for name in capset.ambient if name not in lost]
        warnings.append("process.capabilities.ambient: %s not kept (an ambient capability must also be permitted "
                        "and inheritable, and these are not)" % ", ".join(lost))
    seen: t.Set[str] = set()
    for index, limit in enumerate(process.rlimits):
        where = "process.rlimits[%d]" % index
        name = limit.type.strip().upper()
        name = name if name.startswith("RLIMIT_") else "RLIMIT_" + name
        if name not in RLIMITS:
            raise ValidationError("%s.type: unknown rlimit %r (one of %s)" % (where, limit.type, ", ".join(RLIMITS)))
        if name in seen:
            raise ValidationError("%s.type: %s is given twice" % (where, name))
        seen.add(name)
        limit.type = name
        for key in ("soft", "hard"):
            if not 0 <= getattr(limit, key) <= RLIM_INFINITY:
                raise ValidationError("%s.%s: %r is out of range" % (where, key, getattr(limit, key)))
        if limit.soft > limit.hard:
            raise ValidationError("%s: soft limit %d is above the hard limit %d" % (where, limit.soft, limit.hard))
    if process.oom_score_adj is not None and not -1000 <= process.oom_score_adj <= 1000:
        raise ValidationError("process.oomScoreAdj: %d is outside -1000..1000" % process.oom_score_adj)


def _subset(part: t.List[str], whole: t.List[str], part_name: str, whole_name: str) -> None:
    extra = [name for name in part if name not in whole]
    if extra:
        raise ValidationError("process.capabilities.%s: %s not in the %s set; the kernel only allows %s "
                              "capabilities that are also %s"
                              % (part_name, ", ".join(extra), whole_name, part_name, whole_name))


def _check_namespaces(spec: "Spec") -> None:
    seen: t.Set[str] = set()
    for index, entry in enumerate(spec.linux.namespaces):
        where = "linux.namespaces[%d]" % index
        kind = _NAMESPACE_ALIASES.get(entry.type, entry.type)
        if kind not in NAMESPACE_TYPES:
            raise ValidationError("%s.type: unknown namespace type %r (one of %s)"
                                  % (where, entry.type, ", ".join(NAMESPACE_TYPES)))
        if kind in seen:
            raise ValidationError("%s.type: namespace type %r is given twice (the OCI spec makes this an error)"
                                  % (where, kind))
        seen.add(kind)
        entry.type = kind
        if entry.path is not None:
            entry.path = _abs_path(entry.path, where + ".path")
    if "mount" not in seen:
        raise ValidationError("linux.namespaces: a mount namespace is required (pivot_root needs one; "
                              "kernelbox never changes the host's mount table)")
    mount = spec.linux.namespace("mount")
    if mount is not None and mount.path is not None:
        raise ValidationError("linux.namespaces: joining an existing mount namespace by path is not supported")
    spec.linux.namespaces.sort(key=lambda e: NAMESPACE_TYPES.index(e.type))


def _check_id_mappings(spec: "Spec") -> None:
    user = spec.linux.namespace("user")
    new_userns = user is not None and user.path is None
    for key in ("uid_mappings", "gid_mappings"):
        oci_key = "linux.%s" % ("uidMappings" if key == "uid_mappings" else "gidMappings")
        mappings = getattr(spec.linux, key)
        if not new_userns:
            if mappings:
                raise ValidationError("%s: id mappings need a new user namespace (type 'user' without a path)"
                                      % oci_key)
            continue
        if not mappings:
            raise ValidationError("%s: a new user namespace needs id mappings; without them no id is mapped "
                                  "and nothing inside can own a file" % oci_key)
        if len(mappings) > MAX_ID_MAP_LINES:
            raise ValidationError("%s: at most %d ranges are allowed" % (oci_key, MAX_ID_MAP_LINES))
        for index, mapping in enumerate(mappings):
            where = "%s[%d]" % (oci_key, index)
            if mapping.size < 1:
                raise ValidationError("%s.size: must be at least 1" % where)
            for name, start in (("containerID", mapping.container_id), ("hostID", mapping.host_id)):
                if start < 0 or start + mapping.size > (1 << 32) - 1:
                    raise ValidationError("%s.%s: range %d..%d is outside 0..%d"
                                          % (where, name, start, start + mapping.size - 1, MAX_ID))
        for attr, name in (("container_id", "containerID"), ("host_id", "hostID")):
            ranges = sorted((getattr(m, attr), getattr(m, attr) + m.size) for m in mappings)
            for (_a, end), (start, _b) in zip(ranges, ranges[1:]):
                if start < end:
                    raise ValidationError("%s: the %s ranges overlap (at %d)" % (oci_key, name, start))
        user = spec.process.user
        needed = [(0, "container id 0 (the launcher sets the container up as root inside)")]
        if key == "uid_mappings":
            needed.append((user.uid, "process.user.uid"))
        else:
            needed.append((user.gid, "process.user.gid"))
            needed += [(gid, "process.user.additionalGids") for gid in user.additional_gids]
        for wanted, what in needed:
            if not any(m.container_id <= wanted < m.container_id + m.size for m in mappings):
                raise ValidationError("%s: %s is %d, which these mappings do not map" % (oci_key, what, wanted)
                                      if what.startswith("process") else "%s: must map %s" % (oci_key, what))


def _check_time_offsets(spec: "Spec") -> None:
    offsets = spec.linux.time_offsets
    if offsets is None:
        return
    time_ns = spec.linux.namespace("time")
    if time_ns is None or time_ns.path is not None:
        raise ValidationError("linux.timeOffsets: offsets need a new time namespace (type 'time' without a path)")
    for clock in ("boottime", "monotonic"):
        offset = getattr(offsets, clock)
        if offset is None:
            continue
        if not 0 <= offset.nanosecs < 1000000000:
            raise ValidationError("linux.timeOffsets.%s.nanosecs: %d is outside 0..999999999"
                                  % (clock, offset.nanosecs))
        if abs(offset.secs) > (1 << 62):
            raise ValidationError("linux.timeOffsets.%s.secs: %d is out of range" % (clock, offset.secs))


def _check_mounts(spec: "Spec") -> None:
    for index, mount in enumerate(spec.mounts):
        where = "mounts[%d]" % index
        mount.destination = _abs_path(mount.destination, where + ".destination")
        options = mountopts.parse(mount.options, mount.type, where + ".options")
        if options.bind:
            if not mount.source or not mount.source.startswith("/"):
                raise ValidationError("%s.source: a bind mount needs an absolute host path, got %r"
                                      % (where, mount.source))
        elif not mount.type:
            raise ValidationError("%s.type: a filesystem type is required (or options 'bind'/'rbind')" % where)
        if mount.type in ("cgroup", "cgroup2") and not options.readonly:
            user_ns = spec.linux.namespace("user")
            if spec.linux.namespace("cgroup") is None or user_ns is None or user_ns.path is not None:
                raise ValidationError("%s: a writable cgroup mount needs new cgroup and user namespaces, or the "
                                      "container could raise its own limits or change the host's; add 'ro'"
                                      % where)


def _check_linux_paths(spec: "Spec") -> None:
    for key, oci_key in (("masked_paths", "linux.maskedPaths"), ("readonly_paths", "linux.readonlyPaths")):
        normal: t.List[str] = []
        for index, path in enumerate(getattr(spec.linux, key)):
            path = _abs_path(path, "%s[%d]" % (oci_key, index))
            if path not in normal:
                normal.append(path)
        setattr(spec.linux, key, normal)


def _check_sysctl(spec: "Spec") -> None:
    normal: t.Dict[str, str] = {}
    for key, value in spec.linux.sysctl.items():
        name = validate.sysctl_key(key, option="linux.sysctl")
        where = "linux.sysctl[%r]" % name
        if name.startswith("net."):
            needs = "network"
        elif name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            needs = "ipc"
        elif name in _UTS_SYSCTLS:
            needs = "uts"
        else:
            raise ValidationError("%s: not a namespaced sysctl; setting it would change the whole host" % where)
        if spec.linux.namespace(needs) is None:
            raise ValidationError("%s: needs a %s namespace, or it would change the host's" % (where, needs))
        normal[name] = validate.sysctl_value(value, option=where)
    spec.linux.sysctl = normal


def _check_devices(spec: "Spec") -> None:
    for index, device in enumerate(spec.linux.devices):
        where = "linux.devices[%d]" % index
        device.path = _abs_path(device.path, where + ".path")
        if not device.path.startswith("/dev/"):
            raise ValidationError("%s.path: %r must be under /dev" % (where, device.path))
        if device.type not in ("c", "b", "u", "p"):
            raise ValidationError("%s.type: %r is not one of c, b, u, p" % (where, device.type))
        if device.type != "p" and (device.major is None or device.minor is None):
            raise ValidationError("%s: a %s device needs major and minor numbers" % (where, device.type))
        if device.file_mode is not None and not 0 <= device.file_mode <= 0o7777:
            raise ValidationError("%s.fileMode: %r is not a file mode" % (where, device.file_mode))
        for key in ("uid", "gid"):
            if getattr(device, key) is not None:
                _check_id(getattr(device, key), "%s.%s" % (where, key))


def _check_annotations(spec: "Spec") -> None:
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import ETC_FILE_ANNOTATIONS
    for key, value in spec.annotations.items():
        if not key:
            raise ValidationError("annotations: keys must not be empty")
        if key in ETC_FILE_ANNOTATIONS and len(value.encode()) > MAX_ETC_FILE:
            raise ValidationError("annotations[%r]: the content of %s is limited to %d bytes"
                                  % (key, ETC_FILE_ANNOTATIONS[key], MAX_ETC_FILE))
