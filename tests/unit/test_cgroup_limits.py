# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Normalisation of cgroup v2 limit values: each must equal what the kernel prints after the write."""

import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_limits as limits
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DATA = os.path.join(os.path.dirname(__file__), "data", "cgroup_vm")
MIB = 1 << 20
PAGE = 4096


def sample(name):
    with open(os.path.join(DATA, name)) as handle:
        return handle.read()


@pytest.mark.parametrize("given, expected", [
    ("512M", str(512 * MIB)), ("1G", str(1 << 30)), ("2GiB", str(2 << 30)), ("64k", "65536"),
    ("1073741824", "1073741824"), (1073741824, "1073741824"),
    # page_counter_memparse() keeps whole pages: written 1000000, read back 999424 (recorded in the VM)
    (1000000, "999424"), ("4097", "4096"), ("8191", "4096"),
    ("max", "max"), ("MAX", "max"), (" max ", "max"), (-1, "max"), ("-1", "max"), ("unlimited", "max"),
    # at PAGE_COUNTER_MAX pages the kernel prints 'max'
    ((1 << 63) - 1, "max"), (((1 << 63) - 1) // PAGE * PAGE, "max"),
    (((1 << 63) - 1) // PAGE * PAGE - PAGE, str(((1 << 63) - 1) // PAGE * PAGE - PAGE)),
])
def test_memory_values_read_back_like_the_kernel(given, expected):
    assert limits.memory_value(given, "memory_max", page=PAGE) == expected


def test_memory_rounding_recorded_in_the_vm():
    # record_samples.py wrote "1000000", then "32M" to memory.max; "max" to memory.high; "0" to memory.swap.max
    assert sample("memory.max").strip() == limits.memory_value("32M", "memory_max", PAGE)
    assert sample("memory.high").strip() == limits.memory_value("max", "memory_high", PAGE)
    assert sample("memory.swap.max").strip() == limits.memory_value(0, "memory_swap_max", PAGE)


def test_memory_rounds_to_the_running_page_size():
    assert limits.memory_value(100000, "memory_max", page=65536) == "65536"
    assert limits.memory_value("1G", "memory_max") == str(1 << 30)


@pytest.mark.parametrize("given", ["1.5G", "1e9", "512M junk", "1.5.3G", "10 apples", "", "-2", 1 << 63, True,
                                   "512M; rm -rf /"])
def test_memory_values_refused(given):
    with pytest.raises(ValidationError, match="memory_max"):
        limits.memory_value(given, "memory_max", page=PAGE)


def test_memory_minimum_pages():
    with pytest.raises(ValidationError, match="below 4096 bytes"):
        limits.memory_value("100", "memory_max", page=PAGE, minimum_pages=1)
    assert limits.memory_value(0, "memory_low", page=PAGE) == "0"


@pytest.mark.parametrize("given, huge, expected", [
    (3000000, 2 * MIB, str(2 * MIB)), ("4M", 2 * MIB, str(4 * MIB)), ("1M", 2 * MIB, "0"),
    ("max", 2 * MIB, "max"), ((1 << 63) - 1, 2 * MIB, "max"), ("2G", 1 << 30, str(2 << 30)),
])
def test_hugetlb_limits_round_to_huge_pages(given, huge, expected):
    assert limits.hugetlb_value(given, "settings.hugetlb", huge, PAGE) == expected


@pytest.mark.parametrize("spec, expected", [
    ({"cpus": 0.2}, "20000 100000"), ({"cpus": 1.5}, "150000 100000"), ({"cpus": "2"}, "200000 100000"),
    ({"cpus": 1, "period": 50000}, "50000 50000"), ({"cpus": 0.01}, "1000 100000"),
    ({"quota": 20000}, "20000 100000"), ({"quota": "20000", "period": "10000"}, "20000 10000"),
    ({"quota": "max"}, "max 100000"), ({"quota": "MAX", "period": 200000}, "max 200000"), ({"quota": -1}, "max 100000"),
    ({"cpus": "max"}, "max 100000"), ("max", "max 100000"), ("50000 100000", "50000 100000"),
    ("max 250000", "max 250000"), ({"cpus": 0.2, "quota": None, "period": None}, "20000 100000"),
])
def test_cpu_max_normalises_to_quota_and_period(spec, expected):
    assert limits.cpu_max_value(limits._without_none(spec)) == expected


def test_cpu_max_default_matches_the_recorded_kernel_text():
    assert sample("cpu.max").strip() == limits.cpu_max_value({"quota": 20000, "period": 100000})


@pytest.mark.parametrize("spec, fragment", [
    ({"cpus": 1, "quota": 1000}, "exactly one"), ({}, "exactly one"), ({"cpus": 0}, "positive"),
    ({"cpus": -1}, "positive"), ({"cpus": 0.001}, "at least 1000"), ({"cpus": "lots"}, "not a number"),
    ({"cpus": True}, "positive"), ({"cpus": float("nan")}, "positive"), ({"quota": 999}, "outside 1000"),
    ({"quota": "x"}, "not an integer"), ({"cpus": 1, "period": 999}, "outside 1000..1000000"),
    ({"cpus": 1, "period": 1000001}, "outside"), ({"cpus": 1, "burst": 1}, "unknown keys"),
    ("1 2 3", "QUOTA"), (5, "expected a dict"),
])
def test_cpu_max_refused(spec, fragment):
    with pytest.raises(ValidationError) as info:
        limits.cpu_max_value(spec)
    assert fragment in str(info.value)


def test_cpu_weight_and_pids_max():
    assert limits.cpu_weight_value(1) == "1" and limits.cpu_weight_value("10000") == "10000"
    for bad in (0, 10001, "x", True):
        with pytest.raises(ValidationError):
            limits.cpu_weight_value(bad)
    assert limits.pids_max_value("max") == "max" and limits.pids_max_value(-1) == "max"
    assert limits.pids_max_value("Max") == "max" and limits.pids_max_value(" 10 ") == "10"
    assert limits.pids_max_value(0) == "0" and limits.pids_max_value(4194304) == "4194304"
    for bad in (4194305, -2, "ten", True):
        with pytest.raises(ValidationError):
            limits.pids_max_value(bad)
    assert sample("pids.max").strip() == limits.pids_max_value(3)


@pytest.mark.parametrize("shares, weight", [
    (2, 1), (1024, 100), (262144, 10000), (512, 59), (2048, 174), (2000, 170), (0, 1), (1, 1), (10 ** 6, 10000),
])
def test_cpu_weight_from_oci_shares(shares, weight):
    assert limits.cpu_weight_from_shares(shares) == weight


@pytest.mark.parametrize("given, expected", [
    ("1,0", "0-1"), ("0-1", "0-1"), ("0-3,5,7-8", "0-3,5,7-8"), ("5,3,4,0", "0,3-5"), ([3, 1, 2], "1-3"),
    (2, "2"), ("", ""), (" 0 - 1 ", "0-1"), ("0,0,0", "0"), ("1-1", "1"), ("0-2,1-3", "0-3"),
])
def test_cpu_lists_print_like_the_kernel(given, expected):
    assert limits.id_list_value(given, "cpuset_cpus") == expected


def test_cpu_lists_recorded_in_the_vm():
    # record_samples.py wrote "1,0" to cpuset.cpus; the kernel printed:
    assert sample("cpuset.cpus").strip() == limits.id_list_value("1,0", "cpuset_cpus")
    assert limits.parse_id_list(sample("cpuset.cpus.effective")) == [0, 1]
    assert limits.parse_id_list(sample("cpuset.mems.effective")) == [0]


@pytest.mark.parametrize("given", ["3-1", "a", "0-1:2/4", "1-", "-1", "0x1", True, "1;2", "70000"])
def test_cpu_lists_refused(given):
    with pytest.raises(ValidationError, match="cpuset_cpus"):
        limits.id_list_value(given, "cpuset_cpus")


def test_io_rules():
    rule = limits.io_rule({"device": "/dev/loop0", "wbps": "10M", "riops": 1000})
    assert rule.line("7:0") == "7:0 rbps=max wbps=10485760 riops=1000 wiops=max"
    assert not rule.unlimited and limits.io_rule({"device": "8:0", "rbps": "max"}).unlimited
    assert limits.io_rule({"device": "8:16", "wiops": "MAX", "rbps": -1}).unlimited


@pytest.mark.parametrize("raw, fragment", [
    ({"device": "/dev/loop0", "wbps": 0}, "minimum"), ({"device": "loop0"}, "absolute path"),
    ({"device": ""}, "device must be"), ({"wbps": 1}, "device must be"),
    ({"device": "/dev/sda", "wiops": 1 << 32}, "outside"), ({"device": "/dev/sda", "riops": 0}, "outside"),
    ({"device": "/dev/sda", "speed": 1}, "unknown keys"), ("8:0 wbps=1", "must be a dict"),
    ({"device": "/dev/sda", "rbps": "1.5M"}, "not a size"),
])
def test_io_rules_refused(raw, fragment):
    with pytest.raises(ValidationError) as info:
        limits.io_rule(raw)
    assert fragment in str(info.value)


def test_io_max_text_is_sorted_and_recorded_text_parses():
    recorded = sample("io.max")
    devnum = sample("loop_device").split()[1]
    assert limits.io_max_text(recorded.splitlines()) == "%s rbps=max wbps=1048576 riops=1000 wiops=max" % devnum
    assert limits.io_max_devices(recorded) == {devnum: "rbps=max wbps=1048576 riops=1000 wiops=max"}
    assert limits.io_max_text(["8:16  rbps=1 wbps=max riops=max wiops=max", "", "7:0 rbps=max wbps=2 riops=max "
                               "wiops=max", "252:0 rbps=3 wbps=max riops=max wiops=max"]).splitlines() == [
        "7:0 rbps=max wbps=2 riops=max wiops=max", "8:16 rbps=1 wbps=max riops=max wiops=max",
        "252:0 rbps=3 wbps=max riops=max wiops=max"]


@pytest.mark.parametrize("key, value, expected", [
    ("memory.oom.group", True, "1"), ("memory.oom.group", False, "0"), ("cpu.idle", 1, "1"),
    ("cgroup.max.depth", " 5 ", "5"), ("cgroup.max.descendants", "max", "max"),
    ("io.weight", "default   200", "default 200"), ("memory.min", 1000000, "999424"),
    ("memory.swap.high", "MAX", "max"), ("hugetlb.2MB.max", 3000000, str(2 * MIB)),
    ("hugetlb.1GB.rsvd.max", "max", "max"), ("cpu.weight.nice", -5, "-5"),
])
def test_settings_normalise(key, value, expected):
    assert limits.setting(key, value, PAGE) == (key, expected)


@pytest.mark.parametrize("key, fragment", [
    ("memory.max", "use the option memory_max"), ("cpu.max", "use the option cpu_max"),
    ("cgroup.freeze", "use the option freeze"), ("cgroup.procs", "core file"),
    ("cgroup.subtree_control", "core file"), ("cgroup.kill", "core file"), ("cgroup.type", "core file"),
    ("cgroup.threads", "core file"), ("../memory.high", "not an interface file"),
    ("memory/high", "not an interface file"), ("/sys/fs/cgroup/x.y", "not an interface file"),
    ("memory", "not an interface file"), ("memory..high", "not an interface file"), ("", "not an interface file"),
    ("memory.stat", "statistic"), ("cpu.pressure", "statistic"), ("memory.reclaim", "action"),
    ("memory.events.local", "statistic"), ("memory.current", "statistic"), ("cpuset.cpus.effective", "statistic"),
    (5, "not an interface file"),
])
def test_settings_refused(key, fragment):
    with pytest.raises(ValidationError) as info:
        limits.setting(key, "1", PAGE)
    assert fragment in str(info.value)


def test_settings_values_refused():
    with pytest.raises(ValidationError, match="single line"):
        limits.setting("io.weight", "default 100\n8:0 200", PAGE)
    with pytest.raises(ValidationError, match="needs a value"):
        limits.setting("memory.oom.group", None, PAGE)


def test_limits_normalise_everything_and_name_their_controllers():
    normal = limits.Limits(cpu_max={"cpus": 1.5, "quota": None, "period": None}, cpu_weight=200,
                           memory_max="512M", memory_high=1000000, memory_low=0, memory_swap_max="max",
                           pids_max=100, io_max=[{"device": "/dev/sda", "wbps": "1M"}], cpuset_cpus="1,0",
                           cpuset_mems=0, settings={"memory.oom.group": True, "cgroup.max.depth": 3}
                           ).normalise(PAGE)
    assert normal.files == {
        "cpu.max": "150000 100000", "cpu.weight": "200", "memory.max": str(512 * MIB), "memory.high": "999424",
        "memory.low": "0", "memory.swap.max": "max", "pids.max": "100", "cpuset.cpus": "0-1", "cpuset.mems": "0",
        "memory.oom.group": "1", "cgroup.max.depth": "3"}
    assert normal.io_rules == [limits.IoRule("/dev/sda", wbps="1048576")]
    assert {c: sorted(f) for c, f in normal.controllers().items()} == {
        "cpu": ["cpu.max", "cpu.weight"], "cpuset": ["cpuset.cpus", "cpuset.mems"], "io": ["io.max"],
        "memory": ["memory.high", "memory.low", "memory.max", "memory.oom.group", "memory.swap.max"],
        "pids": ["pids.max"]}
    assert limits.ordered(normal.files) == [
        "cpuset.cpus", "cpuset.mems", "cpu.weight", "cpu.max", "memory.low", "memory.high", "memory.max",
        "memory.swap.max", "pids.max", "cgroup.max.depth", "memory.oom.group"]


def test_limits_unset_are_unmanaged_and_empty_io_max_clears():
    assert limits.Limits().normalise(PAGE).files == {} and limits.Limits().normalise(PAGE).io_rules is None
    assert limits.Limits(io_max=[]).normalise(PAGE).io_rules == []
    assert limits.Limits(io_max=[]).normalise(PAGE).controllers() == {"io": ["io.max"]}


def test_limits_refuse_duplicate_devices_and_bad_values():
    with pytest.raises(ValidationError, match="more than once"):
        limits.Limits(io_max=[{"device": "/dev/sda"}, {"device": "/dev/sda", "wbps": 1}]).normalise(PAGE)
    with pytest.raises(ValidationError, match="memory_high"):
        limits.Limits(memory_high="0").normalise(PAGE)
    with pytest.raises(ValidationError, match="cpu_weight"):
        limits.Limits(cpu_weight=0).normalise(PAGE)
