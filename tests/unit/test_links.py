# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure decisions of the links library: address sets, default routes, and whose veth a veth is."""
import socket

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import links
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.netlink import Link


@pytest.mark.parametrize("current, wanted, to_add, to_remove", [
    ([], ["10.0.0.1/24"], ["10.0.0.1/24"], []),
    (["10.0.0.1/24"], ["10.0.0.1/24"], [], []),
    (["10.0.0.1/24", "10.0.0.9/24"], ["10.0.0.1/24"], [], ["10.0.0.9/24"]),
    (["10.0.0.1/24"], ["10.0.0.1/16"], ["10.0.0.1/16"], ["10.0.0.1/24"]),  # same address, other prefix
    # kernel-made link-local addresses are never counted or removed...
    (["fe80::a8c1:abff:fe12:3456/64", "fd00::2/64"], ["fd00::2/64"], [], []),
    (["fe80::a8c1:abff:fe12:3456/64"], [], [], []),
    # ...but a listed one is managed like any other
    (["fe80::a8c1:abff:fe12:3456/64"], ["fe80::1/64"], ["fe80::1/64"], []),
    (["fe80::1/64", "10.0.0.1/24"], [], [], ["10.0.0.1/24"]),
])
def test_address_changes(current, wanted, to_add, to_remove):
    assert links.address_changes(current, wanted) == (to_add, to_remove)


def test_managed_addresses_hide_link_local_unless_wanted():
    current = ["10.0.0.1/24", "fe80::1/64", "fe80::2/64"]
    assert links.managed_addresses(current) == ["10.0.0.1/24"]
    assert links.managed_addresses(current, ["fe80::2/64"]) == ["10.0.0.1/24", "fe80::2/64"]


@pytest.mark.parametrize("gateway, cidrs, expected", [
    ("10.0.0.1", ["10.0.0.2/24"], True),
    ("10.0.1.1", ["10.0.0.2/24"], False),
    ("10.0.1.1", ["fd00::2/64", "10.0.0.2/16"], True),
    ("fd00::1", ["10.0.0.2/24"], False),
    ("fe80::1", [], True),  # link-local gateways are always on-link
])
def test_gateway_in_networks(gateway, cidrs, expected):
    assert links.gateway_in_networks(gateway, cidrs) is expected


V4, V6 = socket.AF_INET, socket.AF_INET6


@pytest.mark.parametrize("routes, wanted, to_set, to_delete", [
    ([], ["10.0.0.1"], ["10.0.0.1"], []),
    ([links.DefaultRoute(V4, "10.0.0.1", 5)], ["10.0.0.1"], [], []),
    ([links.DefaultRoute(V4, "10.0.0.254", 5)], ["10.0.0.1"], ["10.0.0.1"], [links.DefaultRoute(V4, "10.0.0.254", 5)]),
    # a default route through another interface is replaced, not deleted separately
    ([links.DefaultRoute(V4, "192.168.1.1", 9)], ["10.0.0.1"], ["10.0.0.1"], []),
    ([links.DefaultRoute(V4, "10.0.0.1", 5), links.DefaultRoute(V6, "fd00::1", 5)], ["10.0.0.1"], [],
     [links.DefaultRoute(V6, "fd00::1", 5)]),
    ([links.DefaultRoute(V4, None, 5)], [], [], [links.DefaultRoute(V4, None, 5)]),
])
def test_route_changes(routes, wanted, to_set, to_delete):
    assert links.route_changes(routes, 5, wanted) == (to_set, to_delete)


def test_default_route_description():
    names = {5: "eth0"}
    assert links.DefaultRoute(V4, "10.0.0.1", 5).describe(names) == "via 10.0.0.1 dev eth0"
    assert links.DefaultRoute(V4, None, 7).describe(names) == "dev ifindex 7"


def veth(name, index, peer_index, nsid=None):
    return Link(index=index, name=name, kind="veth", mtu=1500, up=True, mac=None, peer_index=peer_index,
                peer_netnsid=nsid)


SPEC_NS = links.VethSpec("kbv0", "kbv1", "web", "eth0")
SPEC_HOST = links.VethSpec("kbv0", "kbv1")


