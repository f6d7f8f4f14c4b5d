# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/demo.yml and teardown.yml, exactly as `make demo` runs them, inside the sandbox."""

import os

import pytest

from harness import net
from harness.ansible_runner import REPO

PREFIX = "kbtd"  # the demo's names, moved under the test prefix
PLAYBOOKS = os.path.join(REPO, "playbooks")
INVENTORY = os.path.join(PLAYBOOKS, "inventory.ini")
PING_TASK = "Prove it - each namespace pings the next one across the bridge"


@pytest.fixture(autouse=True)
def clean_network():
    yield
    net.remove_test_objects(PREFIX)


def run(ansible, playbook):
    # The containers' cgroups go below the test run's parent group (the host's kernelbox group stays untouched).
    result = ansible.playbook(os.path.join(PLAYBOOKS, playbook),
                              extra_vars={"kbdemo_prefix": PREFIX, "kbdemo_cgroup_parent": os.environ["KB_TEST_CGROUP_PARENT"]},
                              inventory=INVENTORY)
    assert result.rc == 0 and not result.failed_tasks, result.stdout + result.stderr
    return result


def test_demo_converges_proves_a_ping_and_tears_down(ansible, cgroup_test_parent):
    first = run(ansible, "demo.yml")
    for task in ("The bridge, with the namespaces' gateway address", "The network namespaces",
                 "A veth pair per namespace, eth0 inside, the host end on the bridge", "Pull or unpack the image layers",
                 "Mount the root filesystem under a private writable layer", "The container process"):
        assert [name for name in first.changed_tasks if name.endswith(task)], (task, first.changed_tasks)
    started = [task for task in first.tasks if task.task.endswith("The container process")]
    assert len(started) == 2 and all(task["running"] and task["pid"] > 0 for task in started), started
    page = "hello from " + PREFIX
    assert first.named("Prove it - the client container fetches the web container's page across the bridge")[
        "stdout"] == page
    assert first.named("Prove it - a plain namespace fetches the same page")["stdout"] == page
    table = str(first.named("Containers")["msg"])
    assert PREFIX + "-web" in table and PREFIX + "-client" in table
    pings = first.named(PING_TASK)["results"]
    assert len(pings) == 2 and all("1 packets received" in ping["stdout"] for ping in pings), pings
    for side, address in (("a", "10.254.77.2/24"), ("b", "10.254.77.3/24")):
        assert address in net.addresses("eth0", "%s-%s" % (PREFIX, side))
        assert net.link("%s-%s0" % (PREFIX, side))["master"] == PREFIX + "-br0"

    second = run(ansible, "demo.yml")
    assert second.changed_tasks == [], [(t.task, t.actions) for t in second.tasks if t.changed]
    assert all("1 packets received" in ping["stdout"] for ping in second.named(PING_TASK)["results"])

    run(ansible, "teardown.yml")
    assert not os.path.exists("/var/lib/%s" % PREFIX)
    assert not [n for n in net.link_names() if n.startswith(PREFIX)]
    assert not [n for n in net.netns_names() if n.startswith(PREFIX)]
    again = run(ansible, "teardown.yml")
    assert again.changed_tasks == []
