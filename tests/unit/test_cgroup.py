# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cgroup paths, containment, hierarchy detection, stats and systemd delegation on recorded samples.

Containment and delegation run against directory trees in a temporary
directory: a real filesystem, so symlinks and xattrs behave for real, while
no cgroup is touched.
"""

import os
import shutil

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup, cgroup_systemd
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import procfs
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DATA = os.path.join(os.path.dirname(__file__), "data")
VM = os.path.join(DATA, "cgroup_vm")


def sample(*parts):
    with open(os.path.join(DATA, *parts)) as handle:
        return handle.read()


@pytest.mark.parametrize("path, parent, parts, depth", [
    ("web", "kernelbox", ("kernelbox", "web"), 1),
    ("web/worker", "kernelbox", ("kernelbox", "web", "worker"), 1),
    ("web/", "/kernelbox/", ("kernelbox", "web"), 1),
    ("/kernelbox/web", "kernelbox", ("kernelbox", "web"), 1),
    ("/system.slice/kb.service/c/web", "system.slice/kb.service/c", ("system.slice", "kb.service", "c", "web"), 3),
    ("web", "/", ("web",), 0),
    ("web", "", ("web",), 0),
    ("/web", "", ("web",), 0),
    ("with space", "kernelbox", ("kernelbox", "with space"), 1),
])
def test_group_paths(path, parent, parts, depth):
    assert cgroup.group_parts(path, parent) == (parts, depth)


@pytest.mark.parametrize("path, parent, fragment", [
    ("..", "kernelbox", "'..'"), ("../x", "kernelbox", "'..'"), ("a/../../b", "kernelbox", "'..'"),
    ("a/./b", "kernelbox", "'.'"), ("a//b", "kernelbox", "''"), ("web", "kernelbox/..", "'..'"),
    ("/other/web", "kernelbox", "outside the parent"), ("/kernelbox2/web", "kernelbox", "outside the parent"),
    ("/kernelbox", "kernelbox", "outside the parent"), ("/", "kernelbox", "must name a group"),
    ("", "kernelbox", "must name a group"), ("a\0b", "kernelbox", "NUL"), ("a\nb", "kernelbox", "newline"),
    (" web", "kernelbox", "whitespace"), ("x" * 256, "kernelbox", "longer than 255"), (5, "kernelbox", "string"),
])
def test_group_paths_refused(path, parent, fragment):
    with pytest.raises(ValidationError) as info:
        cgroup.group_parts(path, parent)
    assert fragment in str(info.value)


@pytest.fixture
def tree(tmp_path):
    """A fake hierarchy: root/kernelbox/web, a symlink escaping out, and a symlink looping back in."""
    root = tmp_path / "cg"
    (root / "kernelbox" / "web").mkdir(parents=True)
    (root / "kernelbox2").mkdir()
    (root / "kernelbox" / "out").symlink_to(tmp_path)
    (root / "kernelbox" / "back").symlink_to(root / "kernelbox" / "web")
    (root / "kernelbox" / "file").write_text("")
    return str(root)


@pytest.mark.parametrize("parts", [("kernelbox", "web"), ("kernelbox", "web", "new", "deeper"), ("kernelbox", "new")])
def test_containment_accepts_real_and_missing_directories(tree, parts):
    cgroup.check_containment(tree, parts, 1)


@pytest.mark.parametrize("parts, fragment", [
    (("kernelbox", "out"), "symlink"), (("kernelbox", "out", "x"), "symlink"),
    (("kernelbox", "back"), "symlink"), (("kernelbox", "file", "x"), "not a directory"),
])
def test_containment_refuses_symlinks_even_when_they_point_inside(tree, parts, fragment):
    with pytest.raises(KernelboxError) as info:
        cgroup.check_containment(tree, parts, 1)
    assert fragment in str(info.value)


def test_containment_refuses_a_symlinked_parent(tree, tmp_path):
    os.symlink(os.path.join(tree, "kernelbox2"), os.path.join(tree, "alias"))
    with pytest.raises(KernelboxError, match="parent: .*alias is a symlink"):
        cgroup.check_containment(tree, ("alias", "web"), 1)


def test_hierarchy_of_a_hybrid_host():
    mounts = procfs.parse_mountinfo(sample("mountinfo_hybrid_host.txt"))
    seen = []
    hierarchy = cgroup.hierarchy_from_mounts(mounts, lambda mount: seen.append(mount) or "hugetlb\n")
    assert hierarchy.mount == "/sys/fs/cgroup/unified" and hierarchy.layout == "hybrid" and seen == [hierarchy.mount]
    assert hierarchy.controllers == {"hugetlb"}
    assert {"cpu", "memory", "pids", "blkio", "freezer"} <= hierarchy.v1_controllers
    assert "name=systemd" not in hierarchy.v1_controllers
    text = cgroup.missing_controllers_message(hierarchy, {"memory": ["memory.max"], "pids": ["pids.max"]})
    assert "lacks the controllers memory, pids" in text and "memory for memory.max" in text
    assert "hybrid cgroup layout" in text and "systemd.unified_cgroup_hierarchy=1" in text
    assert cgroup.missing_controllers_message(hierarchy, {"hugetlb": ["hugetlb.2MB.max"]}) is None
    with pytest.raises(KernelboxError) as info:
        cgroup.require_controllers(hierarchy, {"memory": ["memory.max"]})
    assert info.value.result == {"controllers_missing": ["memory"]}


def test_hierarchy_of_a_pure_v2_vm():
    mounts = procfs.parse_mountinfo(sample("cgroup_vm", "mountinfo_pure_v2.txt"))
    controllers = sample("cgroup_vm", "root_cgroup.controllers")
    hierarchy = cgroup.hierarchy_from_mounts(mounts, lambda mount: controllers)
    assert hierarchy.mount == "/sys/fs/cgroup" and hierarchy.layout == "unified" and not hierarchy.v1_controllers
    assert {"cpu", "cpuset", "io", "memory", "pids"} <= hierarchy.controllers
    text = cgroup.missing_controllers_message(hierarchy, {"rdma2": ["rdma2.max"]})
    assert "kernel does not provide them" in text and "hybrid" not in text


def test_hierarchy_seen_from_a_container_without_a_cgroup_namespace():
    line = "30 23 0:24 /system.slice/box.scope /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw"
    with pytest.raises(KernelboxError, match="only as the subtree /system.slice/box.scope"):
        cgroup.hierarchy_from_mounts([procfs.parse_mountinfo_line(line)], lambda mount: "")


def test_hierarchy_on_a_v1_only_host():
    mounts = [m for m in procfs.parse_mountinfo(sample("mountinfo_hybrid_host.txt")) if m.fstype != "cgroup2"]
    with pytest.raises(KernelboxError, match="no cgroup2 filesystem.*systemd.unified_cgroup_hierarchy=1"):
        cgroup.hierarchy_from_mounts(mounts, lambda mount: "")


@pytest.fixture
def recorded_group(tmp_path):
    """The files record_samples.py saved from a real group, laid out as a cgroup directory."""
    group_dir = tmp_path / "kbrec"
    group_dir.mkdir()
    for name in os.listdir(VM):
        if not name.startswith(("mountinfo", "root_", "loop")):
            shutil.copy(os.path.join(VM, name), str(group_dir / name))
    (group_dir / "cgroup.procs").write_text("")
    if not (group_dir / "pids.current").exists():
        (group_dir / "pids.current").write_text("0\n")  # the group was empty when recorded
    hierarchy = cgroup.Hierarchy(str(tmp_path), "unified", frozenset(["cpu", "io", "memory", "pids"]))
    return cgroup.Cgroup(hierarchy, ("kbrec",))


def test_stats_from_recorded_files(recorded_group):
    stats = cgroup.read_stats(recorded_group)
    assert stats["populated"] is False and stats["frozen"] is False and stats["processes"] == 0
    memory = stats["memory"]
    assert memory["events"]["oom_kill"] >= 1 and memory["events"]["max"] >= 1  # record_samples.py OOM-killed a hog
    assert 0 < memory["peak"] <= 32 << 20 and memory["swap_current"] is None
    assert stats["pids"]["events_max"] >= 1 and stats["pids"]["current"] >= 0  # forks refused at pids.max 3
    assert stats["cpu"]["nr_throttled"] > 0 and stats["cpu"]["throttled_usec"] > 0 and stats["cpu"]["usage_usec"] > 0
    devnum = sample("cgroup_vm", "loop_device").split()[1]
    assert stats["io"][devnum]["wbytes"] >= 24 * 65536 and stats["io"][devnum]["wios"] >= 1
    assert set(stats["pressure"]) == {"cpu", "memory", "io"}
    assert set(stats["pressure"]["cpu"]["some"]) == {"avg10", "avg60", "avg300", "total"}
    assert stats["pressure"]["cpu"]["some"]["total"] > 0  # the throttled busy loop stalled


def test_stats_sections_are_none_without_their_controller(tmp_path):
    group_dir = tmp_path / "g"
    group_dir.mkdir()
    (group_dir / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    (group_dir / "cgroup.procs").write_text("12\n7\n")
    (group_dir / "cpu.stat").write_text("usage_usec 5\nuser_usec 3\nsystem_usec 2\n")
    group = cgroup.Cgroup(cgroup.Hierarchy(str(tmp_path), "hybrid", frozenset()), ("g",))
    stats = cgroup.read_stats(group)
    assert stats == {"populated": True, "frozen": True, "processes": 2, "memory": None, "pids": None,
                     "cpu": {"usage_usec": 5, "user_usec": 3, "system_usec": 2}, "io": None, "pressure": None}
    assert group.procs() == [7, 12]


def test_recorded_events_parse():
    events = procfs.parse_flat_keyed(sample("cgroup_vm", "memory.events"))
    assert set(events) >= {"low", "high", "max", "oom", "oom_kill"}
    assert procfs.parse_flat_keyed(sample("cgroup_vm", "cgroup.events")) == {"populated": 0, "frozen": 0}


def test_cgroup_handle_paths():
    hierarchy = cgroup.Hierarchy("/sys/fs/cgroup", "unified", frozenset())
    group = cgroup.Cgroup(hierarchy, ("kernelbox", "web", "worker"))
    assert group.path == "/sys/fs/cgroup/kernelbox/web/worker" and group.relpath == "kernelbox/web/worker"
    assert [a.relpath for a in group.ancestors()] == ["", "kernelbox", "kernelbox/web"]
    assert group.ancestors()[0].is_root and group.ancestors()[0].path == "/sys/fs/cgroup"
    assert group.parent() == cgroup.Cgroup(hierarchy, ("kernelbox", "web"))


# --- systemd delegation ---------------------------------------------------------

@pytest.fixture
def systemd_tree(tmp_path):
    run_dir = tmp_path / "run-systemd-system"
    run_dir.mkdir()
    mount = tmp_path / "cg"
    for unit in ("kb-deleg.service", "kb-plain.service", "kb-user.service"):
        (mount / "system.slice" / unit / "containers").mkdir(parents=True)
    os.setxattr(str(mount / "system.slice" / "kb-deleg.service"), "trusted.delegate", b"1")
    os.setxattr(str(mount / "system.slice" / "kb-user.service"), "user.delegate", b"1")
    return str(mount), str(run_dir)


def test_delegation_from_the_xattr(systemd_tree):
    mount, run_dir = systemd_tree
    found = cgroup_systemd.check(mount, ("system.slice", "kb-deleg.service", "containers"), run_dir=run_dir)
    assert found.systemd and found.delegated and found.unit == "kb-deleg.service"
    assert found.unit_cgroup == "system.slice/kb-deleg.service" and "trusted.delegate" in found.evidence
    assert cgroup_systemd.warning(found, "system.slice/kb-deleg.service/containers") is None
    assert cgroup_systemd.check(mount, ("system.slice", "kb-user.service"), run_dir=run_dir).delegated


def test_delegation_missing_is_confirmed_by_systemctl(systemd_tree):
    mount, run_dir = systemd_tree
    asked = []
    found = cgroup_systemd.check(mount, ("system.slice", "kb-plain.service", "containers"),
                                 query=lambda unit: asked.append(unit) or "no", run_dir=run_dir)
    assert asked == ["kb-plain.service"] and found.delegated is False
    text = cgroup_systemd.warning(found, "system.slice/kb-plain.service/containers")
    assert "kb-plain.service, which is not delegated" in text and "Delegate=yes" in text


def test_delegation_yes_from_an_older_systemd(systemd_tree):
    mount, run_dir = systemd_tree
    found = cgroup_systemd.check(mount, ("system.slice", "kb-plain.service"), query=lambda unit: "yes",
                                 run_dir=run_dir)
    assert found.delegated and cgroup_systemd.warning(found, "x") is None


def test_delegation_unknown_still_warns(systemd_tree):
    mount, run_dir = systemd_tree
    found = cgroup_systemd.check(mount, ("system.slice", "kb-plain.service"), query=lambda unit: None,
                                 run_dir=run_dir)
    assert found.delegated is None
    assert "could not be confirmed" in cgroup_systemd.warning(found, "system.slice/kb-plain.service")


def test_parent_outside_any_unit(systemd_tree):
    mount, run_dir = systemd_tree
    for parts in ((), ("kernelbox",), ("machine.slice", "kernelbox")):
        found = cgroup_systemd.check(mount, parts, run_dir=run_dir)
        assert found.systemd and found.unit is None
        assert "not inside a systemd unit" in cgroup_systemd.warning(found, "/".join(parts))


def test_no_systemd_no_warning(tmp_path):
    found = cgroup_systemd.check(str(tmp_path), ("kernelbox",), run_dir=str(tmp_path / "missing"))
    assert not found.systemd and cgroup_systemd.warning(found, "kernelbox") is None


def test_owning_unit_is_the_deepest_service_or_scope():
    assert cgroup_systemd.owning_unit(("user.slice", "user-1000.slice", "user@1000.service", "app.slice",
                                       "run-r1.scope", "c")) == 4
    assert cgroup_systemd.owning_unit(("system.slice", "machine.slice")) is None
