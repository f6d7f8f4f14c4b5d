# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: cgroup v2 limit values, normalised the way the kernel prints them.

Pure functions, no filesystem access (the page size is a parameter with the
running system's as default).  Every normaliser turns user input into the
exact text the interface file reads back after the kernel accepted it, so
"what we want" and "what the kernel reports" compare as plain strings and a
second run is changed=false:

* memory.max/high/low/min, memory.swap.max: the kernel's page_counter_memparse()
  stores bytes / PAGE_SIZE pages (rounding down) capped at PAGE_COUNTER_MAX,
  and prints pages * PAGE_SIZE, or ``max`` at the cap;
* cpu.max: ``"$QUOTA $PERIOD"`` in microseconds, ``max`` for no quota;
* cpuset lists: ascending ranges, as the kernel's ``%*pbl`` prints them (``1,0`` -> ``0-1``);
* io.max: one ``MAJ:MIN rbps=.. wbps=.. riops=.. wiops=..`` line per device that has
  any limit, every key present, ``max`` for unlimited; devices sorted.
"""

from __future__ import annotations

import math
import os
import re
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import (
    ValidationError, int_in_range, size_bytes)

LONG_MAX = (1 << 63) - 1
# kernel/pid.c PID_MAX_LIMIT on 64-bit; pids.max accepts 0..PID_MAX_LIMIT (PIDS_MAX is one more).
PID_MAX_LIMIT = 4 * 1024 * 1024
# kernel/sched/core.c: cpu.max period within 1 ms..1 s; quota at least 1 ms.
CPU_PERIOD_MIN = 1000
CPU_PERIOD_MAX = 1000000
CPU_QUOTA_MIN = 1000
CPU_QUOTA_MAX = (1 << 44) - 1  # max_cfs_runtime in microseconds
CPU_PERIOD_DEFAULT = 100000
UINT_MAX = (1 << 32) - 1
MAX_CPU_INDEX = 65535  # far above any NR_CPUS; bounds the work on hostile input

# Interface files with their own option; ``settings`` must not fight them.
DEDICATED_FILES = {
    "cpu.max": "cpu_max", "cpu.weight": "cpu_weight", "memory.max": "memory_max",
    "memory.high": "memory_high", "memory.low": "memory_low", "memory.swap.max": "memory_swap_max",
    "pids.max": "pids_max", "io.max": "io_max", "cpuset.cpus": "cpuset_cpus", "cpuset.mems": "cpuset_mems",
    "cgroup.freeze": "freeze",
}
# Core files that are harmless to set through ``settings``; every other cgroup.* file
# (procs, threads, subtree_control, type, kill, freeze) is how kernelbox manages the group.
SETTINGS_CORE_ALLOWED = frozenset(["cgroup.max.depth", "cgroup.max.descendants"])
# Files that are actions or triggers, not settings: writing them again is never a no-op.
SETTINGS_REFUSED = frozenset(["memory.reclaim", "memory.peak", "memory.swap.peak", "pids.peak"])
_SETTINGS_REFUSED_SUFFIXES = (".pressure", ".stat", ".events", ".current", ".effective", ".local")
# Files parsed by page_counter_memparse(), so values are page-rounded like memory.max.
PAGE_COUNTER_FILES = frozenset(["memory.max", "memory.high", "memory.low", "memory.min", "memory.swap.max",
                                "memory.swap.high", "memory.zswap.max"])
# Order of writes: cpuset first (placement), then cpu, memory, pids, io; settings last.
FILE_ORDER = ("cpuset.cpus", "cpuset.mems", "cpu.weight", "cpu.max", "memory.low", "memory.high",
              "memory.max", "memory.swap.max", "pids.max", "io.max")

_SETTING_KEY = re.compile(r"[a-z][a-z0-9_]*(\.[A-Za-z0-9_]+)+")
# hugetlb.<size>.max and hugetlb.<size>.rsvd.max: page_counter_memparse(), then rounded down to whole huge pages.
_HUGETLB_LIMIT = re.compile(r"hugetlb\.([0-9]+)([KMG])B\.(rsvd\.)?max")
_MAJ_MIN = re.compile(r"([0-9]+):([0-9]+)")


def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def memory_value(value: t.Any, option: str, page: t.Optional[int] = None, minimum_pages: int = 0) -> str:
    """What a page_counter file (memory.max, .high, .low, .min, .swap.max) reads back after writing ``value``.

    '512M' -> '536870912'; 1000000 -> '999424' (4 KiB pages); 'max', 'MAX', -1 -> 'max'.
    """
    page = page or page_size()
    parsed = size_bytes(value, option, allow_max=True)
    if parsed == "max":
        return "max"
    counter_max = LONG_MAX // page  # include/linux/page_counter.h PAGE_COUNTER_MAX on 64-bit
    pages = min(int(parsed) // page, counter_max)
    if pages >= counter_max:
        return "max"
    if pages < minimum_pages:
        raise ValidationError("%s: %r is below %d bytes (the kernel counts whole %d-byte pages); use a larger "
                              "value or 'max'" % (option, value, minimum_pages * page, page))
    return str(pages * page)


def hugetlb_value(value: t.Any, option: str, huge_page: int, page: t.Optional[int] = None) -> str:
    """What hugetlb.<size>.max reads back: base pages rounded down to whole huge pages; 'max' at the cap."""
    page = page or page_size()
    parsed = size_bytes(value, option, allow_max=True)
    per_huge = max(huge_page // page, 1)
    cap = (LONG_MAX // page) // per_huge * per_huge
    if parsed == "max":
        return "max"
    pages = min(int(parsed) // page, LONG_MAX // page) // per_huge * per_huge
    return "max" if pages == cap else str(pages * page)


def memory_bytes(text: str) -> t.Optional[int]:
    """The byte count of a page_counter file's text; None for 'max'."""
    text = text.strip()
    return None if text == "max" else int(text)


def cpu_max_value(spec: t.Any, option: str = "cpu_max") -> str:
    """Normalise cpu.max input to '$QUOTA $PERIOD'.

    ``spec`` is a dict with ``cpus`` (1.5 = one and a half CPUs) or ``quota``
    (microseconds or 'max'), and optionally ``period`` (microseconds, default
    100000); or the file's own text ('max', '50000 100000').
    """
    if isinstance(spec, str):
        parts = spec.split()
        if not 1 <= len(parts) <= 2:
            raise ValidationError("%s: %r is not 'QUOTA [PERIOD]'" % (option, spec))
        spec = {"quota": parts[0], "period": parts[1] if len(parts) == 2 else None}
    if not isinstance(spec, dict):
        raise ValidationError("%s: expected a dict with cpus or quota (and period), got %r" % (option, spec))
    unknown = set(spec) - {"cpus", "quota", "period"}
    if unknown:
        raise ValidationError("%s: unknown keys %s; use cpus, quota and period" % (option, ", ".join(sorted(unknown))))
    cpus, quota, period = spec.get("cpus"), spec.get("quota"), spec.get("period")
    period = CPU_PERIOD_DEFAULT if period is None else int_in_range(
        period, CPU_PERIOD_MIN, CPU_PERIOD_MAX, option + ".period")
    if (cpus is None) == (quota is None):
        raise ValidationError("%s: give exactly one of cpus (e.g. 1.5) or quota (microseconds per period, or "
                              "'max')" % option)
    if cpus is not None:
        if isinstance(cpus, str) and cpus.strip().lower() == "max":
            return "max %d" % period
        try:
            share = float(cpus)
        except (TypeError, ValueError):
            raise ValidationError("%s.cpus: %r is not a number of CPUs such as 0.5 or 2" % (option, cpus))
        if isinstance(cpus, bool) or not math.isfinite(share) or share <= 0:
            raise ValidationError("%s.cpus: %r must be a positive number of CPUs" % (option, cpus))
        quota_us = int(round(share * period))
        if quota_us < CPU_QUOTA_MIN:
            raise ValidationError("%s.cpus: %s CPUs of a %d us period is a quota of %d us; the kernel needs at "
                                  "least %d us (raise cpus or period)" % (option, cpus, period, quota_us,
                                                                          CPU_QUOTA_MIN))
        if quota_us > CPU_QUOTA_MAX:
            raise ValidationError("%s.cpus: %r is more than the kernel accepts" % (option, cpus))
        return "%d %d" % (quota_us, period)
    if isinstance(quota, str) and quota.strip().lower() in ("max", "-1", "unlimited", "infinity"):
        return "max %d" % period
    if quota == -1:
        return "max %d" % period
    return "%d %d" % (int_in_range(quota, CPU_QUOTA_MIN, CPU_QUOTA_MAX, option + ".quota"), period)


def cpu_weight_value(value: t.Any, option: str = "cpu_weight") -> str:
    return str(int_in_range(value, 1, 10000, option))


def cpu_weight_from_shares(shares: int) -> int:
    """cgroup v1 cpu.shares (OCI ``linux.resources.cpu.shares``, 2..262144) as cgroup v2 cpu.weight (1..10000).

    The log-quadratic mapping runc >= 1.3.2, crun >= 1.23 and Kubernetes use, which keeps the defaults
    aligned (1024 shares -> weight 100; the old linear formula gave 39):
    weight = ceil(10 ** (L*L/612 + 125*L/612 - 7/34)) with L = log2(shares).
    """
    shares = min(max(int(shares), 2), 262144)
    level = math.log2(shares)
    exponent = (level * level + 125 * level) / 612.0 - 7.0 / 34.0
    # round away float noise first: 10 ** 2.0000000000000004 must give 100, not 101
    return min(max(int(math.ceil(round(10 ** exponent, 9))), 1), 10000)


def pids_max_value(value: t.Any, option: str = "pids_max") -> str:
    if isinstance(value, str) and value.strip().lower() in ("max", "-1", "unlimited", "infinity"):
        return "max"
    if value == -1 and not isinstance(value, bool):
        return "max"
    return str(int_in_range(value, 0, PID_MAX_LIMIT, option))


def parse_id_list(text: str) -> t.List[int]:
    """A kernel list ('0-3,5', '' for none) as sorted unique ints; ValueError on bad syntax."""
    found: t.Set[int] = set()
    for token in "".join(text.split()).split(","):
        if token == "":
            continue
        low, sep, high = token.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError("%r is not N or N-M" % token)
        first, last = int(low), int(high) if sep else int(low)
        if first > last or last > MAX_CPU_INDEX:
            raise ValueError("%r is not an ascending range below %d" % (token, MAX_CPU_INDEX))
        found.update(range(first, last + 1))
    return sorted(found)


def format_id_list(ids: t.Iterable[int]) -> str:
    """Sorted ints as the kernel's bitmap list format: [0, 1, 2, 5] -> '0-2,5'."""
    ranges: t.List[t.List[int]] = []
    for number in sorted(set(ids)):
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ",".join(str(a) if a == b else "%d-%d" % (a, b) for a, b in ranges)


def id_list_value(value: t.Any, option: str) -> str:
    """Normalise a CPU or memory-node list: '1,0' -> '0-1', [3, 1, 2] -> '1-3', 2 -> '2'."""
    if isinstance(value, bool):
        raise ValidationError("%s: %r is not a CPU or node list" % (option, value))
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, (list, tuple)):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    try:
        return format_id_list(parse_id_list(text))
    except ValueError as exc:
        raise ValidationError("%s: %r is not a list like 0-3,5: %s" % (option, value, exc))


