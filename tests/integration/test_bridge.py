# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""bridge module: real bridges, checked with iproute2."""

import pytest

from harness import net
from harness.net import ip, play, task

PREFIX = "kbtb"


@pytest.fixture(autouse=True)
def clean_network():
    yield
    net.remove_test_objects(PREFIX)


def test_lifecycle(any_ansible):
    name = PREFIX + "-life"
    spec = {"name": name, "addresses": ["10.71.0.1/24", "fd71::1/64"], "mtu": 1500}
    respelled = dict(spec, addresses=["fd71:0::1/64", "10.71.0.1/24"])
    run = any_ansible.playbook(play(task("create", "bridge", spec), task("again", "bridge", respelled)))
    assert run.rc == 0, run.stdout
    assert run.named("create").actions == [
        "create bridge %s (absent)" % name, "set mtu 1500 on bridge %s (new bridge)" % name,
        "bring up bridge %s (new bridge)" % name, "add address 10.71.0.1/24 to bridge %s (new bridge)" % name,
        "add address fd71::1/64 to bridge %s (new bridge)" % name]
    assert not run.named("again").changed and run.named("again").actions == []
    link = net.link(name)
    assert link["linkinfo"]["info_kind"] == "bridge" and "UP" in link["flags"] and link["mtu"] == 1500
    assert {"10.71.0.1/24", "fd71::1/64"} <= set(net.addresses(name))
    assert run.named("create")["ifindex"] == link["ifindex"]
    gone = any_ansible.playbook(play(task("remove", "bridge", {"name": name, "state": "absent"}),
                                     task("remove again", "bridge", {"name": name, "state": "absent"})))
    assert gone.named("remove").actions == ["delete bridge %s (state=absent)" % name]
    assert not gone.named("remove again").changed and gone.named("remove again")["exists"] is False
    assert net.link(name) is None


def test_mtu_stays_as_set_while_ports_come_and_go(ansible):
    """The kernel moves a bridge's MTU to its smallest port unless it was set explicitly."""
    pinned, follower = PREFIX + "-pin", PREFIX + "-fol"
    tasks = [task("pinned", "bridge", {"name": pinned, "mtu": 1500}),
             task("follower", "bridge", {"name": follower}),
             task("port on pinned", "veth", {"name": PREFIX + "-p0", "peer": PREFIX + "-p1", "mtu": 9000,
                                             "bridge": pinned}),
             task("port on follower", "veth", {"name": PREFIX + "-f0", "peer": PREFIX + "-f1", "mtu": 9000,
                                               "bridge": follower})]
    first = ansible.playbook(play(*tasks))
    assert first.rc == 0 and len(first.changed_tasks) == 4, first.stdout
    assert net.link(pinned)["mtu"] == 1500  # kept, although its only port has 9000
    assert net.link(follower)["mtu"] == 9000  # followed its port: mtu was not asked for
    second = ansible.playbook(play(*tasks))
    assert second.changed_tasks == [], [(t.task, t.actions) for t in second.tasks]
    assert second.named("pinned")["ports"] == [PREFIX + "-p0"]


def test_check_mode_and_diff(ansible, host_state):
    name = PREFIX + "-chk"
    spec = {"name": name, "addresses": ["10.72.0.1/24"], "mtu": 1400}
    before = host_state()
    planned = ansible.module("bridge", spec, check=True, diff=True)
    assert planned.changed and planned.actions[0] == "create bridge %s (absent)" % name
    assert planned.diff["before"] == {} and planned.diff["after"]["mtu"] == 1400
    assert host_state() == before

    assert ansible.module("bridge", spec).changed
    net.wait_for_dad()
    before = host_state()
    run = ansible.playbook(play(task("modify", "bridge", dict(spec, mtu=1300, addresses=["10.72.0.2/24"])),
                                task("remove", "bridge", {"name": name, "state": "absent"})), check=True, diff=True)
    modify, remove = run.named("modify"), run.named("remove")
    assert modify.changed and modify.actions == [
        "set mtu 1300 on bridge %s (was 1400)" % name, "remove address 10.72.0.1/24 from bridge %s (not listed)" % name,
        "add address 10.72.0.2/24 to bridge %s (missing)" % name]
    assert modify.diff["before"]["mtu"] == 1400 and modify.diff["after"]["addresses"] == ["10.72.0.2/24"]
    assert remove.changed and remove.diff["after"] == {}
    assert host_state() == before


def test_bad_input_and_other_interfaces_are_refused(ansible, host_state):
    ip("link", "add", PREFIX + "-v0", "type", "veth", "peer", "name", PREFIX + "-v1")
    cases = [
        ({"name": PREFIX + "-sixteen-byt"}, "is 16 bytes; the kernel allows at most 15"),
        ({"name": "ü" * 15}, "is 30 bytes"),
        ({"name": "kbtb/x"}, "contains '/'"),
        ({"name": "kbtb:x"}, "contains ':'"),
        ({"name": "kbtb x"}, "contains ' '"),
        ({"name": ".."}, "not a valid interface name"),
        ({"name": PREFIX + "-x", "addresses": ["10.0.0.1/24/1"]}, "is not a valid IPv4 or IPv6"),
        ({"name": PREFIX + "-x", "mtu": 70000}, "mtu: 70000 is outside 68..65535"),
        ({"name": PREFIX + "-v0"}, "is a veth, not a bridge; refusing to take it over"),
        ({"name": PREFIX + "-v0", "state": "absent"}, "is a veth, not a bridge"),
    ]
    before = host_state()
    run = ansible.playbook(play(*[task("case %d" % i, "bridge", args, ignore_errors=True)
                                  for i, (args, _fragment) in enumerate(cases)]))
    for i, (args, fragment) in enumerate(cases):
        result = run.named("case %d" % i)
        assert result.failed and not result.changed and fragment in result.msg, (args, result.msg)
    assert host_state() == before


def test_bridges_made_by_ip_are_managed(ansible):
    name, port = PREFIX + "-ip", PREFIX + "-q0"
    ip("link", "add", name, "type", "bridge")
    ip("link", "set", name, "up")
    ip("addr", "add", "10.73.0.1/24", "dev", name)
    ip("link", "add", port, "type", "veth", "peer", "name", PREFIX + "-q1")
    ip("link", "set", port, "master", name)
    run = ansible.playbook(play(task("found", "bridge", {"name": name, "addresses": ["10.73.0.1/24"]}),
                                task("remove", "bridge", {"name": name, "state": "absent"})))
    found, remove = run.named("found"), run.named("remove")
    assert not found.changed and found["ports"] == [port], found.result
    assert remove.changed and any("had ports %s" % port in w for w in remove.get("warnings", [])), remove.result
    assert net.link(name) is None
    assert net.kind(port) == "veth" and "master" not in net.link(port)  # detached, not deleted
