# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: OCI ``linux.resources`` -> cgroup v2 limits and a device program.

Pure.  One mapping for both front ends (container_process's ``oci_config`` and
the kernelbox-runtime command line), documented in _kernel/cgroup.py:

* memory.limit -> memory.max, reservation -> memory.low, swap (memory+swap) ->
  memory.swap.max = swap - limit; a negative value is "max"; 0 is unset (runc).
* cpu.quota/period -> cpu.max, shares -> cpu.weight (runc and crun's formula),
  cpus/mems -> cpuset.cpus/mems, burst -> cpu.max.burst, idle -> cpu.idle.
* pids.limit -> pids.max; a negative value is "max", 0 is unset (runc).
* blockIO throttle devices -> io.max rules.
* hugepageLimits -> hugetlb.<size>.max.
* unified -> the files as named.
* devices -> the device program's rules, followed by the defaults every
  container needs (``cgroup_devices.DEFAULT_ALLOWED``).

What cgroup v2 cannot express is refused naming the key: swappiness,
disableOOMKiller, kernel memory, realtime CPU time, blockIO weights and rdma.
"""

from __future__ import annotations

import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_devices, cgroup_limits
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model.spec import Resources

# The value a freshly made group already has in each file: writing it changes nothing, so it needs no
# controller (a host without the pids controller can still run a container asking for "no pids limit").
FRESH_GROUP_VALUES = {"memory.max": "max", "memory.high": "max", "memory.low": "0", "memory.swap.max": "max",
                      "pids.max": "max", "cpu.max": "max 100000", "cpu.weight": "100", "io.max": ""}


def limits_from_oci(resources: "Resources") -> cgroup_limits.Limits:
    """OCI linux.resources as the cgroup library's Limits; ValidationError naming what v2 cannot do."""
    kwargs: t.Dict[str, t.Any] = {}
    settings: t.Dict[str, t.Any] = {}
    unsupported: t.List[str] = []
    _memory(resources, kwargs, unsupported)
    _cpu(resources, kwargs, settings, unsupported)
    if resources.pids is not None and resources.pids.limit != 0:
        kwargs["pids_max"] = "max" if resources.pids.limit < 0 else resources.pids.limit
    _block_io(resources, kwargs, unsupported)
    for item in resources.hugepage_limits:
        settings["hugetlb.%s.max" % item.page_size] = item.limit
    if resources.rdma:
        unsupported.append("rdma")
    for key, value in resources.unified.items():
        option = cgroup_limits.DEDICATED_FILES.get(key)
        if option in ("io_max", "freeze"):
            unsupported.append("unified[%r]" % key)
        elif option:
            kwargs[option] = value
        else:
            settings[key] = value
    if settings:
        kwargs["settings"] = settings
    if unsupported:
        raise ValidationError("linux.resources: %s not supported on cgroup v2 (kernelbox applies cgroup v2 "
                              "limits)" % ", ".join(unsupported))
    return cgroup_limits.Limits(**kwargs)


def _memory(resources: "Resources", kwargs: t.Dict[str, t.Any], unsupported: t.List[str]) -> None:
    memory = resources.memory
    if memory is None:
        return
    if memory.limit:
        kwargs["memory_max"] = "max" if memory.limit < 0 else memory.limit
    if memory.reservation:
        kwargs["memory_low"] = "max" if memory.reservation < 0 else memory.reservation
    if memory.swap:  # OCI swap counts memory+swap; cgroup v2 counts swap alone
        if memory.swap < 0:
            kwargs["memory_swap_max"] = "max"
        elif memory.limit is not None and memory.limit > 0:
            kwargs["memory_swap_max"] = max(0, memory.swap - memory.limit)
        else:
            unsupported.append("memory.swap without memory.limit")
    if memory.swappiness is not None and memory.swappiness >= 0:
        unsupported.append("memory.swappiness")
    if memory.disable_oom_killer:
        unsupported.append("memory.disableOOMKiller")


def _cpu(resources: "Resources", kwargs: t.Dict[str, t.Any], settings: t.Dict[str, t.Any],
         unsupported: t.List[str]) -> None:
    cpu = resources.cpu
    if cpu is None:
        return
    if cpu.quota or cpu.period:
        quota = "max" if not cpu.quota or cpu.quota < 0 else cpu.quota
        kwargs["cpu_max"] = {"quota": quota, "period": cpu.period or None}
    if cpu.shares:
        kwargs["cpu_weight"] = cgroup_limits.cpu_weight_from_shares(cpu.shares)
    if cpu.cpus:
        kwargs["cpuset_cpus"] = cpu.cpus
    if cpu.mems:
        kwargs["cpuset_mems"] = cpu.mems
    if cpu.burst is not None:
        settings["cpu.max.burst"] = cpu.burst
    if cpu.idle is not None:
        settings["cpu.idle"] = cpu.idle
    if cpu.realtime_runtime or cpu.realtime_period:
        unsupported.append("cpu.realtimeRuntime/realtimePeriod")


def _block_io(resources: "Resources", kwargs: t.Dict[str, t.Any], unsupported: t.List[str]) -> None:
    block_io = resources.block_io
    if block_io is None:
        return
    rules: t.Dict[str, t.Dict[str, t.Any]] = {}
    for key, items in (("rbps", block_io.throttle_read_bps_device), ("wbps", block_io.throttle_write_bps_device),
                       ("riops", block_io.throttle_read_iops_device),
                       ("wiops", block_io.throttle_write_iops_device)):
        for item in items:
            device = "%d:%d" % (item.major, item.minor)
            rules.setdefault(device, {"device": device})[key] = item.rate
    if rules:
        kwargs["io_max"] = [rules[device] for device in sorted(rules)]
    if block_io.weight is not None or block_io.leaf_weight is not None or block_io.weight_device:
        unsupported.append("blockIO.weight/leafWeight/weightDevice")


def device_rules(resources: t.Optional["Resources"]) -> t.Optional[t.List[cgroup_devices.DeviceRule]]:
    """The device program's rules: the config's, then the defaults; None when the config gives none."""
    if resources is None or not resources.devices:
        return None
    rules = [cgroup_devices.rule(item.allow, item.type, item.major, item.minor, item.access,
                                 where="linux.resources.devices[%d]" % index)
             for index, item in enumerate(resources.devices)]
    return rules + list(cgroup_devices.DEFAULT_ALLOWED)


def without_fresh_defaults(files: t.Mapping[str, str], available: t.Iterable[str]) -> t.Dict[str, str]:
    """``files`` less those that would only write what a new group has anyway, where the controller is missing."""
    have = set(available)
    result = {}
    for name, value in files.items():
        controller = cgroup_limits.controller_of(name)
        if controller and controller not in have and FRESH_GROUP_VALUES.get(name) == value:
            continue
        result[name] = value
    return result
