# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cgroup_v2's Ansible contract on a pure cgroup v2 kernel: detection, convergence, check mode, absent.

One playbook for the whole file (every Ansible task costs many seconds under
TCG); each test asserts on its tasks' results and on the kernel's files.
"""

import os

import pytest

MIB = 1 << 20


def cgroup_v2(name, **args):
    return {"name": name, "kernelbox.containers.cgroup_v2": args}


@pytest.fixture(scope="module")
def contract(playbook, module_parent, module_spawn, loop_device):
    parent = module_parent
    sleeper = module_spawn("import time\ntime.sleep(600)\n")
    resident = module_spawn("import time\ntime.sleep(600)\n")
    everything = dict(
        parent=parent, path="all",
        cpu_max={"cpus": 1.5}, cpu_weight=250,
        memory_max="200M", memory_high=157286401, memory_low="MAX", memory_swap_max=-1,
        pids_max="Max", io_max=[{"device": loop_device, "wbps": "10M", "riops": 1000}],
        cpuset_cpus="1,0", cpuset_mems="0",
        settings={"memory.oom.group": True, "memory.min": 1000000, "cgroup.max.descendants": " 10 "},
    )
    changed = dict(everything)
    changed.update(memory_max="300M", pids_max=0)
    run = playbook([
        cgroup_v2("create", pids=[sleeper.pid], **everything),
        dict(cgroup_v2("check change", **changed), check_mode=True),
        cgroup_v2("again", pids=[sleeper.pid], **everything),
        dict(cgroup_v2("check unchanged", **everything), check_mode=True),
        cgroup_v2("freeze", parent=parent, path="all", freeze=True),
        cgroup_v2("nested", parent=parent, path="all/child/inner"),
        cgroup_v2("absent", parent=parent, path="all", state="absent"),
        cgroup_v2("absent again", parent=parent, path="all", state="absent"),
        cgroup_v2("resident", parent=parent, path="busy", pids=[resident.pid]),
        dict(cgroup_v2("leaf below a busy parent", parent=parent + "/busy", path="leaf", memory_max="64M"),
             ignore_errors=True),
    ], diff=True)
    return {"run": run, "parent": parent, "sleeper": sleeper, "resident": resident, "loop_device": loop_device}


def test_every_limit_is_set_as_the_kernel_prints_it(contract, cgroup_file):
    run, parent = contract["run"], contract["parent"]
    create = run.named("create")
    assert create.changed and not create.failed, create.msg
    rdev = os.stat(contract["loop_device"]).st_rdev
    devnum = "%d:%d" % (os.major(rdev), os.minor(rdev))
    assert create["limits"] == {
        "cpuset.cpus": "0-1", "cpuset.mems": "0", "cpu.weight": "250", "cpu.max": "150000 100000",
        "memory.low": "max", "memory.high": "157286400", "memory.max": str(200 * MIB), "memory.swap.max": "max",
        "pids.max": "max", "io.max": "%s rbps=max wbps=%d riops=1000 wiops=max" % (devnum, 10 * MIB),
        "cgroup.max.descendants": "10", "memory.min": "999424", "memory.oom.group": "1",
    }
    assert create["processes"] == [contract["sleeper"].pid]
    assert sorted(cgroup_file(parent, "cgroup.subtree_control").split()) == ["cpu", "cpuset", "io", "memory", "pids"]


def test_the_pure_hierarchy_is_detected(contract, cgroup_root):
    hierarchy = contract["run"].named("create")["hierarchy"]
    with open(os.path.join(cgroup_root, "cgroup.controllers")) as handle:
        assert hierarchy["controllers"] == sorted(handle.read().split())
    assert hierarchy["mount"] == cgroup_root and hierarchy["layout"] == "unified"
    assert hierarchy["v1_controllers"] == []
    assert hierarchy["kill"] and hierarchy["freeze"] and hierarchy["memory_peak"] and hierarchy["pressure"]


def test_live_stats_are_returned(contract):
    stats = contract["run"].named("create")["stats"]
    assert stats["populated"] and stats["processes"] == 1 and stats["pids"]["current"] == 1
    assert stats["memory"]["current"] > 0 and set(stats["memory"]["events"]) >= {"oom", "oom_kill"}
    assert set(stats["cpu"]) >= {"usage_usec", "nr_throttled", "throttled_usec"}
    assert set(stats["pressure"]) == {"cpu", "memory", "io"}


def test_second_run_and_check_mode_change_nothing(contract):
    run = contract["run"]
    planned = run.named("check change")
    assert planned.changed and planned.actions == ["set memory.max to %d (was %d)" % (300 * MIB, 200 * MIB),
                                                   "set pids.max to 0 (was max)"]
    assert planned.diff["before"]["limits"]["pids.max"] == "max" and planned.diff["after"]["limits"]["pids.max"] == "0"
    assert any("pids_max 0 is below the 1 tasks" in w for w in planned.get("warnings", [])), planned.result
    # The real run after the check-mode one finds nothing to do: check mode wrote nothing, and it converged.
    again = run.named("again")
    assert not again.changed and again.actions == [] and again["limits"]["memory.max"] == str(200 * MIB)
    assert not run.named("check unchanged").changed


def test_absent_kills_a_frozen_group_with_nested_children(contract, cgroup_root):
    run, parent = contract["run"], contract["parent"]
    frozen = run.named("freeze")
    assert frozen.changed and frozen["frozen"] and frozen["stats"]["frozen"]
    assert frozen["limits"] == {}  # only the options given are managed
    assert run.named("nested").changed
    removed = run.named("absent")
    assert removed.changed and removed.actions == [
        "kill every process in /%s/all and its descendants (state=absent, group frozen)" % parent,
        "remove /%s/all and its 2 descendant groups, deepest first (state=absent)" % parent]
    assert not run.named("absent again").changed
    assert not os.path.exists(os.path.join(cgroup_root, parent, "all"))
    assert contract["sleeper"].finish(timeout=10)[0] == -9


def test_a_parent_holding_processes_fails_before_any_change(contract, cgroup_root, cgroup_file):
    parent, resident = contract["parent"], contract["resident"]
    leaf = contract["run"].named("leaf below a busy parent")
    assert leaf.failed and not leaf.changed
    assert "no-internal-process rule" in leaf.msg and str(resident.pid) in leaf.msg, leaf.msg
    assert cgroup_file(parent + "/busy", "cgroup.subtree_control").strip() == ""
    assert not os.path.exists(os.path.join(cgroup_root, parent, "busy", "leaf"))
    assert resident.alive() and resident.cgroup() == parent + "/busy"
