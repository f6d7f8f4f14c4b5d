# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cgroup_v2 module on this (hybrid) host: groups, processes, freezer, kill, removal, containment, errors.

Limits need a pure cgroup v2 kernel and are proven by enforcement in tests/vm.
Every group lives under the sandbox's $KB_TEST_CGROUP_PARENT and is removed
afterwards by an independent reader (cgroup.kill + rmdir), never by the module.
"""

import os
import re
import subprocess
import time

import pytest

from harness import snapshot

ROOT = snapshot.cgroup2_root()


def cgroup_dir(rel):
    return os.path.join(ROOT, rel)


def read(rel, name):
    with open(os.path.join(ROOT, rel, name)) as handle:
        return handle.read()


def cgroup_of(pid):
    with open("/proc/%d/cgroup" % pid) as handle:
        for line in handle:
            if line.startswith("0::"):
                return line.strip()[3:].lstrip("/")
    return None


def remove_tree(rel):
    """Independent cleanup: cgroup.kill, wait until empty, rmdir deepest first."""
    top = cgroup_dir(rel)
    if not os.path.isdir(top):
        return
    try:
        with open(os.path.join(top, "cgroup.kill"), "w") as handle:
            handle.write("1")
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while "populated 1" in read(rel, "cgroup.events") and time.monotonic() < deadline:
        time.sleep(0.02)
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        for _attempt in range(100):
            try:
                os.rmdir(dirpath)
                break
            except OSError:
                time.sleep(0.02)


@pytest.fixture
def cg_parent(request, cgroup_test_parent):
    """A parent group for one test, '<test parent>/kbt-<test>'; removed with everything inside afterwards."""
    name = "kbt-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    rel = "%s/%s" % (cgroup_test_parent, name)
    remove_tree(rel)
    yield rel
    remove_tree(rel)


@pytest.fixture
def sleepers():
    """sleepers(n) starts n 'sleep 600' processes; all are killed and reaped afterwards."""
    procs = []

    def start(count=1, argv=("sleep", "600")):
        new = [subprocess.Popen(list(argv)) for _index in range(count)]
        procs.extend(new)
        return new
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_lifecycle_move_freeze_thaw_and_absent(any_ansible, cg_parent, sleepers):
    (proc,) = sleepers(1)
    origin = cgroup_of(proc.pid)
    group = cg_parent + "/web"
    args = {"parent": cg_parent, "path": "web", "pids": [proc.pid]}
    created = any_ansible.module("cgroup_v2", args)
    assert created.changed and not created.failed, created.result
    assert created.actions == ["create cgroup /%s (missing parent)" % cg_parent,
                               "create cgroup /%s (absent)" % group,
                               "move PID %d into /%s (was in /%s)" % (proc.pid, group, origin)]
    assert cgroup_of(proc.pid) == group
    assert created["processes"] == [proc.pid] and created["path"] == group
    assert created["cgroup_path"] == cgroup_dir(group) and created["exists"]
    assert created["stats"]["populated"] and created["stats"]["processes"] == 1
    assert created["hierarchy"]["mount"] == ROOT

    again = any_ansible.module("cgroup_v2", args)
    assert not again.changed and again.actions == []

    frozen = any_ansible.module("cgroup_v2", dict(args, freeze=True))
    assert frozen.changed and frozen.actions == ["freeze /%s (freeze=true)" % group]
    assert "frozen 1" in read(group, "cgroup.events") and read(group, "cgroup.freeze").strip() == "1"
    assert not any_ansible.module("cgroup_v2", dict(args, freeze=True)).changed

    thawed = any_ansible.module("cgroup_v2", dict(args, freeze=False))
    assert thawed.actions == ["thaw /%s (freeze=false)" % group]
    assert "frozen 0" in read(group, "cgroup.events")

    removed = any_ansible.module("cgroup_v2", {"parent": cg_parent, "path": "web", "state": "absent"})
    assert removed.changed and removed.actions == [
        "kill every process in /%s and its descendants (state=absent)" % group,
        "remove /%s (state=absent)" % group]
    assert proc.wait(timeout=10) == -9
    assert not os.path.exists(cgroup_dir(group)) and os.path.isdir(cgroup_dir(cg_parent))
    gone = any_ansible.module("cgroup_v2", {"parent": cg_parent, "path": "web", "state": "absent"})
    assert not gone.changed and not gone.failed and gone["exists"] is False and gone["stats"] is None


def play(*tasks):
    lines = ["- hosts: localhost", "  gather_facts: false", "  tasks:"]
    for name, args in tasks:
        lines.append("    - {name: %s, kernelbox.containers.cgroup_v2: %s}" % (name, args))
    return "\n".join(lines)


def test_absent_kills_nested_frozen_groups_and_forked_children(ansible, cg_parent):
    # Shells that fork two children each once released, i.e. after the module moved them: the module never
    # sees those PIDs, the kernel does.  The leaf is frozen before it can run at all.
    forking = ["sh", "-c", "read go; sleep 600 & sleep 600 & wait"]
    procs = [subprocess.Popen(forking, stdin=subprocess.PIPE) for _index in range(3)]
    top, middle, leaf = procs
    try:
        setup = ansible.playbook(play(
            ("top", "{parent: %s, path: tree/top, pids: [%d]}" % (cg_parent, top.pid)),
            ("middle", "{parent: %s, path: tree/a, pids: [%d]}" % (cg_parent, middle.pid)),
            ("leaf", "{parent: %s, path: tree/a/b, pids: [%d], freeze: true}" % (cg_parent, leaf.pid))))
        # tree/a holds a process and has a child group: cgroup v2 allows that when no controller is handed down.
        assert setup.failed_tasks == [], [(t.task, t.msg) for t in setup.tasks]
        for proc in procs:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                len(read(cg_parent + "/tree/" + rel, "cgroup.procs").split()) == 3 for rel in ("top", "a")):
            time.sleep(0.05)
        assert len(read(cg_parent + "/tree/a/b", "cgroup.procs").split()) == 1  # frozen: has not forked
        teardown = ansible.playbook(play(("absent", "{parent: %s, path: tree, state: absent}" % cg_parent),
                                         ("absent again", "{parent: %s, path: tree, state: absent}" % cg_parent)))
        absent = teardown.named("absent")
        assert absent.actions == [
            "kill every process in /%s/tree and its descendants (state=absent)" % cg_parent,
            "remove /%s/tree and its 3 descendant groups, deepest first (state=absent)" % cg_parent]
        assert not teardown.named("absent again").changed
        for proc in procs:
            assert proc.wait(timeout=10) == -9
        assert not os.path.exists(cgroup_dir(cg_parent + "/tree"))
        time.sleep(0.2)  # the forked sleeps died too: survivors would be re-parented to the sandbox
        assert snapshot.stray_processes() == []
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.mark.parametrize("parent_suffix, path, fragment", [
    ("", "..", "'..'"),
    ("", "../escape", "'..'"),
    ("", "a/../../b", "'..'"),
    ("", "./a", "'.'"),
    ("", "a//b", "''"),
    ("", "/elsewhere/web", "outside the parent"),
    ("/foo", "/{top}/foo2/web", "outside the parent"),  # sibling prefix: foo2 is not inside foo
    ("/foo", "/{top}/foo", "outside the parent"),  # the parent itself is not a group below it
    ("/../x", "web", "'..'"),
    ("", "", "must name a group"),
])
def test_path_escapes_are_refused_and_create_nothing(ansible, cg_parent, parent_suffix, path, fragment):
    before = snapshot.cgroups()
    parent = cg_parent + parent_suffix
    result = ansible.module("cgroup_v2", {"parent": parent, "path": path.replace("{top}", cg_parent)})
    assert result.failed and not result.changed and fragment in result.msg, result.msg
    assert snapshot.cgroups() == before


def test_sibling_prefix_is_not_confused(ansible, cg_parent):
    ansible.module("cgroup_v2", {"parent": cg_parent, "path": "foo2/web"})
    inside = ansible.module("cgroup_v2", {"parent": cg_parent + "/foo", "path": "/%s/foo/web" % cg_parent})
    assert inside.changed and inside["path"] == cg_parent + "/foo/web"
    assert os.path.isdir(cgroup_dir(cg_parent + "/foo/web")) and os.path.isdir(cgroup_dir(cg_parent + "/foo2/web"))


def test_missing_controllers_fail_early_and_name_the_fix(ansible, cg_parent):
    available = set(read("", "cgroup.controllers").split())
    hybrid = any(m[1] == "cgroup" for m in snapshot.mounts())
    # 'kbtnone' never exists, so the failure path is exercised even on a host with every controller.
    wanted = {"memory": {"memory_max": "64M"}, "cpu": {"cpu_max": {"cpus": 0.5}}, "pids": {"pids_max": 10}}
    args = {"parent": cg_parent, "path": "web", "settings": {"kbtnone.knob": 1}}
    for options in wanted.values():
        args.update(options)
    before = snapshot.cgroups()
    result = ansible.module("cgroup_v2", args)
    missing = sorted((set(wanted) - available) | {"kbtnone"})
    assert result.failed and not result.changed and result.actions == []
    assert result["controllers_missing"] == missing
    assert "lacks the controller" in result.msg and all(c in result.msg for c in missing), result.msg
    if hybrid:
        assert "hybrid cgroup layout" in result.msg and "systemd.unified_cgroup_hierarchy=1" in result.msg
    assert snapshot.cgroups() == before and not os.path.exists(cgroup_dir(cg_parent))


def test_check_mode_and_diff(ansible, cg_parent, sleepers, host_state):
    (proc,) = sleepers(1)
    origin = cgroup_of(proc.pid)
    args = {"parent": cg_parent, "path": "web", "pids": [proc.pid], "freeze": True}
    before = host_state()
    planned = ansible.module("cgroup_v2", args, check=True, diff=True)
    assert planned.changed and not planned.failed
    assert planned.actions == ["create cgroup /%s (missing parent)" % cg_parent,
                               "create cgroup /%s/web (absent)" % cg_parent,
                               "move PID %d into /%s/web (was in /%s)" % (proc.pid, cg_parent, origin),
                               "freeze /%s/web (freeze=true)" % cg_parent]
    assert planned.diff["before"] == {}
    assert planned.diff["after"]["frozen"] is True and planned.diff["after"]["pids"] == [proc.pid]
    assert planned["exists"] is False and host_state() == before and cgroup_of(proc.pid) == origin

    done = ansible.module("cgroup_v2", args, diff=True)
    assert done.changed and done.actions == planned.actions and done.diff == planned.diff
    converged = ansible.module("cgroup_v2", args, check=True)
    assert not converged.changed
    thaw = ansible.module("cgroup_v2", dict(args, freeze=False), check=True, diff=True)
    assert thaw.diff["before"]["frozen"] is True and thaw.diff["after"]["frozen"] is False
    assert read(cg_parent + "/web", "cgroup.freeze").strip() == "1"
    state = host_state()
    removal = ansible.module("cgroup_v2", {"parent": cg_parent, "path": "web", "state": "absent"}, check=True)
    assert removal.changed and host_state() == state and proc.poll() is None


def test_parent_holding_processes_is_explained(ansible, cg_parent, sleepers):
    options = {"pids": {"pids_max": 10}, "memory": {"memory_max": "64M"}, "cpu": {"cpu_weight": 50},
               "hugetlb": {"settings": {"hugetlb.2MB.max": "4M"}}}
    available = [c for c in options if c in read("", "cgroup.controllers").split()]
    assert available, "this test needs one controller of %s in cgroup v2" % sorted(options)
    (proc,) = sleepers(1)
    ansible.module("cgroup_v2", {"parent": cg_parent, "path": "busy", "pids": [proc.pid]})
    subtree = read(cg_parent + "/busy", "cgroup.subtree_control")
    args = {"parent": cg_parent + "/busy", "path": "leaf"}
    args.update(options[available[0]])
    # Check mode: even a wrong answer could not write anything outside the test parent.
    result = ansible.module("cgroup_v2", args, check=True)
    assert result.failed and "no-internal-process rule" in result.msg and str(proc.pid) in result.msg, result.msg
    assert read(cg_parent + "/busy", "cgroup.subtree_control") == subtree
    assert not os.path.exists(cgroup_dir(cg_parent + "/busy/leaf"))


@pytest.fixture
def fake_systemd():
    """Make this sandbox look systemd-booted: /run is the sandbox's private tmpfs."""
    created = not os.path.exists("/run/systemd")
    os.makedirs("/run/systemd/system", exist_ok=True)
    yield
    if created:
        os.rmdir("/run/systemd/system")
        os.rmdir("/run/systemd")


def test_systemd_delegation_is_checked(ansible, cg_parent, fake_systemd):
    for unit in ("kbt-plain.service", "kbt-deleg.service"):
        os.makedirs(cgroup_dir("%s/kbt.slice/%s" % (cg_parent, unit)))
    os.setxattr(cgroup_dir(cg_parent + "/kbt.slice/kbt-deleg.service"), "trusted.delegate", b"1")
    run = ansible.playbook(play(
        ("plain", "{parent: %s/kbt.slice/kbt-plain.service, path: c}" % cg_parent),
        ("delegated", "{parent: %s/kbt.slice/kbt-deleg.service/containers, path: c}" % cg_parent),
        ("outside", "{parent: %s/kbt.slice, path: c}" % cg_parent)))
    assert run.failed_tasks == []
    plain = " ".join(run.named("plain").get("warnings", []))
    assert "kbt-plain.service" in plain and "Delegate=yes" in plain, plain
    assert run.named("delegated").get("warnings", []) == []
    outside = " ".join(run.named("outside").get("warnings", []))
    assert "not inside a systemd unit" in outside and "CGROUP_DELEGATION" in outside, outside