IO_KEYS = ("rbps", "wbps", "riops", "wiops")


@dataclass(frozen=True)
class IoRule:
    """One io.max rule: ``device`` is a path (resolved later) or 'MAJ:MIN'; values are 'max' or digits."""

    device: str
    rbps: str = "max"
    wbps: str = "max"
    riops: str = "max"
    wiops: str = "max"

    def line(self, devnum: str) -> str:
        return "%s rbps=%s wbps=%s riops=%s wiops=%s" % (devnum, self.rbps, self.wbps, self.riops, self.wiops)

    @property
    def unlimited(self) -> bool:
        return all(getattr(self, key) == "max" for key in IO_KEYS)


def io_rule(raw: t.Any, option: str = "io_max") -> IoRule:
    """Validate one io_max entry: {device, rbps, wbps, riops, wiops}; unset keys mean 'max'."""
    if not isinstance(raw, dict):
        raise ValidationError("%s: each rule must be a dict with device and limits, got %r" % (option, raw))
    unknown = set(raw) - {"device"} - set(IO_KEYS)
    if unknown:
        raise ValidationError("%s: unknown keys %s" % (option, ", ".join(sorted(unknown))))
    device = raw.get("device")
    if not isinstance(device, str) or not device.strip() or "\0" in device:
        raise ValidationError("%s: device must be a block device path such as /dev/sda, or MAJ:MIN" % option)
    device = device.strip()
    if not device.startswith("/") and not _MAJ_MIN.fullmatch(device):
        raise ValidationError("%s: device %r must be an absolute path or MAJ:MIN" % (option, device))
    values = {}
    for key in IO_KEYS:
        value = raw.get(key)
        where = "%s[%s].%s" % (option, device, key)
        if value is None:
            values[key] = "max"
        elif key.endswith("bps"):
            parsed = size_bytes(value, where, allow_max=True, minimum=1)
            values[key] = str(parsed)
        elif isinstance(value, str) and value.strip().lower() == "max":
            values[key] = "max"
        else:
            values[key] = str(int_in_range(value, 1, UINT_MAX, where))
    return IoRule(device=device, **values)


