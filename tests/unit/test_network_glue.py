# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""veth and bridge glue: input validation and planning decisions, on in-memory state (no kernel)."""
import socket

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import bridge as bridge_glue
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import veth as veth_glue
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import links
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.netlink import Link
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


def veth_params(**overrides):
    params = {key: spec.get("default") for key, spec in veth_glue.ARGUMENT_SPEC.items()}
    params.update(name="kbv0", peer="kbv1", netns="web", peer_name="eth0")
    params.update(overrides)
    return params


def veth_resource(**overrides):
    resource = veth_glue.VethResource(veth_params(**overrides))
    resource.validate()
    resource.session = None  # planning never touches the kernel; applying would
    return resource


@pytest.mark.parametrize("overrides, fragment", [
    ({"name": "x" * 16}, "name: interface name"),
    ({"peer_name": "é" * 8}, "peer_name: interface name"),
    ({"netns": "a/b"}, "netns: netns name"),
    ({"netns": None}, "peer_name: only applies with netns"),
    ({"netns": None, "peer_name": None, "peer": "kbv0"}, "peer: 'kbv0' is also the name of the host end"),
    ({"netns": None, "peer_name": None, "gateway": ["10.0.0.1"]}, "gateway: only applies with netns"),
    ({"addresses": ["10.0.0.1"]}, "addresses: '10.0.0.1' must be an address with a prefix length"),
    ({"peer_addresses": ["10.0.0.300/24"]}, "peer_addresses: '10.0.0.300/24' is not a valid"),
    ({"mtu": 67}, "mtu: 67 is outside 68..65535"),
    ({"mtu": 65536}, "mtu: 65536 is outside 68..65535"),
    ({"bridge": "a b"}, "bridge: interface name"),
    ({"bridge": "kbv0"}, "bridge: 'kbv0' is one end of this pair"),
    ({"gateway": ["10.0.0.1", "10.0.0.2"]}, "give at most one IPv4 and one IPv6 gateway"),
    ({"gateway": ["not-an-ip"]}, "gateway: 'not-an-ip' is not a valid"),
    ({"gateway": ["10.9.0.1"], "peer_addresses": ["10.0.0.2/24"]}, "10.9.0.1 is not in the network of any"),
])
def test_veth_validation(overrides, fragment):
    with pytest.raises(ValidationError) as info:
        veth_glue.VethResource(veth_params(**overrides)).validate()
    assert fragment in str(info.value)


def test_veth_validation_normalises():
    resource = veth_resource(peer_addresses=["fd00:0::2/64", "10.0.0.2/24", "10.0.0.2/24"],
                             gateway=["fd00::1", "10.0.0.1"], bridge="")
    assert resource.peer_addresses == ["10.0.0.2/24", "fd00::2/64"]
    assert resource.gateway == ["10.0.0.1", "fd00::1"]
    assert resource.bridge is None  # '' detaches


def test_veth_plan_for_a_new_pair_creates_in_the_netns():
    resource = veth_resource(peer_addresses=["10.0.0.2/24"], gateway=["10.0.0.1"], bridge="br0", mtu=1400)
    resource.pair = None
    desired = resource.desired(None)
    assert desired == {"name": "kbv0", "peer": "eth0", "netns": "web", "mtu": 1400, "up": True, "bridge": "br0",
                       "peer_mtu": 1400, "peer_up": True, "peer_addresses": ["10.0.0.2/24"],
                       "gateway": ["10.0.0.1"]}
    assert [s.description for s in resource.plan(None, desired)] == [
        "create veth pair kbv0 <-> eth0 in netns web (absent)",  # mtu goes into the creating message
        "attach kbv0 to bridge br0 (not attached)",
        "bring up kbv0 (new pair)",
        "bring up eth0 in netns web (new pair)",
        "add address 10.0.0.2/24 to eth0 in netns web (new pair)",
        "set default route via 10.0.0.1 dev eth0 in netns web (no default route via eth0)",
    ]


def current_state(**overrides):
    state = {"name": "kbv0", "peer": "eth0", "netns": "web", "mtu": 1500, "up": True, "bridge": None,
             "addresses": [], "peer_mtu": 1500, "peer_up": True, "peer_addresses": ["10.0.0.2/24"],
             "gateway": ["10.0.0.1"]}
    state.update(overrides)
    return state


