# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cgroup library's public API (what the container runtime calls), on the real kernel.

Ansible cannot choose the kill strategy, so the freeze + SIGKILL + thaw
fallback for kernels without cgroup.kill is exercised here directly.
Everything lives under $KB_TEST_CGROUP_PARENT and is checked with /proc and
the cgroup filesystem.
"""

import os
import subprocess
import time

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError


@pytest.fixture
def parent(cgroup_test_parent):
    """'<test parent>/kbt-lib', removed afterwards with an independent cgroup.kill + rmdir."""
    hierarchy = cgroup.find_hierarchy()
    rel = cgroup_test_parent + "/kbt-lib"
    yield rel
    top = os.path.join(hierarchy.mount, rel)
    if os.path.isdir(top):
        with open(os.path.join(top, "cgroup.kill"), "w") as handle:
            handle.write("1")
        time.sleep(0.2)
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            os.rmdir(dirpath)


def cgroup_of(pid):
    with open("/proc/%d/cgroup" % pid) as handle:
        return [line.strip()[3:] for line in handle if line.startswith("0::")][0]


def forking_shell():
    """A shell that forks two sleepers once released (so they are born inside the group)."""
    return subprocess.Popen(["sh", "-c", "read go; sleep 600 & sleep 600 & wait"], stdin=subprocess.PIPE)


def release(proc, group, expected):
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 10
    while len(group.procs()) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(group.procs()) == expected


@pytest.mark.parametrize("use_cgroup_kill", [True, False], ids=["cgroup.kill", "freeze-sigkill-thaw"])
def test_kill_and_remove_nested_tree(parent, use_cgroup_kill):
    outer = cgroup.create_leaf("app", parent=parent)
    inner = cgroup.create_leaf("app/worker", parent=parent)
    shells = [forking_shell(), forking_shell()]
    try:
        cgroup.move_pid(outer, shells[0].pid)
        cgroup.move_pid(inner, shells[1].pid)
        assert cgroup_of(shells[1].pid) == "/" + inner.relpath
        release(shells[0], outer, 3)
        release(shells[1], inner, 3)
        cgroup.freeze(inner, True)
        assert "frozen 1" in open(os.path.join(inner.path, "cgroup.events")).read()
        cgroup.kill(outer, use_cgroup_kill=use_cgroup_kill)
        assert not outer.populated()
        for shell in shells:
            assert shell.wait(timeout=10) == -9
        assert cgroup.kill_and_remove(outer) == [inner.relpath, outer.relpath]
        assert not os.path.exists(outer.path)
        assert cgroup.kill_and_remove(outer) == []  # already gone: fine
    finally:
        for shell in shells:
            if shell.poll() is None:
                shell.kill()
            shell.wait()


def test_runtime_api_round_trip(parent):
    group = cgroup.create_leaf("web", parent=parent)
    assert group.exists() and group.relpath == parent + "/web"
    assert cgroup.create_leaf("web", parent=parent) == group  # idempotent
    assert cgroup.apply_limits(group, cgroup.Limits()) == []
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        cgroup.move_pid(group, sleeper.pid)
        assert group.procs() == [sleeper.pid] and cgroup.cgroup_of_pid(sleeper.pid) == group.relpath
        stats = cgroup.read_stats(group)
        assert stats["populated"] and stats["processes"] == 1 and "usage_usec" in stats["cpu"]
        cgroup.freeze(group, True)
        assert group.frozen() and cgroup.read_stats(group)["frozen"]
        cgroup.freeze(group, False)
        assert not group.frozen()
        with pytest.raises(KernelboxError, match="no such process"):
            cgroup.move_pid(group, 2 ** 22 + 1)
        assert cgroup.kill_and_remove(group) == [group.relpath]
        assert sleeper.wait(timeout=10) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        sleeper.wait()


def test_resolve_refuses_escapes_and_creates_nothing(parent):
    for path in ("../x", "/elsewhere", "a/../../b"):
        with pytest.raises(Exception):
            cgroup.resolve(path, parent=parent)
    assert not os.path.exists(os.path.join(cgroup.find_hierarchy().mount, parent))


def test_thaw_below_a_frozen_ancestor_does_not_wait(parent):
    outer = cgroup.create_leaf("outer", parent=parent)
    inner = cgroup.create_leaf("outer/inner", parent=parent)
    cgroup.freeze(outer, True)
    started = time.monotonic()
    cgroup.freeze(inner, False, timeout=5)  # its own cgroup.freeze is 0, the ancestor still holds it
    assert time.monotonic() - started < 2
    assert cgroup.frozen_ancestor(inner) == outer and inner.frozen()
    assert open(os.path.join(inner.path, "cgroup.freeze")).read().strip() == "0"
    cgroup.freeze(outer, False)
    assert not inner.frozen() and cgroup.frozen_ancestor(inner) is None
    assert cgroup.kill_and_remove(outer) == [inner.relpath, outer.relpath]
