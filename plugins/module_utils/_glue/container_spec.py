# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: container_process options -> the OCI-shaped Spec.

Pure: nothing here touches the host (io.max devices and oci_config files are
resolved by the caller).  Every option lands on a field of spec.py's tree,
so a config.json given as ``oci_config`` and the options meet in the same
Spec, and the same recreate decision (``spec.recreate_keys``) applies.
Cgroup limits go to ``linux.resources.unified`` as the kernel prints them:
that key changes in place, never by a restart.
"""

from __future__ import annotations

import copy
import os
import re
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_limits
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import resources as resource_map
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import capabilities as caps
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

# Options that describe the spec; with oci_config none of them may be given.
SPEC_OPTIONS = ("rootfs", "command", "env", "cwd", "user", "groups", "umask", "hostname", "domainname",
                "namespaces", "uid_map", "gid_map", "time_offsets", "mounts", "readonly_rootfs", "capabilities",
                "cap_add", "cap_drop", "no_new_privileges", "rlimits", "seccomp", "masked_paths",
                "readonly_paths", "sysctls", "oom_score_adj", "annotations", "etc_hosts", "dns", "dns_search",
                "dns_options")

LIMIT_OPTIONS = ("cpu_max", "cpu_weight", "memory_max", "memory_high", "memory_low", "memory_swap_max",
                 "pids_max", "io_max", "cpuset_cpus", "cpuset_mems", "settings")

# What a limit file goes back to when the task stops managing it.
LIMIT_RESETS = {"cpu.max": "max 100000", "cpu.weight": "100", "memory.max": "max", "memory.high": "max",
                "memory.low": "0", "memory.swap.max": "max", "pids.max": "max", "io.max": "",
                "cgroup.max.depth": "max", "cgroup.max.descendants": "max"}

RLIM_INFINITY = (1 << 64) - 1

_NS_OPTIONS = (("user", "user"), ("pid", "pid"), ("net", "network"), ("ipc", "ipc"), ("uts", "uts"),
               ("cgroup", "cgroup"), ("time", "time"))


def _id_pair(value: str, option: str) -> t.Tuple[int, t.Optional[int]]:
    uid_text, _sep, gid_text = str(value).strip().partition(":")
    try:
        uid = int(uid_text)
        gid = int(gid_text) if gid_text != "" else None
    except ValueError:
        raise ValidationError("%s: %r must be numeric, UID or UID:GID (names are not resolved)" % (option, value))
    return uid, gid


def _octal(value: t.Any, option: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip(), 8)
    except ValueError:
        raise ValidationError("%s: %r is not an octal mode such as 0022" % (option, value))


def _rlimits(base: t.List[specs.Rlimit], given: t.Optional[t.Mapping[str, t.Any]]) -> t.List[specs.Rlimit]:
    merged = {limit.type: limit for limit in base}
    for key, value in (given or {}).items():
        name = str(key).strip().upper()
        name = name if name.startswith("RLIMIT_") else "RLIMIT_" + name
        option = "rlimits.%s" % key
        if isinstance(value, dict):
            soft, hard = value.get("soft"), value.get("hard")
            if soft is None or hard is None:
                raise ValidationError("%s: give both soft and hard" % option)
        elif isinstance(value, int) and not isinstance(value, bool):
            soft = hard = value
        else:
            soft_text, sep, hard_text = str(value).partition(":")
            soft, hard = soft_text, (hard_text if sep else soft_text)
        numbers = []
        for item in (soft, hard):
            text = str(item).strip().lower()
            if text in ("unlimited", "infinity", "-1"):
                numbers.append(RLIM_INFINITY)
                continue
            try:
                numbers.append(int(text))
            except ValueError:
                raise ValidationError("%s: %r is not a number, SOFT:HARD or unlimited" % (option, value))
        merged[name] = specs.Rlimit(name, numbers[0], numbers[1])
    return [merged[name] for name in sorted(merged)]


_TMPFS_SIZE = re.compile(r"[0-9]+([kKmMgGtTpPeE]|%)?")  # mm/shmem.c: memparse() bytes, or a percentage of RAM


def _mounts(base: t.List[specs.Mount], given: t.Optional[t.List[t.Dict[str, t.Any]]]) -> t.List[specs.Mount]:
    """The defaults, with the user's mounts added; a user mount on a default's destination replaces it."""
    extra: t.List[specs.Mount] = []
    for index, item in enumerate(given or []):
        option = "mounts[%d]" % index
        kind = item.get("type") or "bind"
        destination = item.get("destination")
        if not destination:
            raise ValidationError("%s.destination: is required" % option)
        options = list(item.get("options") or [])
        if kind == "bind":
            source = item.get("source")
            if not source or not os.path.isabs(source):
                raise ValidationError("%s.source: a bind mount needs an absolute host path" % option)
            options = ["rbind", "ro" if item.get("readonly") else "rw"] + options
            extra.append(specs.Mount(destination, "bind", os.path.normpath(source), options))
        elif kind == "tmpfs":
            if item.get("source"):
                raise ValidationError("%s.source: a tmpfs has no source" % option)
            options = ["nosuid", "nodev"] + (["ro"] if item.get("readonly") else []) + options
            if item.get("size"):
                size = str(item["size"]).strip()
                if not _TMPFS_SIZE.fullmatch(size):
                    raise ValidationError("%s.size: %r is not a tmpfs size such as 64m, 1g, 65536 or 50%%"
                                          % (option, item["size"]))
                options.append("size=%s" % size)
            if item.get("mode"):
                options.append("mode=%o" % _octal(item["mode"], option + ".mode"))
            extra.append(specs.Mount(destination, "tmpfs", "tmpfs", options))
        else:
            raise ValidationError("%s.type: %r is not bind or tmpfs" % (option, kind))
    replaced = {os.path.normpath(m.destination) for m in extra}
    return [m for m in base if m.destination not in replaced] + extra


def _etc_files(params: t.Mapping[str, t.Any], hostname: t.Optional[str]) -> t.Dict[str, str]:
    """Annotations carrying /etc/hosts, /etc/hostname and /etc/resolv.conf (when asked for)."""
    files: t.Dict[str, str] = {}
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if hostname:
        lines.append("127.0.1.1\t%s" % hostname)
    for name, address in sorted((params.get("etc_hosts") or {}).items()):
        name = validate.hostname(name, "etc_hosts")
        lines.append("%s\t%s" % (validate.ip_address(address, "etc_hosts.%s" % name), name))
    files["io.kernelbox.etc.hosts"] = "\n".join(lines) + "\n"
    if hostname:
        files["io.kernelbox.etc.hostname"] = hostname + "\n"
    dns = [validate.ip_address(server, "dns") for server in (params.get("dns") or [])]
    if dns or params.get("dns_search") or params.get("dns_options"):
        resolv = ["nameserver %s" % server for server in dns]
        if params.get("dns_search"):
            domains = [validate.hostname(domain, "dns_search", trailing_dot=True) for domain in params["dns_search"]]
            resolv.append("search %s" % " ".join(domains))
        if params.get("dns_options"):
            resolv.append("options %s" % " ".join(validate.resolver_option(item) for item in params["dns_options"]))
        files["io.kernelbox.etc.resolv-conf"] = "\n".join(resolv) + "\n"
    return files


def _seccomp(value: t.Any, spec: specs.Spec) -> t.Any:
    """'default' -> Docker's profile for the final capabilities; 'unconfined' -> none; an OCI object or file."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.seccomp import profile as seccomp
    if isinstance(value, str) and value.strip().startswith("/"):
        from ansible_collections.kernelbox.containers.plugins.module_utils._glue import container_options
        value = container_options.load_oci_config(value.strip(), "seccomp")
    if isinstance(value, dict):
        return seccomp.from_oci(copy.deepcopy(value), where="seccomp")
    text = "default" if value is None else str(value).strip().lower()
    if text == "unconfined":
        return None
    if text != "default":
        raise ValidationError("seccomp: %r is not default, unconfined, an OCI profile or a JSON file" % (value,))
    return specs.default_seccomp(spec)