@pytest.mark.parametrize("spec, host, peer_here, target_nsid, peer_there, position", [
    # both ends here, as asked
    (SPEC_HOST, veth("kbv0", 5, 6), veth("kbv1", 6, 5), None, None, links.IN_PLACE),
    # created but never moved: the next run moves it
    (SPEC_NS, veth("kbv0", 5, 6), veth("kbv1", 6, 5), 3, None, links.ON_HOST),
    # the peer sits in the netns, found by ifindex and nsid (never by name alone)
    (SPEC_NS, veth("kbv0", 5, 2, nsid=3), None, 3, veth("eth0", 2, 5, nsid=0), links.IN_PLACE),
    # moved but never renamed
    (SPEC_NS, veth("kbv0", 5, 2, nsid=3), None, 3, veth("kbv1", 2, 5, nsid=0), links.UNRENAMED),
])
def test_judge_host_end_accepts_this_pair(spec, host, peer_here, target_nsid, peer_there, position):
    assert links.judge_host_end(spec, host, peer_here, target_nsid, peer_there) == position


@pytest.mark.parametrize("spec, host, peer_here, target_nsid, peer_there, fragment", [
    (SPEC_NS, Link(5, "kbv0", "bridge", 1500, True, None), None, None, None, "is a bridge, not a veth"),
    (SPEC_NS, Link(5, "kbv0", None, 1500, True, None), None, None, None, "without a link kind"),
    (SPEC_HOST, veth("kbv0", 5, 6), veth("other", 6, 5), None, None, "with peer other on this host, not kbv1"),
    # the peer is in another namespace than the one asked for
    (SPEC_NS, veth("kbv0", 5, 2, nsid=4), None, 3, None, "lives in another network namespace (nsid 4)"),
    (SPEC_HOST, veth("kbv0", 5, 2, nsid=4), None, None, None, "not in this host"),
    # the asked netns has no id here yet, so the peer cannot be in it
    (SPEC_NS, veth("kbv0", 5, 2, nsid=0), None, None, None, "not in netns web"),
    (SPEC_NS, veth("kbv0", 5, 2, nsid=3), None, 3, veth("eth7", 2, 5), "with peer eth7 in netns web, not eth0"),
])
def test_judge_host_end_refuses_other_interfaces(spec, host, peer_here, target_nsid, peer_there, fragment):
    with pytest.raises(links.LinkConflict) as info:
        links.judge_host_end(spec, host, peer_here, target_nsid, peer_there)
    assert fragment in info.value.msg


@pytest.mark.parametrize("found, ours, position", [
    (veth("eth0", 2, 9, nsid=4), 0, links.ORPHAN),  # its other end went to a third namespace
    (veth("eth0", 2, 9, nsid=0), 0, links.FOREIGN),  # its other end is on this host under another name
    (veth("eth0", 2, 3), 0, links.FOREIGN),  # both ends inside the netns
    (Link(2, "eth0", "bridge", 1500, True, None), 0, links.FOREIGN),
    (veth("kbv1", 6, 9, nsid=1), None, links.ORPHAN),  # without netns: the other end left this host
    (veth("kbv1", 6, 7), None, links.FOREIGN),  # without netns: another pair on this host
])
def test_judge_orphan(found, ours, position):
    assert links.judge_orphan(found, ours) == position


def test_orphan_conflict_messages():
    pair = links.VethPair(None, veth("eth0", 2, 9, nsid=4), "web", links.ORPHAN)
    assert "already has a veth named eth0, but its other end is not kbv0" in links.orphan_conflict(SPEC_NS, pair).msg
    pair = links.VethPair(None, veth("eth0", 2, 9, nsid=0), "web", links.FOREIGN, ["its other end is x0 on this host"])
    assert ("netns web already has a veth named eth0 that belongs to another pair (its other end is x0 on this host)"
            in links.orphan_conflict(SPEC_NS, pair).msg)
    pair.peer = Link(2, "eth0", "bridge", 1500, True, None)
    assert "(a bridge) that is not this pair's peer" in links.orphan_conflict(SPEC_NS, pair).msg


def test_spec_peer_name_defaults_to_peer():
    assert links.VethSpec("a", "b", "ns").peer_name == "b"
    assert links.VethSpec("a", "b", "ns").where() == "netns ns"
    assert links.VethSpec("a", "b").where() == "this host"


@pytest.mark.parametrize("removed, kept, lost", [
    (["10.0.0.1/24"], ["10.0.0.2/24", "10.0.1.2/24"], ["10.0.0.2/24"]),  # same subnet: may be its secondary
    (["10.0.0.1/24"], ["10.0.0.2/16"], []),  # another prefix length is another subnet
    (["fd00::1/64"], ["fd00::2/64"], []),  # IPv6 has no primaries and secondaries
    ([], ["10.0.0.2/24"], []),
])
def test_lost_with(removed, kept, lost):
    assert links.lost_with(removed, kept) == lost