def pair(position, peer_name="eth0", peer_netns="web"):
    host = Link(5, "kbv0", "veth", 1500, True, None, peer_index=2, peer_netnsid=0)
    return links.VethPair(host, Link(2, peer_name, "veth", 1500, True, None, peer_index=5), peer_netns, position)


def test_veth_converged_pair_plans_nothing():
    resource = veth_resource(peer_addresses=["10.0.0.2/24"], gateway=["10.0.0.1"])
    resource.pair = pair(links.IN_PLACE)
    resource.routes = [links.DefaultRoute(socket.AF_INET, "10.0.0.1", 2)]
    current = current_state()
    assert resource.plan(current, resource.desired(current)) == []


def test_veth_repairs_a_peer_that_was_never_moved():
    resource = veth_resource(peer_addresses=["10.0.0.2/24"], gateway=["10.0.0.1"])
    resource.pair = pair(links.ON_HOST, peer_name="kbv1", peer_netns=None)
    current = current_state(peer="kbv1", netns=None, peer_up=False, peer_addresses=["10.0.0.2/24"])
    del current["gateway"]
    actions = [s.description for s in resource.plan(current, resource.desired(current))]
    # moving flushes the peer's addresses, so they are added again even though they were there
    assert actions == [
        "move peer kbv1 into netns web as eth0 (the peer is still on this host: an earlier run was interrupted)",
        "bring up eth0 in netns web (moved)",
        "add address 10.0.0.2/24 to eth0 in netns web (new pair)",
        "set default route via 10.0.0.1 dev eth0 in netns web (no default route via eth0)",
    ]


def test_veth_renames_a_peer_moved_but_not_renamed():
    resource = veth_resource()
    resource.pair = pair(links.UNRENAMED, peer_name="kbv1")
    current = current_state(peer="kbv1")
    actions = [s.description for s in resource.plan(current, resource.desired(current))]
    assert actions == ["rename peer kbv1 to eth0 in netns web (an earlier run was interrupted after moving it)"]


def test_veth_changes_in_place():
    resource = veth_resource(mtu=9000, addresses=["10.1.0.1/24"], peer_addresses=["10.0.0.3/24"], bridge="",
                             gateway=["10.0.0.254"])
    resource.pair = pair(links.IN_PLACE)
    resource.routes = [links.DefaultRoute(socket.AF_INET, "10.0.0.1", 2)]
    current = current_state(bridge="br0", up=False, addresses=["10.1.0.9/24"])
    desired = resource.desired(current)
    assert [s.description for s in resource.plan(current, desired)] == [
        "set mtu 9000 on kbv0 (was 1500)",
        "set mtu 9000 on eth0 in netns web (was 1500)",
        "detach kbv0 from bridge br0 (bridge='')",
        "bring up kbv0 (down)",
        "remove address 10.1.0.9/24 from kbv0 (not listed)",
        "add address 10.1.0.1/24 to kbv0 (missing)",
        "remove address 10.0.0.2/24 from eth0 in netns web (not listed)",
        "add address 10.0.0.3/24 to eth0 in netns web (missing)",
        "delete default route via 10.0.0.1 dev eth0 in netns web (not in gateway)",
        "set default route via 10.0.0.254 dev eth0 in netns web (no default route via eth0)",
    ]


def test_a_new_peer_address_keeps_the_default_route_the_old_one_takes_with_it():
    # The kernel flushes a device's IPv4 routes when its last IPv4 address goes (the container module's ip change).
    resource = veth_resource(peer_addresses=["10.0.0.3/24"], gateway=["10.0.0.1"])
    resource.pair = pair(links.IN_PLACE)
    resource.routes = [links.DefaultRoute(socket.AF_INET, "10.0.0.1", 2)]
    current = current_state()
    steps = [s.description for s in resource.plan(current, resource.desired(current))]
    assert steps[-3:] == [
        "remove address 10.0.0.2/24 from eth0 in netns web (not listed)",
        "add address 10.0.0.3/24 to eth0 in netns web (missing)",
        "set default route via 10.0.0.1 dev eth0 in netns web (the kernel may drop it with address 10.0.0.2/24)",
    ], steps


def test_veth_unmanaged_options_keep_current_values():
    resource = veth_resource()
    resource.pair = pair(links.IN_PLACE)
    current = current_state(bridge="br0", mtu=9000, peer_mtu=9000)
    assert resource.desired(current) == current
    assert resource.plan(current, resource.desired(current)) == []