def from_options(params: t.Mapping[str, t.Any], name: str) -> specs.Spec:
    """The Spec the options describe (validated and normalised by spec.py)."""
    rootfs = params.get("rootfs")
    if not rootfs:
        raise ValidationError("rootfs: is required to run a container (or give oci_config)")
    command = params.get("command")
    if not command:
        raise ValidationError("command: is required to run a container: the argv list, e.g. [/bin/sh, -c, 'exec httpd']")
    namespaces = dict(params.get("namespaces") or {})
    for key, default in (("pid", True), ("ipc", True), ("uts", True), ("net", True), ("user", True),
                         ("cgroup", True), ("time", False)):
        if namespaces.get(key) is None:
            namespaces[key] = default
    uts = namespaces["uts"]
    hostname = params.get("hostname") or (name if uts else None)
    spec = specs.default_spec(os.path.normpath(rootfs), list(command), hostname=hostname,
                              user_namespace=bool(namespaces["user"]))
    linux = spec.linux
    linux.namespaces = [specs.Namespace(oci) for option, oci in _NS_OPTIONS if namespaces[option]]
    linux.namespaces.append(specs.Namespace("mount"))
    netns = namespaces.get("netns")
    if netns:
        path = netns if netns.startswith("/") else "/run/netns/" + validate.netns_name(netns, "namespaces.netns")
        linux.namespaces = [n for n in linux.namespaces if n.type != "network"] + [specs.Namespace("network", path)]
    if namespaces["user"]:
        for option, attr in (("uid_map", "uid_mappings"), ("gid_map", "gid_mappings")):
            if params.get(option):
                setattr(linux, attr, [specs.IDMapping(m["container_id"], m["host_id"], m["size"])
                                      for m in params[option]])
    elif params.get("uid_map") or params.get("gid_map"):
        raise ValidationError("uid_map/gid_map: need namespaces.user=true")
    offsets = params.get("time_offsets") or {}
    if any(v is not None for v in offsets.values()):
        if not namespaces["time"]:
            raise ValidationError("time_offsets: need namespaces.time=true")
        kwargs = {}
        for clock in ("boottime", "monotonic"):
            if offsets.get(clock) is not None:
                seconds = float(offsets[clock])
                whole = int(seconds // 1)
                kwargs[clock] = specs.TimeOffset(whole, int(round((seconds - whole) * 1e9)) % 1000000000)
        linux.time_offsets = specs.TimeOffsets(**kwargs)
    spec.domainname = params.get("domainname")

    process = spec.process
    env = {"PATH": specs.DEFAULT_PATH.split("=", 1)[1]}
    for key, value in (params.get("env") or {}).items():
        if not key or "=" in str(key):
            raise ValidationError("env: %r is not a variable name" % key)
        env[str(key)] = "" if value is None else str(value)
    process.env = ["%s=%s" % (k, env[k]) for k in sorted(env)]
    process.cwd = params.get("cwd") or "/"
    if params.get("user") is not None:
        uid, gid = _id_pair(params["user"], "user")
        process.user.uid = uid
        process.user.gid = uid if gid is None else gid
    process.user.additional_gids = list(params.get("groups") or [])
    if params.get("umask") is not None:
        process.user.umask = _octal(params["umask"], "umask")
    if params.get("capabilities") is not None:
        capset = caps.normalise_names(params["capabilities"], "capabilities")
    else:
        capset = list(caps.DOCKER_DEFAULT)
    drop = [str(c).upper() for c in params.get("cap_drop") or []]
    if "ALL" in drop:
        capset = []
        drop = [c for c in drop if c != "ALL"]
    capset = [c for c in capset if c not in caps.normalise_names(drop, "cap_drop")]
    capset = caps.normalise_names(capset + list(params.get("cap_add") or []), "cap_add")
    process.capabilities = specs.Capabilities(bounding=list(capset), effective=list(capset),
                                              permitted=list(capset))
    if params.get("no_new_privileges") is not None:
        process.no_new_privileges = bool(params["no_new_privileges"])
    process.rlimits = _rlimits(process.rlimits, params.get("rlimits"))
    if params.get("oom_score_adj") is not None:
        process.oom_score_adj = params["oom_score_adj"]

    spec.root.readonly = bool(params.get("readonly_rootfs"))
    spec.mounts = _mounts(spec.mounts, params.get("mounts"))
    if params.get("masked_paths") is not None:
        linux.masked_paths = list(params["masked_paths"])
    if params.get("readonly_paths") is not None:
        linux.readonly_paths = list(params["readonly_paths"])
    linux.sysctl = {str(k): validate.sysctl_value(v) for k, v in (params.get("sysctls") or {}).items()}
    linux.seccomp = _seccomp(params.get("seccomp"), spec)
    annotations = {str(k): str(v) for k, v in (params.get("annotations") or {}).items()}
    if any(key in specs.ETC_FILE_ANNOTATIONS for key in annotations):
        raise ValidationError("annotations: io.kernelbox.etc.* are set from etc_hosts, hostname and dns")
    annotations.update(_etc_files(params, hostname if uts else None))
    spec.annotations = annotations
    return spec.validate()


def from_oci(config: t.Mapping[str, t.Any],
             bundle: t.Optional[str]) -> t.Tuple[specs.Spec, t.Optional[cgroup_limits.Limits]]:
    """A config.json (already loaded) as a Spec whose linux.resources keeps only the device rules, and the
    other resources as Limits (runtime-layer mapping: _runtime/model/resources.py).

    The limits become linux.resources.unified once their devices are resolved (``limit_files``),
    so one representation of limits is compared and changed in place.  Fields container_process
    cannot honour are refused here, before anything is made.
    """
    spec = specs.from_oci(dict(config), bundle=bundle)
    if spec.process.terminal:
        raise ValidationError("oci_config: process.terminal: container_process has no terminal to give the "
                              "container (its output goes to the log); set it to false, or run the bundle with "
                              "kernelbox-runtime and a console socket")
    if spec.hooks is not None:
        raise ValidationError("oci_config: hooks: container_process does not run OCI hooks; run the bundle with "
                              "kernelbox-runtime, which does")
    resources = spec.linux.resources
    if resources is None:
        return spec, None
    resource_map.device_rules(resources)  # checked now, applied by the launcher
    spec.linux.resources = specs.Resources(devices=list(resources.devices)) if resources.devices else None
    limits = resource_map.limits_from_oci(resources)
    limits.normalise()  # every value checked now, before anything is touched
    return spec, limits


def limits_from_oci(resources: specs.Resources) -> cgroup_limits.Limits:
    """OCI linux.resources as the cgroup library's Limits (the runtime's mapping, shared with the OCI CLI)."""
    return resource_map.limits_from_oci(resources)


def limit_files(cgroup_params: t.Optional[t.Mapping[str, t.Any]]) -> t.Dict[str, str]:
    """The cgroup option's limits as interface files and kernel-printed values (io.max devices resolved)."""
    given = {k: v for k, v in (cgroup_params or {}).items() if k in LIMIT_OPTIONS and v is not None}
    if not given:
        return {}
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
    return cgroup.limit_files(cgroup.Limits.from_params(given))


def with_limits(spec: specs.Spec, files: t.Mapping[str, str]) -> specs.Spec:
    """``spec`` with linux.resources.unified = ``files`` (merged over what oci_config gave); device rules kept."""
    result = spec.copy()
    unified = dict(result.linux.resources.unified) if result.linux.resources is not None else {}
    devices = list(result.linux.resources.devices) if result.linux.resources is not None else []
    unified.update(files)
    if unified or devices:
        result.linux.resources = specs.Resources(devices=devices, unified=dict(sorted(unified.items())))
    else:
        result.linux.resources = None
    return result


def unified_of(spec: t.Optional[specs.Spec]) -> t.Dict[str, str]:
    if spec is None or spec.linux.resources is None:
        return {}
    return dict(spec.linux.resources.unified)
