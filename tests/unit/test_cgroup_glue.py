# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cgroup_v2 module's decisions (steps, warnings, refusals), in check mode on a fake cgroup tree.

The tree is plain files in a temporary directory laid out like cgroupfs; the
flow runs in check mode, so the decisions are exercised without writing.
"""

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.cgroup_v2 import (
    ARGUMENT_SPEC, CgroupResource)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup

MIB = 1 << 20
CONTROLLERS = "cpuset cpu io memory pids"


def params(**given):
    values = {name: spec.get("default") for name, spec in ARGUMENT_SPEC.items()}
    values.update(given)
    return values


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """fake.group(rel, **files) makes a directory with interface files; the root offers every controller."""
    root = tmp_path / "cg"
    root.mkdir()

    class Fake:
        mount = str(root)

        @staticmethod
        def group(rel, **files):
            directory = root / rel if rel else root
            directory.mkdir(parents=True, exist_ok=True)
            defaults = {"cgroup.controllers": CONTROLLERS, "cgroup.subtree_control": "", "cgroup.procs": "",
                        "cgroup.events": "populated 0\nfrozen 0", "cgroup.freeze": "0"}
            defaults.update(files)
            for name, text in defaults.items():
                (directory / name).write_text(text + "\n")
    hierarchy = cgroup.Hierarchy(str(root), "unified", frozenset(CONTROLLERS.split()))
    monkeypatch.setattr(cgroup, "find_hierarchy", lambda: hierarchy)
    monkeypatch.setattr(cgroup, "device_number", lambda device: {"/dev/sda": "8:0", "/dev/vdb": "252:16"}[device])
    monkeypatch.setattr(cgroup, "cgroup_of_pid", {4242: "user.slice/x", 77: "kernelbox/web"}.get)
    Fake.group("", **{"cgroup.subtree_control": "cpu memory"})
    return Fake


def check(**given):
    return flow.execute(CgroupResource(params(**given), check_mode=True))


def test_a_new_group_plans_parents_controllers_files_and_moves(fake):
    outcome = check(path="web", memory_max="512M", cpu_max={"cpus": 0.5}, pids_max=64, pids=[4242],
                    io_max=[{"device": "/dev/sda", "wbps": "10M"}])
    assert not outcome.failed, outcome.msg
    assert outcome.changed and outcome.actions == [
        "create cgroup /kernelbox (missing parent)",
        "enable +io +pids in the root cgroup.subtree_control (needed by io_max, pids_max)",
        "enable +cpu +io +memory +pids in /kernelbox/cgroup.subtree_control "
        "(needed by cpu_max, io_max, memory_max, pids_max)",
        "create cgroup /kernelbox/web (absent)",
        "set cpu.max to 50000 100000 (new group)",
        "set memory.max to %d (new group)" % (512 * MIB),
        "set pids.max to 64 (new group)",
        "set io.max to 8:0 rbps=max wbps=10485760 riops=max wiops=max (new group)",
        "move PID 4242 into /kernelbox/web (was in /user.slice/x)",
    ]
    assert outcome.diff["before"] == {}
    assert outcome.diff["after"]["controllers"] == ["cpu", "io", "memory", "pids"]
    assert outcome.result["exists"] is False and outcome.result["stats"] is None


def test_existing_group_changes_only_what_differs_and_warns_below_usage(fake):
    fake.group("", **{"cgroup.subtree_control": "cpu memory pids io"})
    fake.group("kernelbox", **{"cgroup.subtree_control": "cpu memory pids io"})
    fake.group("kernelbox/web", **{"cgroup.controllers": "cpu memory pids io", "memory.max": "max",
                                   "memory.high": "max", "memory.current": str(100 * MIB), "cpu.max": "max 100000",
                                   "pids.max": "max", "pids.current": "12", "cgroup.procs": "77",
                                   "cgroup.events": "populated 1\nfrozen 0", "io.max": "8:0 rbps=max wbps=5 "
                                   "riops=max wiops=max\n252:16 rbps=1 wbps=max riops=max wiops=max"})
    outcome = check(path="web", memory_max="64M", memory_high="max", cpu_max={"quota": "max"}, pids_max=10,
                    io_max=[{"device": "/dev/vdb", "rbps": 1}], pids=[77])
    assert outcome.actions == [
        "set memory.max to %d (was max)" % (64 * MIB),
        "set pids.max to 10 (was max)",
        "set io.max to 252:16 rbps=1 wbps=max riops=max wiops=max "
        "(was 8:0 rbps=max wbps=5 riops=max wiops=max; 252:16 rbps=1 wbps=max riops=max wiops=max)",
    ]
    assert outcome.diff["before"]["limits"]["memory.max"] == "max"
    assert outcome.diff["after"]["limits"]["memory.max"] == str(64 * MIB)
    warnings = " ".join(outcome.warnings)
    assert "memory_max 64.0 MiB is below the current usage" in warnings and "OOM-kills" in warnings
    assert "pids_max 10 is below the 12 tasks" in warnings and "EAGAIN" in warnings
    assert outcome.result["stats"]["populated"] is True and outcome.result["processes"] == [77]


def test_converged_group_has_no_steps(fake):
    fake.group("kernelbox", **{"cgroup.subtree_control": "memory"})
    fake.group("kernelbox/web", **{"cgroup.controllers": "memory", "memory.max": str(999424),
                                   "memory.oom.group": "1", "cgroup.freeze": "1",
                                   "cgroup.events": "populated 0\nfrozen 1"})
    outcome = check(path="/kernelbox/web", memory_max=1000000, settings={"memory.oom.group": True}, freeze=True)
    assert not outcome.failed and not outcome.changed and outcome.actions == [], outcome.actions
    thaw = check(path="web", freeze=False)
    assert thaw.actions == ["thaw /kernelbox/web (freeze=false)"]


def test_parent_with_processes_fails_before_planning_writes(fake):
    fake.group("kernelbox", **{"cgroup.procs": "31\n32"})
    outcome = check(path="web", memory_max="1G")
    assert outcome.failed and not outcome.changed
    assert "no-internal-process rule" in outcome.msg and "PIDs 31, 32" in outcome.msg
    assert "/kernelbox/supervisor" in outcome.msg


def test_missing_controller_and_unknown_pid_fail(fake, monkeypatch):
    limited = cgroup.Hierarchy(fake.mount, "hybrid", frozenset(["hugetlb"]), frozenset(["memory"]))
    monkeypatch.setattr(cgroup, "find_hierarchy", lambda: limited)
    outcome = check(path="web", memory_max="1G")
    assert outcome.failed and "systemd.unified_cgroup_hierarchy=1" in outcome.msg
    assert outcome.result == {"controllers_missing": ["memory"]}
    monkeypatch.setattr(cgroup, "find_hierarchy", lambda: cgroup.Hierarchy(fake.mount, "unified", frozenset()))
    assert "there is no process 999" in check(path="web", pids=[999]).msg


def test_cpuset_outside_the_parent_fails(fake):
    fake.group("", **{"cpuset.cpus.effective": "0-1"})
    outcome = check(path="web", cpuset_cpus="1-3")
    assert outcome.failed and "CPUs 2-3 are not available below /, which offers 0-1" in outcome.msg


def test_absent_plans_kill_then_removal_of_descendants(fake):
    fake.group("kernelbox/web", **{"cgroup.events": "populated 1\nfrozen 1"})
    fake.group("kernelbox/web/a")
    fake.group("kernelbox/web/a/b")
    outcome = check(path="web", state="absent")
    assert outcome.actions == [
        "kill every process in /kernelbox/web and its descendants (state=absent, group frozen)",
        "remove /kernelbox/web and its 2 descendant groups, deepest first (state=absent)"]
    assert outcome.diff["before"]["descendants"] == ["kernelbox/web/a/b", "kernelbox/web/a"]
    assert outcome.diff["after"] == {}
    gone = check(path="other", state="absent")
    assert not gone.changed and not gone.failed


@pytest.mark.parametrize("given, fragment", [
    (dict(path="../x"), "'..'"), (dict(path="web", pids=[0]), "positive"),
    (dict(path="web", state="absent", pids=[5]), "state=absent"), (dict(path="web", timeout=0), "timeout"),
    (dict(path="web", settings={"cgroup.procs": 1}), "core file"), (dict(path="web", memory_max="lots"), "not a size"),
])
def test_bad_input_fails_before_reading_the_host(fake, monkeypatch, given, fragment):
    monkeypatch.setattr(cgroup, "find_hierarchy", lambda: pytest.fail("validation must not touch the host"))
    outcome = check(**given)
    assert outcome.failed and fragment in outcome.msg, outcome.msg


def test_delegation_warning_survives_a_missing_systemctl(fake, monkeypatch):
    from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_systemd
    monkeypatch.setattr(cgroup_systemd, "systemd_booted", lambda run_dir=None: True)
    fake.group("system.slice")
    fake.group("system.slice/kb.service")
    resource = CgroupResource(params(parent="system.slice/kb.service/c", path="web"), check_mode=True)

    def no_systemctl(argv, handle_exceptions=True):
        assert argv[:2] == ["systemctl", "show"] and handle_exceptions is False
        raise OSError(2, "No such file or directory: systemctl")
    resource.run_command = no_systemctl
    outcome = flow.execute(resource)
    assert not outcome.failed, outcome.msg
    assert any("kb.service and delegation could not be confirmed" in w for w in outcome.warnings), outcome.warnings