def test_veth_gateway_replaces_a_route_through_another_interface():
    resource = veth_resource(gateway=["10.0.0.1"])
    resource.pair = pair(links.IN_PLACE)
    resource.routes = [links.DefaultRoute(socket.AF_INET, "192.168.9.1", 7)]
    current = current_state(gateway=[])
    steps = resource.plan(current, resource.desired(current))
    assert [s.description for s in steps] == [
        "set default route via 10.0.0.1 dev eth0 in netns web (replaces default route via 192.168.9.1 "
        "dev ifindex 7)"]


def test_veth_absent_deletes_the_pair_or_the_orphan_peer():
    resource = veth_resource(state="absent")
    resource.pair = pair(links.IN_PLACE)
    assert [s.description for s in resource.plan(current_state(), None)] == [
        "delete veth pair kbv0 <-> eth0 (state=absent)"]
    resource.pair = links.VethPair(None, Link(2, "eth0", "veth", 1500, True, None), "web", links.ORPHAN)
    assert [s.description for s in resource.plan({"name": None, "peer": "eth0", "netns": "web"}, None)] == [
        "delete veth eth0 in netns web (state=absent; its host end kbv0 is gone)"]
    assert resource.plan(None, None) == []


def bridge_resource(**overrides):
    params = {key: spec.get("default") for key, spec in bridge_glue.ARGUMENT_SPEC.items()}
    params.update(name="kbbr0")
    params.update(overrides)
    resource = bridge_glue.BridgeResource(params)
    resource.validate()
    resource.ports = []
    return resource


@pytest.mark.parametrize("overrides, fragment", [
    ({"name": "."}, "name: '.' is not a valid interface name"),
    ({"name": "br:0"}, "contains ':'"),
    ({"addresses": ["10.0.0.1/33"]}, "addresses: '10.0.0.1/33' is not a valid"),
    ({"mtu": 0}, "mtu: 0 is outside 68..65535"),
])
def test_bridge_validation(overrides, fragment):
    with pytest.raises(ValidationError) as info:
        bridge_resource(**overrides)
    assert fragment in str(info.value)


def test_bridge_plans():
    fresh = bridge_resource(mtu=1500, addresses=["10.0.0.1/24"])
    assert [s.description for s in fresh.plan(None, fresh.desired(None))] == [
        "create bridge kbbr0 (absent)",
        "set mtu 1500 on bridge kbbr0 (new bridge)",  # pinned even though 1500 is the default
        "bring up bridge kbbr0 (new bridge)",
        "add address 10.0.0.1/24 to bridge kbbr0 (new bridge)",
    ]
    current = {"name": "kbbr0", "mtu": 1500, "up": True, "addresses": ["10.0.0.1/24"]}
    assert fresh.plan(current, fresh.desired(current)) == []
    # without mtu the kernel follows the ports: a changed MTU is not a change of ours
    follows = bridge_resource()
    moved = dict(current, mtu=9000)
    assert follows.desired(moved) == moved and follows.plan(moved, follows.desired(moved)) == []


def test_bridge_absent_warns_about_ports():
    resource = bridge_resource(state="absent")
    resource.ports = ["kbv0", "kbv2"]
    steps = resource.plan({"name": "kbbr0", "mtu": 1500, "up": True, "addresses": []}, None)
    assert [s.description for s in steps] == ["delete bridge kbbr0 (state=absent)"]
    assert resource.warnings == ["bridge kbbr0 had ports kbv0, kbv2; the kernel detaches them, they are not deleted"]


def test_removing_a_primary_keeps_its_listed_secondaries():
    resource = veth_resource(peer_addresses=["10.0.0.3/24", "10.0.0.99/24"])
    resource.pair = pair(links.IN_PLACE)
    current = current_state(peer_addresses=["10.0.0.2/24", "10.0.0.99/24"])
    del current["gateway"]
    assert [s.description for s in resource.plan(current, resource.desired(current))] == [
        "remove address 10.0.0.2/24 from eth0 in netns web (not listed)",
        "keep address 10.0.0.99/24 on eth0 in netns web (the kernel deletes it too if a removed address was the "
        "primary of its subnet)",
        "add address 10.0.0.3/24 to eth0 in netns web (missing)",
    ]
