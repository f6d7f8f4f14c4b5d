# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The suite's own machinery: per-test timeouts (tests/conftest.py) and the leak check's clean-up plan
(tests/harness/snapshot.py)."""

import pytest

from harness import snapshot


def test_only_new_groups_below_the_own_test_parent_are_removed_deepest_first():
    before = {"cgroups": ["kbtest/7", "kbtest/7/old"], "cgroup_root_children": ["system.slice"]}
    after = {"cgroups": ["kbtest/7", "kbtest/7/old", "kbtest/7/web", "kbtest/7/web/exec", "kbtest/70/x"],
             "cgroup_root_children": ["system.slice", "kernelbox", "podman-job"]}
    # kbtest/70 is another run's parent (a prefix match would take it); kernelbox and podman-job are beside
    # the parent: reported by the leak check, never removed.
    assert snapshot.cgroups_to_remove(before, after, "kbtest/7") == ["kbtest/7/web/exec", "kbtest/7/web"]


def test_nothing_new_nothing_removed():
    state = {"cgroups": ["kbtest/7"], "cgroup_root_children": []}
    assert snapshot.cgroups_to_remove(state, state, "kbtest/7") == []


def test_every_test_has_a_timeout(request):
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None and marker.args[0] > 0 and marker.kwargs.get("method") == "signal", marker


def test_a_playbook_that_outlives_its_timeout_fails_with_its_output(monkeypatch, tmp_path):
    from harness import ansible_runner
    monkeypatch.setattr(ansible_runner, "collections_path", lambda: str(tmp_path))
    runner = ansible_runner.Ansible("python3")
    with pytest.raises(AssertionError) as info:
        runner._run(["sh", "-c", "echo TASK [slow one]; echo warned >&2; exec sleep 60"], timeout=2)  # pylint: disable=protected-access
    text = str(info.value)
    assert "after 2s" in text and "TASK [slow one]" in text and "warned" in text, text