def io_max_text(lines: t.Iterable[str]) -> str:
    """The io.max content as compared: non-empty lines, whitespace collapsed, sorted by MAJ:MIN."""
    cleaned = [" ".join(line.split()) for line in lines if line.strip()]

    def key(line: str) -> t.Tuple[int, int]:
        match = _MAJ_MIN.match(line)
        return (int(match.group(1)), int(match.group(2))) if match else (1 << 31, 0)
    return "\n".join(sorted(cleaned, key=key))


def io_max_devices(text: str) -> t.Dict[str, str]:
    """io.max text -> {'MAJ:MIN': 'rbps=.. wbps=.. riops=.. wiops=..'}."""
    result = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if parts and _MAJ_MIN.fullmatch(parts[0]):
            result[parts[0]] = " ".join(parts[1].split()) if len(parts) > 1 else ""
    return result


def setting(key: t.Any, value: t.Any, page: t.Optional[int] = None) -> t.Tuple[str, str]:
    """Validate one ``settings`` entry: an interface file name and its value as the kernel prints it."""
    if not isinstance(key, str) or not _SETTING_KEY.fullmatch(key):
        raise ValidationError("settings: %r is not an interface file name such as memory.oom.group (a "
                              "controller, a dot and a name; no '/', no '..')" % (key,))
    if key in DEDICATED_FILES:
        raise ValidationError("settings: use the option %s instead of %s" % (DEDICATED_FILES[key], key))
    if key.startswith("cgroup.") and key not in SETTINGS_CORE_ALLOWED:
        raise ValidationError("settings: %s is a cgroup core file kernelbox uses to manage the group; only %s "
                              "may be set" % (key, ", ".join(sorted(SETTINGS_CORE_ALLOWED))))
    if key in SETTINGS_REFUSED or key.endswith(_SETTINGS_REFUSED_SUFFIXES):
        raise ValidationError("settings: %s is a statistic, an event counter or an action, not a setting" % key)
    if isinstance(value, bool):
        return key, "1" if value else "0"
    if value is None:
        raise ValidationError("settings: %s needs a value" % key)
    if key in PAGE_COUNTER_FILES:
        return key, memory_value(value, "settings.%s" % key, page)
    huge = _HUGETLB_LIMIT.fullmatch(key)
    if huge:
        huge_bytes = int(huge.group(1)) << {"K": 10, "M": 20, "G": 30}[huge.group(2)]
        return key, hugetlb_value(value, "settings.%s" % key, huge_bytes, page)
    text = str(value)
    if "\n" in text.strip() or "\0" in text:
        raise ValidationError("settings: the value of %s must be a single line (one write per file)" % key)
    return key, " ".join(text.split())


