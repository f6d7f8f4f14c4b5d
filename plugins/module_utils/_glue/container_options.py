# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the container_process argument spec and option helpers."""

from __future__ import annotations

import json
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

_ID_MAP = dict(type="list", elements="dict", options=dict(
    container_id=dict(type="int", required=True),
    host_id=dict(type="int", required=True),
    size=dict(type="int", required=True),
))

ARGUMENT_SPEC: t.Dict[str, t.Any] = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="started", choices=["started", "stopped", "restarted", "absent"]),
    rootfs=dict(type="path"),
    command=dict(type="list", elements="str"),
    env=dict(type="dict"),
    cwd=dict(type="str"),
    user=dict(type="str"),
    groups=dict(type="list", elements="int"),
    umask=dict(type="str"),
    hostname=dict(type="str"),
    domainname=dict(type="str"),
    namespaces=dict(type="dict", options=dict(
        pid=dict(type="bool"),
        ipc=dict(type="bool"),
        uts=dict(type="bool"),
        net=dict(type="bool"),
        netns=dict(type="str"),
        user=dict(type="bool"),
        cgroup=dict(type="bool"),
        time=dict(type="bool"),
    )),
    uid_map=_ID_MAP,
    gid_map=_ID_MAP,
    time_offsets=dict(type="dict", options=dict(
        boottime=dict(type="float"),
        monotonic=dict(type="float"),
    )),
    cgroup=dict(type="dict", options=dict(
        path=dict(type="str"),
        parent=dict(type="str"),
        name=dict(type="str"),
        cpu_max=dict(type="raw"),
        cpu_weight=dict(type="int"),
        memory_max=dict(type="raw"),
        memory_high=dict(type="raw"),
        memory_low=dict(type="raw"),
        memory_swap_max=dict(type="raw"),
        pids_max=dict(type="raw"),
        io_max=dict(type="list", elements="dict"),
        cpuset_cpus=dict(type="str"),
        cpuset_mems=dict(type="str"),
        settings=dict(type="dict"),
    )),
    mounts=dict(type="list", elements="dict", options=dict(
        type=dict(type="str", default="bind", choices=["bind", "tmpfs"]),
        source=dict(type="path"),
        destination=dict(type="str", required=True, aliases=["target"]),
        readonly=dict(type="bool", default=False),
        size=dict(type="str"),
        mode=dict(type="str"),
        options=dict(type="list", elements="str", default=[]),
    )),
    readonly_rootfs=dict(type="bool", default=False),
    capabilities=dict(type="list", elements="str"),
    cap_add=dict(type="list", elements="str"),
    cap_drop=dict(type="list", elements="str"),
    no_new_privileges=dict(type="bool", default=True),
    rlimits=dict(type="dict"),
    seccomp=dict(type="raw"),
    masked_paths=dict(type="list", elements="str"),
    readonly_paths=dict(type="list", elements="str"),
    sysctls=dict(type="dict"),
    oom_score_adj=dict(type="int"),
    annotations=dict(type="dict"),
    etc_hosts=dict(type="dict"),
    dns=dict(type="list", elements="str"),
    dns_search=dict(type="list", elements="str"),
    dns_options=dict(type="list", elements="str"),
    oci_config=dict(type="raw"),
    log=dict(type="dict", options=dict(
        max_size=dict(type="str"),
        tail_lines=dict(type="int", default=20),
    )),
    restart_policy=dict(type="str"),
    enabled=dict(type="bool"),
    stop_signal=dict(type="str"),
    stop_timeout=dict(type="float"),
    wait_for=dict(type="dict", options=dict(
        port=dict(type="int"),
        file=dict(type="str"),
        command=dict(type="list", elements="str"),
        timeout=dict(type="float", default=30.0),
        interval=dict(type="float", default=0.2),
    )),
    supervisor=dict(type="str", default="auto", choices=["auto", "kernelbox", "systemd"]),
)

# Lifecycle settings: a new container gets these defaults, an existing one keeps what it has
# unless the task gives a value.
LIFECYCLE_DEFAULTS = {"restart_policy": "no", "enabled": False, "stop_signal": "SIGTERM", "stop_timeout": 10.0,
                      "log_max_size": 10 << 20}

# Options whose default is not None but that still count as "given" only when changed.
_DEFAULTS = {"readonly_rootfs": False, "no_new_privileges": True}


def is_set(params: t.Mapping[str, t.Any], key: str) -> bool:
    value = params.get(key)
    if key in _DEFAULTS:
        return value != _DEFAULTS[key]
    return value not in (None, [], {})


def wait_for(raw: t.Optional[t.Mapping[str, t.Any]]) -> t.Optional[t.Dict[str, t.Any]]:
    """{kind: port|file|command, value, timeout, interval} or None."""
    if not raw:
        return None
    given = [key for key in ("port", "file", "command") if raw.get(key) not in (None, [], "")]
    if len(given) != 1:
        raise ValidationError("wait_for: give exactly one of port, file or command (got %s)"
                              % (", ".join(given) or "none"))
    kind = given[0]
    value = raw[kind]
    if kind == "port" and not 1 <= int(value) <= 65535:
        raise ValidationError("wait_for.port: %r is not a TCP port" % value)
    if kind == "file" and not str(value).startswith("/"):
        raise ValidationError("wait_for.file: %r must be an absolute path inside the container" % value)
    timeout = float(raw.get("timeout") if raw.get("timeout") is not None else 30.0)
    interval = float(raw.get("interval") if raw.get("interval") is not None else 0.2)
    if timeout <= 0 or interval <= 0:
        raise ValidationError("wait_for: timeout and interval must be positive")
    return {"kind": kind, "value": value, "timeout": timeout, "interval": interval}


def cgroup_params(raw: t.Optional[t.Mapping[str, t.Any]]) -> t.Dict[str, t.Any]:
    params = {k: v for k, v in (raw or {}).items() if v is not None}
    if params.get("path") and (params.get("parent") or params.get("name")):
        raise ValidationError("cgroup: path joins an existing group; parent and name place a new leaf. Give one")
    return params


def load_oci_config(path: t.Any, option: str = "oci_config") -> t.Dict[str, t.Any]:
    """A JSON object from a file: a config.json (``oci_config``) or a seccomp profile (``seccomp``)."""
    if not isinstance(path, str):
        raise ValidationError("%s: must be a JSON object or the path of one, got %r" % (option, path))
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ValidationError("%s: cannot read %s: %s" % (option, path, exc.strerror))
    except ValueError as exc:
        raise ValidationError("%s: %s is not valid JSON: %s" % (option, path, exc))
    if not isinstance(data, dict):
        raise ValidationError("%s: %s does not hold a JSON object" % (option, path))
    return data
