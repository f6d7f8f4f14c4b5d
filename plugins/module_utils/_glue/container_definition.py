# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the container module's options, as a definition (pure).

A *definition* is the container as its tasks described it: the options a
task gave, normalised (``command: "sleep 600"`` and ``[sleep, "600"]`` are
the same), merged over what earlier tasks gave.  It is stored beside the
container's OCI spec (``definition.json``), so a later task that gives only
``name`` and ``env`` keeps every other option as it was: options left out
keep their values, and only options that are given and differ count as
changes.  A value that is not in the definition takes its default.

Nothing here touches the host: env files, image configs, /etc/passwd and
addresses are read by the caller and passed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

FORMAT = 1

# Options that describe the container: stored, merged, compared.
DEFINITION_KEYS = (
    "image", "rootfs", "command", "entrypoint", "env", "env_file", "user", "workdir", "hostname", "volumes",
    "network", "ip", "ports", "memory", "cpus", "pids_limit", "cgroup", "restart_policy", "healthcheck", "labels",
    "detach", "read_only", "cap_add", "cap_drop", "sysctls", "dns", "dns_search", "etc_hosts", "userns",
    "stop_signal", "stop_timeout", "supervisor", "cgroup_parent",
)

# What an option means when no task ever gave it.
DEFAULTS: t.Dict[str, t.Any] = {
    "env": {}, "volumes": [], "network": "none", "ports": [], "cgroup": {}, "restart_policy": "no",
    "healthcheck": None, "labels": {}, "detach": True, "read_only": False, "cap_add": [], "cap_drop": [],
    "sysctls": {}, "dns": [], "dns_search": [], "etc_hosts": {}, "userns": "auto", "stop_timeout": 10.0,
    "supervisor": "auto",
}

USERNS_MODES = ("auto", "shared", "host")
NO_NETWORK = "none"
HEALTH_DEFAULTS = {"interval": 30.0, "timeout": 30.0, "retries": 3, "start_period": 0.0}

_RESTART = re.compile(r"(no|always|unless-stopped|on-failure(:[0-9]+)?)")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"(?:(?P<h>[0-9.]+)h)?(?:(?P<m>[0-9.]+)m(?!s))?(?:(?P<s>[0-9.]+)s)?(?:(?P<ms>[0-9.]+)ms)?")
_CGROUP_LIMITS = ("cpu_max", "cpu_weight", "memory_max", "memory_high", "memory_low", "memory_swap_max",
                  "pids_max", "io_max", "cpuset_cpus", "cpuset_mems", "settings")


def value(definition: t.Mapping[str, t.Any], key: str) -> t.Any:
    """The option's value in ``definition``, or its default."""
    return definition[key] if key in definition else DEFAULTS.get(key)


# --- single options ------------------------------------------------------------------------

def argv(raw: t.Any, option: str) -> t.List[str]:
    """A command: a string is split the way a shell would (no expansion), a list is taken as it is."""
    if isinstance(raw, str):
        try:
            words = shlex.split(raw)
        except ValueError as exc:
            raise ValidationError("%s: %r cannot be split like a shell would: %s" % (option, raw, exc))
    elif isinstance(raw, (list, tuple)):
        words = [str(word) for word in raw]
    else:
        raise ValidationError("%s: give a string or a list of strings, got %r" % (option, raw))
    if any("\0" in word for word in words):
        raise ValidationError("%s: an argument contains a NUL byte" % option)
    return words


def duration(raw: t.Any, option: str) -> float:
    """Seconds from 30, 2.5, '30', '30s', '1m30s', '500ms' or '1h' (Docker's healthcheck spelling)."""
    if isinstance(raw, bool):
        raise ValidationError("%s: %r is not a duration" % (option, raw))
    if isinstance(raw, (int, float)):
        seconds = float(raw)
    else:
        text = str(raw).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            match = _DURATION.fullmatch(text)
            if not text or not match or not any(match.groupdict().values()):
                raise ValidationError("%s: %r is not a duration such as 30, '30s', '1m30s' or '500ms'"
                                      % (option, raw))
            parts = {key: float(number) for key, number in match.groupdict().items() if number}
            seconds = (parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
                       + parts.get("ms", 0) / 1000)
    if seconds < 0:
        raise ValidationError("%s: %r must not be negative" % (option, raw))
    return round(seconds, 3)