def controller_of(filename: str) -> t.Optional[str]:
    """The controller an interface file belongs to; None for core (cgroup.*) files."""
    prefix = filename.split(".", 1)[0]
    return None if prefix == "cgroup" else prefix


@dataclass
class Limits:
    """Resource limits in the module's option names; None leaves a file unmanaged.

    ``normalise()`` validates everything and returns the interface files and
    their values as the kernel will print them (io.max rules separately,
    because devices are resolved against the host).
    """

    cpu_max: t.Any = None
    cpu_weight: t.Any = None
    memory_max: t.Any = None
    memory_high: t.Any = None
    memory_low: t.Any = None
    memory_swap_max: t.Any = None
    pids_max: t.Any = None
    io_max: t.Optional[t.List[t.Any]] = None
    cpuset_cpus: t.Any = None
    cpuset_mems: t.Any = None
    settings: t.Optional[t.Dict[str, t.Any]] = None

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> "Limits":
        names = list(cls.__dataclass_fields__)  # pylint: disable=no-member
        return cls(**{name: params.get(name) for name in names})

    def normalise(self, page: t.Optional[int] = None) -> "NormalisedLimits":
        page = page or page_size()
        files: t.Dict[str, str] = {}
        if self.cpu_max is not None:
            files["cpu.max"] = cpu_max_value(_without_none(self.cpu_max))
        if self.cpu_weight is not None:
            files["cpu.weight"] = cpu_weight_value(self.cpu_weight)
        for option, filename, minimum in (("memory_low", "memory.low", 0), ("memory_high", "memory.high", 1),
                                          ("memory_max", "memory.max", 1),
                                          ("memory_swap_max", "memory.swap.max", 0)):
            value = getattr(self, option)
            if value is not None:
                files[filename] = memory_value(value, option, page, minimum_pages=minimum)
        if self.pids_max is not None:
            files["pids.max"] = pids_max_value(self.pids_max)
        if self.cpuset_cpus is not None:
            files["cpuset.cpus"] = id_list_value(self.cpuset_cpus, "cpuset_cpus")
        if self.cpuset_mems is not None:
            files["cpuset.mems"] = id_list_value(self.cpuset_mems, "cpuset_mems")
        for key, value in sorted((self.settings or {}).items()):
            name, text = setting(key, value, page)
            files[name] = text
        rules = None
        if self.io_max is not None:
            rules = [io_rule(raw) for raw in self.io_max]
            devices = [rule.device for rule in rules]
            duplicates = sorted(set(d for d in devices if devices.count(d) > 1))
            if duplicates:
                raise ValidationError("io_max: device %s is listed more than once" % ", ".join(duplicates))
        return NormalisedLimits(files=files, io_rules=rules)


def _without_none(spec: t.Any) -> t.Any:
    # Ansible fills unset suboptions with None; treat them as absent.
    if isinstance(spec, dict):
        return {k: v for k, v in spec.items() if v is not None}
    return spec


@dataclass
class NormalisedLimits:
    """Validated limits: file -> value as the kernel prints it, plus io.max rules to resolve."""

    files: t.Dict[str, str] = field(default_factory=dict)
    io_rules: t.Optional[t.List[IoRule]] = None  # None: io.max not managed; []: no limits on any device

    def controllers(self) -> t.Dict[str, t.List[str]]:
        """controller -> the files that need it."""
        needed: t.Dict[str, t.List[str]] = {}
        names = list(self.files) + (["io.max"] if self.io_rules is not None else [])
        for name in names:
            controller = controller_of(name)
            if controller:
                needed.setdefault(controller, []).append(name)
        return needed


def ordered(files: t.Mapping[str, t.Any]) -> t.List[str]:
    """File names in the order they are written: FILE_ORDER first, then the rest sorted."""
    rank = {name: index for index, name in enumerate(FILE_ORDER)}
    return sorted(files, key=lambda name: (rank.get(name, len(FILE_ORDER)), name))
