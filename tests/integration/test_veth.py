# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""veth module: real pairs, namespaces and bridges, checked with iproute2.

Several module runs share one playbook where that proves the same thing
(each ansible start costs more than the work itself).
"""

import pytest

from harness import net
from harness.net import ip, play, task

PREFIX = "kbtv"


@pytest.fixture(autouse=True)
def clean_network():
    yield
    net.remove_test_objects(PREFIX)


def make_netns(*names):
    for name in names:
        ip("netns", "add", name)
        ip("link", "set", "lo", "up", netns=name)


def full_spec(ns, bridge):
    return {"name": PREFIX + "-h0", "peer": PREFIX + "-p0", "netns": ns, "peer_name": "eth0",
            "addresses": ["10.61.1.1/24"], "peer_addresses": ["10.61.0.2/24", "fd61::2/64"],
            "gateway": ["10.61.0.1", "fd61::1"], "mtu": 1400, "bridge": bridge}


def test_lifecycle_with_the_peer_in_a_netns(any_ansible):
    ns, bridge, host = PREFIX + "-web", PREFIX + "-br", PREFIX + "-h0"
    make_netns(ns)
    ip("link", "add", bridge, "type", "bridge")
    spec = full_spec(ns, bridge)
    # the same request written another way: addresses and gateways normalise to the same set
    respelled = dict(spec, peer_addresses=["fd61:0:0::2/64", " 10.61.0.2/24", "10.61.0.2/24"],
                     gateway=["FD61::1", "10.61.0.1"])
    run = any_ansible.playbook(play(task("create", "veth", spec), task("again", "veth", respelled)))
    assert run.rc == 0, run.stdout + run.stderr
    created, again = run.named("create"), run.named("again")
    assert created.changed and created.actions[0] == "create veth pair %s <-> eth0 in netns %s (absent)" % (host, ns)
    assert not again.changed and again.actions == [], again.actions

    # the kernel, through ip: the host end is a veth on the bridge whose peer lives in the netns
    host_link = net.link(host)
    assert host_link["linkinfo"]["info_kind"] == "veth" and host_link["master"] == bridge
    assert host_link["mtu"] == 1400 and "UP" in host_link["flags"]
    assert "link-netns %s" % ns in ip("-d", "link", "show", host).stdout
    assert [a for a in net.addresses(host) if not a.startswith("fe80")] == ["10.61.1.1/24"]
    peer_link = net.link("eth0", ns)
    assert peer_link["linkinfo"]["info_kind"] == "veth" and peer_link["mtu"] == 1400 and "UP" in peer_link["flags"]
    assert {"10.61.0.2/24", "fd61::2/64"} <= set(net.addresses("eth0", ns))
    assert net.default_routes(ns) == [("-4", "10.61.0.1", "eth0"), ("-6", "fd61::1", "eth0")]
    assert PREFIX + "-p0" not in net.link_names() and PREFIX + "-p0" not in net.link_names(ns)
    # what the module returns matches
    assert created["ifindex"] == host_link["ifindex"] and created["peer_ifindex"] == peer_link["ifindex"]
    assert created["peer_addresses"] == ["10.61.0.2/24", "fd61::2/64"] and created["bridge"] == bridge

    gone = any_ansible.playbook(play(task("remove", "veth", dict(spec, state="absent")),
                                     task("remove again", "veth", dict(spec, state="absent"))))
    assert gone.named("remove").actions == ["delete veth pair %s <-> eth0 (state=absent)" % host]
    assert not gone.named("remove again").changed and gone.named("remove again")["exists"] is False
    assert net.link(host) is None and net.link_names(ns) == ["lo"]


def test_check_mode_diff_and_changes_in_place(ansible, host_state):
    ns, bridge, host = PREFIX + "-chk", PREFIX + "-brc", PREFIX + "-h0"
    make_netns(ns)
    ip("link", "add", bridge, "type", "bridge")
    spec = full_spec(ns, bridge)
    before = host_state()
    missing = dict(spec, name=PREFIX + "-m0", netns=PREFIX + "-later", bridge=PREFIX + "-brlater")
    run = ansible.playbook(play(task("plan", "veth", spec), task("later", "veth", missing)), check=True, diff=True)
    planned, later = run.named("plan"), run.named("later")
    assert planned.changed and planned.actions[0].startswith("create veth pair"), planned.result
    # in check mode a netns or bridge an earlier task would make is assumed, with a warning
    assert later.changed and not later.failed, later.msg
    assert len([w for w in later.get("warnings", []) if "check mode assumes an earlier task creates it" in w]) == 2
    assert planned.diff["before"] == {}
    after = planned.diff["after"]
    assert after["peer"] == "eth0" and after["netns"] == ns and after["peer_addresses"] == spec["peer_addresses"]
    assert host_state() == before

    assert ansible.module("veth", spec).changed
    # things made by others on the peer: a stray address (to be removed) and a link-local one (never counted)
    ip("addr", "add", "10.61.0.99/24", "dev", "eth0", netns=ns)
    ip("addr", "add", "fe80::99/64", "dev", "eth0", netns=ns)
    changed = dict(spec, mtu=9000, bridge="", peer_addresses=["10.61.0.3/24"], gateway=["10.61.0.254"],
                   addresses=[])
    net.wait_for_dad()
    before = host_state()
    run = ansible.playbook(play(task("modify", "veth", changed), task("remove", "veth", dict(spec, state="absent"))),
                           check=True, diff=True)
    modify, remove = run.named("modify"), run.named("remove")
    assert modify.changed and remove.changed and host_state() == before
    diff = modify.diff
    assert diff["before"]["mtu"] == 1400 and diff["after"]["mtu"] == 9000
    assert diff["before"]["peer_addresses"] == ["10.61.0.2/24", "10.61.0.99/24", "fd61::2/64"]
    assert diff["after"]["peer_addresses"] == ["10.61.0.3/24"]
    assert diff["before"]["bridge"] == bridge and diff["after"]["bridge"] is None
    assert "remove address 10.61.0.99/24 from eth0 in netns %s (not listed)" % ns in modify.actions
    assert remove.actions == ["delete veth pair %s <-> eth0 (state=absent)" % host]
    assert remove.diff["after"] == {}

    run = ansible.playbook(play(task("modify", "veth", changed), task("again", "veth", changed)))
    assert run.rc == 0, [t.msg for t in run.tasks]
    assert run.named("modify").changed and not run.named("again").changed, run.named("again").actions
    assert "master" not in net.link(host) and net.link(host)["mtu"] == 9000 and net.link("eth0", ns)["mtu"] == 9000
    peer_addresses = net.addresses("eth0", ns)
    assert "10.61.0.3/24" in peer_addresses and "fe80::99/64" in peer_addresses
    assert not {"10.61.0.2/24", "10.61.0.99/24", "fd61::2/64"} & set(peer_addresses)
    assert [a for a in net.addresses(host) if not a.startswith("fe80")] == []
    assert net.default_routes(ns) == [("-4", "10.61.0.254", "eth0")]


BAD_INPUTS = [
    ({"name": "kbtv-sixteen-byt"}, "is 16 bytes; the kernel allows at most 15"),
    ({"name": "é" * 15}, "is 30 bytes; the kernel allows at most 15"),  # 15 characters, 30 bytes
    ({"name": "kbtv/x"}, "contains '/'"),
    ({"peer": "kbtv:x"}, "contains ':'"),
    ({"peer_name": "eth 0"}, "contains ' '"),
    ({"name": "."}, "'.' is not a valid interface name"),
    ({"peer": ".."}, "'..' is not a valid interface name"),
    ({"addresses": ["10.61.0.1"]}, "must be an address with a prefix length"),
    ({"peer_addresses": ["10.61.0.256/24"]}, "is not a valid IPv4 or IPv6 address/prefix"),
    ({"peer_addresses": ["fd61::2/129"]}, "is not a valid IPv4 or IPv6 address/prefix"),
    ({"mtu": 67}, "mtu: 67 is outside 68..65535"),
    ({"mtu": "big"}, "mtu"),
    ({"gateway": ["10.9.9.1"], "peer_addresses": ["10.61.0.2/24"]}, "10.9.9.1 is not in the network"),
    ({"netns": PREFIX + "-nope"}, "netns %s-nope does not exist; create it first" % PREFIX),
    ({"bridge": PREFIX + "-nobr"}, "bridge %s-nobr does not exist" % PREFIX),
]


def test_bad_input_fails_clearly_and_creates_nothing(ansible, host_state):
    ns = PREFIX + "-bad"
    make_netns(ns)
    base = {"name": PREFIX + "-b0", "peer": PREFIX + "-b1", "netns": ns, "peer_name": "eth0"}
    tasks = [task("bad %d" % i, "veth", dict(base, **args), ignore_errors=True)
             for i, (args, _fragment) in enumerate(BAD_INPUTS)]
    before = host_state()
    run = ansible.playbook(play(*tasks))
    for i, (args, fragment) in enumerate(BAD_INPUTS):
        result = run.named("bad %d" % i)
        assert result.failed and not result.changed and fragment in result.msg, (args, result.msg)
    assert host_state() == before


def test_refuses_to_take_over_other_interfaces(ansible, host_state):
    one, two = PREFIX + "-n1", PREFIX + "-n2"
    make_netns(one, two)
    ip("link", "add", PREFIX + "-br0", "type", "bridge")
    ip("link", "add", PREFIX + "-a0", "type", "veth", "peer", "name", PREFIX + "-a1")
    ip("link", "add", PREFIX + "-c0", "type", "veth", "peer", "name", "eth0", "netns", one)
    ip("link", "add", "eth0", "type", "bridge", netns=two)
    cases = [
        ({"name": PREFIX + "-br0", "peer": PREFIX + "-x1"}, "is a bridge, not a veth; refusing to take it over"),
        ({"name": PREFIX + "-br0", "peer": PREFIX + "-x1", "state": "absent"}, "is a bridge, not a veth"),
        ({"name": PREFIX + "-a0", "peer": PREFIX + "-x1"},
         "with peer %s-a1 on this host, not %s-x1" % (PREFIX, PREFIX)),
        ({"name": PREFIX + "-c0", "peer": PREFIX + "-c1", "netns": two, "peer_name": "eth0"},
         "its peer lives in another network namespace"),
        ({"name": PREFIX + "-c0", "peer": PREFIX + "-c1", "netns": one, "peer_name": "eth1"},
         "with peer eth0 in netns %s, not eth1" % one),
        ({"name": PREFIX + "-c0", "peer": PREFIX + "-c1", "state": "absent"}, "not in this host"),
        ({"name": PREFIX + "-d0", "peer": PREFIX + "-d1", "netns": two, "peer_name": "eth0"},
         "netns %s already has an interface named eth0 (a bridge)" % two),
        ({"name": PREFIX + "-e0", "peer": PREFIX + "-e1", "netns": one, "peer_name": "eth0"},
         "netns %s already has a veth named eth0 that belongs to another pair (its other end is %s-c0 on this "
         "host)" % (one, PREFIX)),
    ]
    # absent for a pair that does not exist leaves alone what sits under its names
    leave_alone = [dict(cases[-1][0], state="absent"), dict(cases[-2][0], state="absent"),
                   {"name": PREFIX + "-x0", "peer": PREFIX + "-a1", "state": "absent"}]
    before = host_state()
    run = ansible.playbook(play(*[task("case %d" % i, "veth", args, ignore_errors=True)
                                  for i, (args, _fragment) in enumerate(cases)]
                                + [task("leave %d" % i, "veth", args) for i, args in enumerate(leave_alone)]))
    for i, (args, fragment) in enumerate(cases):
        result = run.named("case %d" % i)
        assert result.failed and not result.changed and fragment in result.msg, (args, result.msg)
    for i, args in enumerate(leave_alone):
        result = run.named("leave %d" % i)
        assert not result.failed and not result.changed, (args, result.msg, result.actions)
    assert host_state() == before


def test_finds_pairs_made_by_ip(ansible):
    ns = PREFIX + "-ip"
    make_netns(ns)
    ip("link", "add", PREFIX + "-i0", "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "set", PREFIX + "-i0", "up")
    ip("link", "set", "eth0", "up", netns=ns)
    ip("addr", "add", "10.62.0.2/24", "dev", "eth0", netns=ns)
    ip("route", "add", "default", "via", "10.62.0.1", netns=ns)
    ip("link", "add", PREFIX + "-j0", "type", "veth", "peer", "name", PREFIX + "-j1")
    ip("link", "set", PREFIX + "-j0", "up")
    ip("link", "set", PREFIX + "-j1", "up")
    run = ansible.playbook(play(
        task("in netns", "veth", {"name": PREFIX + "-i0", "peer": PREFIX + "-i1", "netns": ns, "peer_name": "eth0",
                                  "peer_addresses": ["10.62.0.2/24"], "gateway": ["10.62.0.1"]}),
        task("on host", "veth", {"name": PREFIX + "-j0", "peer": PREFIX + "-j1"})))
    assert run.rc == 0 and run.changed_tasks == [], [(t.task, t.actions, t.msg) for t in run.tasks]
    assert run.named("in netns")["peer_ifindex"] == net.link("eth0", ns)["ifindex"]


def test_repairs_an_interrupted_creation(ansible):
    """Half-made states an interrupted script leaves: the peer never moved, or moved but never renamed."""
    moved, unmoved = PREFIX + "-s", PREFIX + "-r"
    make_netns(moved, unmoved)
    ip("link", "add", PREFIX + "-r0", "type", "veth", "peer", "name", PREFIX + "-r1")
    ip("addr", "add", "10.64.0.9/24", "dev", PREFIX + "-r1")  # flushed by the move
    ip("link", "add", PREFIX + "-s0", "type", "veth", "peer", "name", PREFIX + "-s1", "netns", moved)
    unmoved_spec = {"name": PREFIX + "-r0", "peer": PREFIX + "-r1", "netns": unmoved, "peer_name": "eth0",
                    "peer_addresses": ["10.64.0.2/24"]}
    moved_spec = {"name": PREFIX + "-s0", "peer": PREFIX + "-s1", "netns": moved, "peer_name": "eth0"}
    run = ansible.playbook(play(task("unmoved", "veth", unmoved_spec), task("moved", "veth", moved_spec),
                                task("unmoved again", "veth", unmoved_spec), task("moved again", "veth", moved_spec)))
    assert run.rc == 0, run.stdout
    assert run.named("unmoved").actions[0] == (
        "move peer %s-r1 into netns %s as eth0 (the peer is still on this host: an earlier run was interrupted)"
        % (PREFIX, unmoved))
    assert run.named("moved").actions[0] == (
        "rename peer %s-s1 to eth0 in netns %s (an earlier run was interrupted after moving it)" % (PREFIX, moved))
    assert run.changed_tasks == ["unmoved", "moved"]
    assert PREFIX + "-r1" not in net.link_names()
    assert net.kind("eth0", unmoved) == "veth" and net.is_up("eth0", unmoved)
    assert [a for a in net.addresses("eth0", unmoved) if not a.startswith("fe80")] == ["10.64.0.2/24"]
    assert net.link_names(moved) == ["eth0", "lo"] and net.is_up("eth0", moved)


def test_absent_when_only_the_peer_is_left(ansible):
    ns, elsewhere = PREFIX + "-o", PREFIX + "-else"
    make_netns(ns, elsewhere)
    ip("link", "add", PREFIX + "-o0", "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "set", PREFIX + "-o0", "netns", elsewhere)  # the host end moves away
    spec = {"name": PREFIX + "-o0", "peer": PREFIX + "-o1", "netns": ns, "peer_name": "eth0"}
    run = ansible.playbook(play(task("present refuses", "veth", spec, ignore_errors=True),
                                task("remove", "veth", dict(spec, state="absent")),
                                task("remove again", "veth", dict(spec, state="absent"))))
    assert "already has a veth named eth0, but its other end is not %s-o0" % PREFIX in run.named("present refuses").msg
    assert run.named("remove").actions == [
        "delete veth eth0 in netns %s (state=absent; its host end %s-o0 is gone)" % (ns, PREFIX)]
    assert not run.named("remove again").changed
    assert net.link_names(ns) == ["lo"] and net.link_names(elsewhere) == ["lo"]  # deleting one end deletes both


def test_absent_by_name_alone(ansible):
    """state=absent needs only the host end's name: the pair goes with whatever peer it has; a non-veth of that
    name stays; check mode only predicts; a peer left alone in a netns is found by netns and peer_name."""
    ns, alone_ns, elsewhere = PREFIX + "-n", PREFIX + "-a", PREFIX + "-e"
    make_netns(ns, alone_ns, elsewhere)
    ip("link", "add", PREFIX + "-n0", "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "add", PREFIX + "-l0", "type", "veth", "peer", "name", PREFIX + "-l1")
    ip("link", "add", PREFIX + "-nb", "type", "bridge")
    ip("link", "add", PREFIX + "-o0", "type", "veth", "peer", "name", "eth1", "netns", alone_ns)
    ip("link", "set", PREFIX + "-o0", "netns", elsewhere)
    by_name = {"name": PREFIX + "-n0", "state": "absent"}
    run = ansible.playbook(play(
        task("check", "veth", by_name, check_mode=True),
        task("remove", "veth", by_name),
        task("again", "veth", by_name),
        task("on host", "veth", {"name": PREFIX + "-l0", "state": "absent"}),
        task("a bridge", "veth", {"name": PREFIX + "-nb", "state": "absent"}, ignore_errors=True),
        task("peer alone", "veth", {"name": PREFIX + "-o0", "netns": alone_ns, "peer_name": "eth1",
                                    "state": "absent"}),
        task("present needs peer", "veth", {"name": PREFIX + "-z0"}, ignore_errors=True)))
    assert run.named("check").changed and run.named("check")["exists"] is True
    assert run.named("check").actions == ["delete veth pair %s-n0 <-> its peer in network namespace nsid %s "
                                          "(state=absent)" % (PREFIX, run.named("check").actions[0].split()[-2])]
    assert run.named("remove").changed and run.named("remove").actions == run.named("check").actions
    assert not run.named("again").changed and run.named("again")["exists"] is False
    assert run.named("on host").actions == ["delete veth pair %s-l0 <-> %s-l1 (state=absent)" % (PREFIX, PREFIX)]
    refused = run.named("a bridge")
    assert refused.failed and not refused.changed and "is a bridge, not a veth; refusing to delete it" in refused.msg
    assert run.named("peer alone").actions == [
        "delete veth eth1 in netns %s (state=absent; its host end %s-o0 is gone)" % (alone_ns, PREFIX)]
    assert "peer" in run.named("present needs peer").msg and run.named("present needs peer").failed
    assert net.link(PREFIX + "-n0") is None and net.link_names(ns) == ["lo"]
    assert net.link(PREFIX + "-l0") is None and net.link(PREFIX + "-l1") is None
    assert net.link(PREFIX + "-nb") is not None and net.link_names(alone_ns) == ["lo"]


def test_ping_across_a_bridge(ansible_distro):
    """Two namespaces on one bridge, made by the modules (Debian's Python): packets flow both ways."""
    bridge = PREFIX + "-pbr"
    tasks = [task("bridge", "bridge", {"name": bridge, "addresses": ["10.63.0.1/24"]})]
    for side, last in (("a", 2), ("b", 3)):
        ns = "%s-p%s" % (PREFIX, side)
        tasks += [task("netns " + side, "netns", {"name": ns}),
                  task("veth " + side, "veth", {"name": "%s-p%s0" % (PREFIX, side), "peer": "%s-p%s1" % (PREFIX, side),
                                                "netns": ns, "peer_name": "eth0", "bridge": bridge,
                                                "peer_addresses": ["10.63.0.%d/24" % last], "gateway": ["10.63.0.1"]})]
    run = ansible_distro.playbook(play(*tasks))
    assert run.rc == 0 and not run.failed_tasks, run.stdout
    for source, target in (("a", "10.63.0.3"), ("b", "10.63.0.2"), ("a", "10.63.0.1")):
        ping = ip("netns", "exec", "%s-p%s" % (PREFIX, source), "busybox", "ping", "-c1", "-W3", target, check=False)
        assert ping.returncode == 0 and "1 packets received" in ping.stdout, ping.stdout + ping.stderr
    ip("link", "delete", bridge)