def restart_policy(raw: t.Any) -> str:
    text = str(raw).strip().lower()
    if text in ("", "none", "false"):
        text = "no"
    if not _RESTART.fullmatch(text):
        raise ValidationError("restart_policy: %r is not no, on-failure, on-failure:N, always or unless-stopped"
                              % (raw,))
    return text


def hostname(raw: t.Any) -> str:
    """RFC 1123: dot-separated labels of letters, digits and '-', at most 253 bytes (no newline can hide)."""
    text = str(raw)
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValidationError("hostname: %r is not a host name (RFC 1123: labels of letters, digits and '-', "
                              "separated by dots)" % (raw,))
    return text


def volume(raw: t.Any, index: int) -> t.Dict[str, t.Any]:
    """'SRC:DST[:OPTS]' -> {source, destination, kind (bind or volume), readonly, chown}.

    SRC is an absolute host path (a bind mount) or a volume name (a directory
    kernelbox makes under its store, owned by the container's root).  OPTS is a
    comma-separated list of ro, rw and U (podman's: chown the source to the
    container's root).
    """
    option = "volumes[%d]" % index
    if not isinstance(raw, str):
        raise ValidationError("%s: give 'SOURCE:DESTINATION[:OPTIONS]', got %r" % (option, raw))
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValidationError("%s: %r is not 'SOURCE:DESTINATION[:OPTIONS]' (SOURCE an absolute path or a "
                              "volume name)" % (option, raw))
    source = parts[0]
    try:
        destination = validate.absolute_path(parts[1], "destination")
    except ValidationError as exc:
        raise ValidationError("%s: %r: the %s" % (option, raw, exc))
    flags = [flag.strip() for flag in parts[2].split(",")] if len(parts) == 3 else []
    unknown = [flag for flag in flags if flag not in ("ro", "rw", "U", "z", "Z")]
    if unknown or ("ro" in flags and "rw" in flags):
        raise ValidationError("%s: options %r: use ro or rw, and U to give the source to the container's user"
                              % (option, parts[2]))
    if source.startswith("/"):
        try:
            kind, source = "bind", validate.absolute_path(source, "source")
        except ValidationError as exc:
            raise ValidationError("%s: %r: the %s" % (option, raw, exc))
    elif _VOLUME_NAME.fullmatch(source):
        kind = "volume"
    else:
        raise ValidationError("%s: source %r is neither an absolute path nor a volume name ([A-Za-z0-9][A-Za-z0-9_.-]*)"
                              % (option, source))
    return {"source": source, "destination": destination, "kind": kind, "readonly": "ro" in flags,
            "chown": "U" in flags}


def volumes(raw: t.Any) -> t.List[t.Dict[str, t.Any]]:
    items = [volume(item, index) for index, item in enumerate(raw or [])]
    seen: t.Dict[str, int] = {}
    for index, item in enumerate(items):
        if item["destination"] in seen:
            raise ValidationError("volumes[%d]: %s is already the destination of volumes[%d]"
                                  % (index, item["destination"], seen[item["destination"]]))
        seen[item["destination"]] = index
    return items


def env_file(text: str, path: str) -> t.Dict[str, str]:
    """Docker's env-file format: NAME=value per line, '#' comments and blank lines ignored (pure)."""
    result = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, rest = line.lstrip().partition("=")
        if not sep or not _ENV_NAME.fullmatch(key):
            raise ValidationError("env_file: %s line %d is not NAME=value" % (path, number))
        result[key] = rest
    return result


