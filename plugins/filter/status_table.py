# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: status_table
short_description: Format container_info results as a podman ps / podman stats table
version_added: 0.1.0
description:
  - Turns the RV(kernelbox.containers.container_info#module:containers) list into a plain-text table with one row
    per container, read like C(podman ps) plus C(podman stats).
  - "Columns: NAME, STATUS (such as Up 5m, or Exited (1) 2m ago), PID, IP (the first address that is not loopback;
    C(host) when the container shares the host's network), MEM (use / limit), CPU (percent with
    O(kernelbox.containers.container_info#module:cpu_sample), else CPU time used), PIDS and PORTS (published ports as
    C(podman ps) shows them, such as C(0.0.0.0:8080->80/tcp, [::]:8080->80/tcp))."
  - Relative times are computed against the controller's clock.
author:
  - kernelbox.containers contributors (@kernelbox)
options:
  _input:
    description: The RV(kernelbox.containers.container_info#module:containers) list.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Show all containers
  ansible.builtin.debug:
    msg: "{{ info.containers | kernelbox.containers.status_table }}"
"""

RETURN = r"""
_value:
  description: The table, lines joined with newlines (a header line first).
  type: str
"""

import ipaddress
import typing as t
from datetime import datetime, timezone

from ansible.errors import AnsibleFilterError

COLUMNS = ("NAME", "STATUS", "PID", "IP", "MEM USAGE / LIMIT", "CPU", "PIDS", "PORTS")


def _size(value: t.Any) -> str:
    if value is None:
        return "-"
    number = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if number < 1024 or unit == "TiB":
            return ("%d%s" % (number, unit)) if unit == "B" else ("%.1f%s" % (number, unit))
        number /= 1024.0
    return "-"


def _ago(stamp: t.Optional[str], now: datetime) -> str:
    if not stamp:
        return ""
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return ""
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = max(0, int((now - then).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def _status(item: t.Mapping[str, t.Any], now: datetime) -> str:
    state = item.get("state") or "?"
    if state == "running":
        age = _ago(item.get("started_at"), now)
        return "Up %s" % age if age else "Up"
    if state in ("exited", "failed"):
        code = item.get("exit_code")
        text = "Exited (%s)" % ("?" if code is None else code) if state == "exited" else "Failed"
        age = _ago(item.get("exited_at"), now)
        return "%s %s ago" % (text, age) if age else text
    return state.capitalize()


def _address(item: t.Mapping[str, t.Any]) -> str:
    if not item.get("running"):
        return "-"
    network = item.get("network")
    if network is None:
        return "host" if "net" in (item.get("namespaces_shared_with_host") or []) else "-"
    if not isinstance(network, list):
        return "?"
    fallback = "-"
    for link in network:
        for cidr in link.get("addresses") or []:
            address = ipaddress.ip_interface(cidr).ip
            if address.is_loopback or address.is_link_local:
                continue
            if address.version == 4:
                return str(address)
            if fallback == "-":
                fallback = str(address)
    return fallback


def _stats(item: t.Mapping[str, t.Any]) -> t.Tuple[t.Mapping[str, t.Any], t.Mapping[str, t.Any]]:
    group = item.get("cgroup") or {}
    return group.get("stats") or {}, group.get("limits") or {}


def _memory(item: t.Mapping[str, t.Any]) -> str:
    stats, limits = _stats(item)
    memory = stats.get("memory") or {}
    if not item.get("running") or memory.get("current") is None:
        return "-"
    limit = limits.get("memory.max")
    shown = "unlimited" if limit in (None, "max") else _size(int(limit))
    return "%s / %s" % (_size(memory["current"]), shown)


def _cpu(item: t.Mapping[str, t.Any]) -> str:
    stats, _limits = _stats(item)
    if not item.get("running"):
        return "-"
    if stats.get("cpu_percent") is not None:
        return "%.2f%%" % stats["cpu_percent"]
    usage = (stats.get("cpu") or {}).get("usage_usec")
    return "-" if usage is None else "%.2fs" % (usage / 1e6)


def _pids(item: t.Mapping[str, t.Any]) -> str:
    if not item.get("running"):
        return "-"
    stats, _limits = _stats(item)
    pids = (stats.get("pids") or {}).get("current")
    return str(pids if pids is not None else len(item.get("processes") or []))


def _span(low: t.Any, high: t.Any) -> str:
    return str(low) if high in (None, low) else "%s-%s" % (low, high)


def _ports(item: t.Mapping[str, t.Any]) -> str:
    """Published ports as podman ps shows them: 0.0.0.0:8080->80/tcp, [::]:9000-9001->9000-9001/udp."""
    published = item.get("ports")
    if published is None:
        return "?" if "ports" in item and item.get("state") not in (None, "absent", "unknown") else ""
    shown = []
    for port in published:
        host = str(port.get("host_ip", ""))
        host = "[%s]" % host if ":" in host else host
        host_ports = _span(port.get("host_port"), port.get("host_port_end"))
        container_ports = _span(port.get("container_port"), port.get("container_port_end"))
        shown.append("%s:%s->%s/%s" % (host, host_ports, container_ports, port.get("protocol", "?")))
    return ", ".join(shown)


def status_table(containers: t.Any, now: t.Optional[datetime] = None) -> str:
    if not isinstance(containers, list):
        raise AnsibleFilterError("status_table expects the 'containers' list of container_info, got %s"
                                 % type(containers).__name__)
    now = now or datetime.now(timezone.utc)
    rows = [COLUMNS]
    for item in containers:
        if not isinstance(item, dict):
            raise AnsibleFilterError("status_table: each container must be a dict, got %r" % (item,))
        pid = item.get("pid")
        rows.append((str(item.get("name", "?")), _status(item, now), "-" if pid is None else str(pid),
                     _address(item), _memory(item), _cpu(item), _pids(item), _ports(item)))
    widths = [max(len(row[index]) for row in rows) for index in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(widths[index]) for index, cell in enumerate(row)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append("(no containers)")
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> t.Dict[str, t.Callable[..., t.Any]]:
        return {"status_table": status_table}