def environment(raw: t.Any) -> t.Dict[str, str]:
    result = {}
    for key, val in (raw or {}).items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ValidationError("env: %r is not a variable name" % (key,))
        text = "" if val is None else str(val)
        if "\0" in text:
            raise ValidationError("env: the value of %s contains a NUL byte" % key)
        result[key] = text
    return result


def healthcheck(raw: t.Any) -> t.Optional[t.Dict[str, t.Any]]:
    """Docker's healthcheck: test (a string runs under /bin/sh -c; [CMD, ...] and [CMD-SHELL, ...] as in a
    Dockerfile; [NONE] or an empty test turns it off), interval, timeout, retries, start_period."""
    if not raw:
        return None
    test = raw.get("test")
    if test in (None, "", []) or test == ["NONE"]:
        return None
    if isinstance(test, str):
        command = ["/bin/sh", "-c", test]
    else:
        words = argv(test, "healthcheck.test")
        if words[0] == "CMD-SHELL" and len(words) == 2:
            command = ["/bin/sh", "-c", words[1]]
        elif words[0] == "CMD" and len(words) > 1:
            command = words[1:]
        else:
            command = words
    result: t.Dict[str, t.Any] = {"test": command}
    for key, default in HEALTH_DEFAULTS.items():
        given = raw.get(key)
        if key == "retries":
            result[key] = validate.int_in_range(given if given is not None else default, 1, 1000,
                                                "healthcheck.retries")
        else:
            result[key] = duration(given, "healthcheck." + key) if given is not None else default
    if result["interval"] <= 0 or result["timeout"] <= 0:
        raise ValidationError("healthcheck: interval and timeout must be positive")
    return result


def _strings(raw: t.Any, option: str) -> t.List[str]:
    items = [str(item) for item in (raw or [])]
    if any("\n" in item or "\0" in item for item in items):
        raise ValidationError("%s: values must be single lines" % option)
    return items


def _string_map(raw: t.Any, option: str) -> t.Dict[str, str]:
    result = {}
    for key, val in (raw or {}).items():
        text = "" if val is None else str(val)
        if "\n" in str(key) or "\n" in text or "\0" in text:
            raise ValidationError("%s: %r must be a single line" % (option, key))
        result[str(key)] = text
    return result


def _labels(raw: t.Any) -> t.Dict[str, str]:
    result = _string_map(raw, "labels")
    ours = sorted(key for key in result if key.startswith("io.kernelbox."))
    if ours or "" in result:
        raise ValidationError("labels: %r: keys must be non-empty, and io.kernelbox.* keys are kernelbox's own"
                              % (ours[0] if ours else ""))
    return result


def _cgroup(raw: t.Any) -> t.Dict[str, t.Any]:
    result = {key: val for key, val in (raw or {}).items() if val is not None}
    unknown = sorted(set(result) - set(_CGROUP_LIMITS))
    if unknown:
        raise ValidationError("cgroup: %s not known; the limits are %s (and cgroup_parent places the group)"
                              % (", ".join(unknown), ", ".join(_CGROUP_LIMITS)))
    return result


# --- the whole definition ------------------------------------------------------------------

def normalise(params: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """The definition options a task gave (not None), normalised and checked; nothing else."""
    given = {key: params[key] for key in DEFINITION_KEYS if params.get(key) is not None}
    out: t.Dict[str, t.Any] = {}
    for key, raw in given.items():
        out[key] = _normalise_one(key, raw)
    if "image" in out and "rootfs" in out:
        raise ValidationError("image and rootfs: give one; rootfs is a directory used in place of an image")
    limits = [key for key in ("memory", "cpus", "pids_limit") if key in out]
    cgroup_limits = {"memory": "memory_max", "cpus": "cpu_max", "pids_limit": "pids_max"}
    clashes = [key for key in limits if cgroup_limits[key] in out.get("cgroup", {})]
    if clashes:
        raise ValidationError("%s and cgroup.%s: give the limit once" % (clashes[0], cgroup_limits[clashes[0]]))
    return out


def _path_or_reference(raw: t.Any) -> str:
    text = str(raw).strip()
    if text.startswith("/"):
        return validate.absolute_path(text, "image")
    if not text or any(c.isspace() or c == "\0" for c in text):
        raise ValidationError("image: %r is neither an absolute path nor an image reference" % (raw,))
    return text


def _user(raw: t.Any) -> str:
    text = str(raw).strip()
    if not text or any(c.isspace() or c == "\0" for c in text) or text.count(":") > 1:
        raise ValidationError("user: %r is not NAME, UID, NAME:GROUP or UID:GID" % (raw,))
    return text


def _network(raw: t.Any) -> str:
    text = str(raw).strip()
    return NO_NETWORK if text in ("", NO_NETWORK) else validate.interface_name(text, "network")


def _cpus(raw: t.Any) -> float:
    try:
        cpus = float(raw)
    except (TypeError, ValueError):
        raise ValidationError("cpus: %r is not a number of CPUs" % (raw,))
    if cpus <= 0:
        raise ValidationError("cpus: %r must be more than 0" % (raw,))
    return round(cpus, 3)


def _pids_limit(raw: t.Any) -> t.Union[int, str]:
    number = validate.int_in_range(raw, -1, 1 << 22, "pids_limit")
    return "max" if number <= 0 else number


def _userns(raw: t.Any) -> str:
    text = str(raw).strip().lower()
    if text not in USERNS_MODES:
        raise ValidationError("userns: %r is not one of %s" % (raw, ", ".join(USERNS_MODES)))
    return text


_NORMALISERS: t.Dict[str, t.Callable[[t.Any], t.Any]] = {
    "image": _path_or_reference,
    "rootfs": lambda v: validate.absolute_path(str(v).strip(), "rootfs"),
    "command": lambda v: argv(v, "command"),
    "entrypoint": lambda v: argv(v, "entrypoint"),
    "env": environment,
    "env_file": lambda v: validate.absolute_path(str(v).strip(), "env_file"),
    "user": _user,
    "workdir": lambda v: validate.absolute_path(str(v), "workdir"),
    "hostname": hostname,
    "volumes": volumes,
    "network": _network,
    "ip": lambda v: validate.ip_address(str(v).split("/", maxsplit=1)[0], "ip"),
    "ports": lambda v: _strings(v, "ports"),
    "memory": lambda v: validate.size_bytes(v, "memory", allow_max=True, minimum=1 << 20),
    "cpus": _cpus,
    "pids_limit": _pids_limit,
    "cgroup": _cgroup,
    "restart_policy": restart_policy,
    "healthcheck": healthcheck,
    "labels": _labels,
    "detach": bool,
    "read_only": bool,
    "cap_add": lambda v: sorted({str(x).upper() for x in v}),
    "cap_drop": lambda v: sorted({str(x).upper() for x in v}),
    "sysctls": lambda v: {validate.sysctl_key(k): validate.sysctl_value(x) for k, x in (v or {}).items()},
    "dns": lambda v: [validate.ip_address(x, "dns") for x in v],
    "dns_search": lambda v: _strings(v, "dns_search"),
    "etc_hosts": lambda v: _string_map(v, "etc_hosts"),
    "userns": _userns,
    "stop_signal": lambda v: str(v).strip().upper(),
    "stop_timeout": lambda v: duration(v, "stop_timeout"),
    "supervisor": str,
    "cgroup_parent": lambda v: str(v).strip().strip("/"),
}


def _normalise_one(key: str, raw: t.Any) -> t.Any:
    return _NORMALISERS[key](raw)


def merge(stored: t.Mapping[str, t.Any], given: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """The definition after this task: what it gave over what earlier tasks gave.

    ``image`` and ``rootfs`` replace each other, and so do ``network: none``
    and ``ip`` (a container without a network has no address).
    """
    merged = dict(stored)
    if "image" in given:
        merged.pop("rootfs", None)
    if "rootfs" in given:
        merged.pop("image", None)
    merged.update(given)
    if value(merged, "network") == NO_NETWORK:
        merged.pop("ip", None)
    return dict(sorted(merged.items()))


def changed_options(before: t.Mapping[str, t.Any], after: t.Mapping[str, t.Any]) -> t.List[str]:
    """Options whose effective value differs (a default given explicitly is no change)."""
    keys = set(before) | set(after)
    return sorted(key for key in keys if value(before, key) != value(after, key))


def digest(data: t.Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def summarise(before: t.Any, after: t.Any, limit: int = 16) -> t.Tuple[t.Any, t.Any]:
    """Long lists (and maps) that did not change are shown as a count and a digest, in both views."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        pairs = {key: summarise(before.get(key), after.get(key), limit) for key in keys}
        return ({k: p[0] for k, p in pairs.items() if k in before}, {k: p[1] for k, p in pairs.items() if k in after})
    if before == after and isinstance(before, (list, dict)) and len(before) > limit:
        short = "%d items, %s" % (len(before), digest(before)[:19])
        return short, short
    return before, after


# --- what the image and the task make of the process -----------------------------------------

def process_args(definition: t.Mapping[str, t.Any], image: t.Mapping[str, t.Any]) -> t.List[str]:
    """Entrypoint + command, as Docker combines them: a given entrypoint drops the image's Cmd."""
    if "entrypoint" in definition:
        entrypoint = list(definition["entrypoint"])
        command = list(definition.get("command") or [])
    else:
        entrypoint = list(image.get("Entrypoint") or [])
        command = list(definition["command"]) if "command" in definition else list(image.get("Cmd") or [])
    args = entrypoint + command
    if not args:
        raise ValidationError("command: the image has no Entrypoint or Cmd, so give command (or entrypoint)")
    return args


def process_env(definition: t.Mapping[str, t.Any], image: t.Mapping[str, t.Any],
                from_file: t.Mapping[str, str]) -> t.Dict[str, str]:
    """The image's Env, then the env file, then env: later wins."""
    result: t.Dict[str, str] = {}
    for item in image.get("Env") or []:
        key, _sep, val = str(item).partition("=")
        if key:
            result[key] = val
    result.update(from_file)
    result.update(definition.get("env") or {})
    return result


def process_cwd(definition: t.Mapping[str, t.Any], image: t.Mapping[str, t.Any]) -> str:
    return definition.get("workdir") or image.get("WorkingDir") or "/"


def process_user(definition: t.Mapping[str, t.Any], image: t.Mapping[str, t.Any]) -> str:
    return definition.get("user") or image.get("User") or "0"


def cgroup_options(definition: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """container_process's cgroup option from memory, cpus, pids_limit, cgroup and cgroup_parent."""
    result = dict(definition.get("cgroup") or {})
    if "memory" in definition:
        result["memory_max"] = definition["memory"]
    if "cpus" in definition:
        result["cpu_max"] = {"cpus": definition["cpus"]}
    if "pids_limit" in definition:
        result["pids_max"] = definition["pids_limit"]
    if definition.get("cgroup_parent"):
        result["parent"] = definition["cgroup_parent"]
    return result


def names_of(definition: t.Mapping[str, t.Any]) -> t.List[str]:
    """The named volumes a definition uses."""
    return [item["source"] for item in value(definition, "volumes") if item["kind"] == "volume"]


def veth_stem(name: str) -> str:
    """Interface names are at most 15 bytes, so a container's veth names derive from a hash of its name."""
    return "kb" + hashlib.sha1(name.encode()).hexdigest()[:8]


def storage_dir(root: str, name: str) -> str:
    return os.path.join(root, name)
