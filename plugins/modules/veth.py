#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: veth
short_description: Manage veth pairs, optionally with the peer in a named network namespace
version_added: 0.1.0
description:
  - Creates and removes a virtual ethernet pair. The host end O(name) stays in the target's own network namespace;
    the other end (the peer) stays beside it or lives in the named network namespace O(netns), under O(peer_name).
  - With O(netns), the pair is created in one netlink message with the peer born inside the namespace under its
    final name, so no run can leave it half made. A pair left half made by other means (created, but the peer
    never moved or never renamed, for example by an interrupted C(ip) script using the same names) is repaired.
  - The pair is recognised from its host end (the kernel records the peer's ifindex and namespace there), never by
    the peer's name alone, so a second run with the peer already inside the namespace reports no change.
  - The module refuses, changing nothing, when O(name) is taken by an interface that is not a veth, or by a veth
    whose peer is not this pair's (another peer name, or another namespace). Names match exactly.
  - Both ends are brought up. Addresses, MTU, the bridge of the host end and the default route inside the namespace
    are managed only when their option is given.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
options:
  name:
    description:
      - Name of the host end, in the target's own network namespace.
      - 1 to 15 bytes; no C(/), C(:) or whitespace; not C(.) or C(..).
    type: str
    required: true
  peer:
    description:
      - Name of the peer while it is on this host.
      - Without O(netns) the peer keeps this name for good. With O(netns) it is only the name an interrupted run
        may have left on this host, which the module then repairs; the peer is created straight inside the namespace.
      - Required with O(state=present). With O(state=absent) it may be left out, and the veth named O(name) is
        deleted with whatever peer it has.
    type: str
  netns:
    description:
      - A named network namespace (as C(ip netns) and M(kernelbox.containers.netns) make them) to hold the peer.
      - It must exist when O(state=present) (in check mode a missing one only warns, assuming an earlier task makes it).
      - To move an existing pair to another namespace, remove it and create it again.
    type: str
  peer_name:
    description:
      - The peer's name inside O(netns), for example C(eth0). Defaults to O(peer).
      - Only with O(netns).
    type: str
  addresses:
    description:
      - The complete list of addresses (CIDR, IPv4 or IPv6, such as C(10.0.0.1/24)) of the host end.
      - Addresses written another way compare equal (C(2001:db8:0::1/64) is C(2001:db8::1/64)).
      - Addresses not listed are removed, except the IPv6 link-local (C(fe80::/10)) addresses the kernel gives every
        interface, which are never counted or removed.
      - Leave out to leave the addresses alone; V([]) removes them all.
    type: list
    elements: str
  peer_addresses:
    description:
      - The complete list of addresses of the peer, as for O(addresses).
    type: list
    elements: str
  mtu:
    description:
      - The MTU of both ends, from 68 to 65535. Leave out to leave it alone.
    type: int
  bridge:
    description:
      - Attach the host end to this bridge (see M(kernelbox.containers.bridge)). The bridge must exist.
      - Leave out (or null) to leave the host end's bridge as it is; V('') (the empty string) detaches it from any
        bridge.
    type: str
  gateway:
    description:
      - The complete set of default routes inside O(netns) that leave through the peer, given as gateway addresses,
        at most one IPv4 and one IPv6 address, for example V(['10.0.0.1', 'fd00::1']).
      - A default route of the same family through another interface of the namespace is replaced.
      - An IPv4 (or non link-local IPv6) gateway must lie in the network of one of O(peer_addresses) when those are
        given.
      - Only with O(netns); this module never changes the host's own default route. Leave out to leave the routes
        alone; V([]) removes the default routes through the peer.
    type: list
    elements: str
  state:
    description:
      - V(present) creates the pair (or repairs a half-made one) and brings both ends up.
      - V(absent) deletes the pair; deleting either end deletes both. If only the peer is left inside O(netns)
        (its host end was moved away or renamed), that peer is deleted.
      - V(absent) needs only O(name), the host end; an interface of that name that is not a veth is never deleted.
        Without O(peer), a peer left alone inside O(netns) is found by O(peer_name).
    type: str
    choices: [present, absent]
    default: present
notes:
  - Requires root (CAP_NET_ADMIN, and CAP_SYS_ADMIN to enter the namespace) on the target.
  - Deleting the network namespace that holds the peer deletes the pair too (the kernel does this asynchronously).
  - The module process never leaves its own namespaces; work inside O(netns) goes through a netlink socket opened
    there.
seealso:
  - module: kernelbox.containers.netns
  - module: kernelbox.containers.bridge
"""

EXAMPLES = r"""
- name: A namespace for the web container
  kernelbox.containers.netns:
    name: web

- name: Its network cable, eth0 inside, attached to the br0 bridge, with a default route
  kernelbox.containers.veth:
    name: veth-web
    peer: veth-web-p
    netns: web
    peer_name: eth0
    peer_addresses: [10.10.0.2/24, "fd00:10::2/64"]
    gateway: [10.10.0.1, "fd00:10::1"]
    bridge: br0
    mtu: 1500

- name: A pair with both ends on this host
  kernelbox.containers.veth:
    name: tap-a
    peer: tap-b
    addresses: [192.168.50.1/30]
    peer_addresses: [192.168.50.2/30]

- name: Take the host end off its bridge
  kernelbox.containers.veth:
    name: veth-web
    peer: veth-web-p
    netns: web
    peer_name: eth0
    bridge: ""

- name: Remove the pair
  kernelbox.containers.veth:
    name: veth-web
    peer: veth-web-p
    netns: web
    peer_name: eth0
    state: absent

- name: Remove a pair by its host end's name alone
  kernelbox.containers.veth:
    name: veth-web
    state: absent
"""

RETURN = r"""
name:
  description: The host end's name.
  returned: always
  type: str
  sample: veth-web
peer:
  description: The peer's name where it lives (O(peer_name) inside O(netns), else O(peer)).
  returned: always
  type: str
  sample: eth0
netns:
  description: The named network namespace holding the peer; null when the peer is on this host.
  returned: always
  type: str
  sample: web
exists:
  description: Whether the pair exists after the run (before it, in check mode).
  returned: always
  type: bool
  sample: true
ifindex:
  description: The host end's interface index; null when absent.
  returned: always
  type: int
  sample: 12
peer_ifindex:
  description: The peer's interface index in its namespace; null when absent.
  returned: always
  type: int
  sample: 2
mtu:
  description: The host end's MTU; null when absent.
  returned: always
  type: int
  sample: 1500
peer_mtu:
  description: The peer's MTU; null when absent.
  returned: always
  type: int
  sample: 1500
bridge:
  description: The bridge the host end is attached to; null when none.
  returned: always
  type: str
  sample: br0
addresses:
  description: The host end's addresses, normalised (IPv6 link-local addresses made by the kernel are not listed).
  returned: always
  type: list
  elements: str
  sample: []
peer_addresses:
  description: The peer's addresses, normalised (IPv6 link-local addresses made by the kernel are not listed).
  returned: always
  type: list
  elements: str
  sample: ["10.10.0.2/24", "fd00:10::2/64"]
gateway:
  description: Gateways of the default routes inside O(netns) that leave through the peer; null without O(netns).
  returned: always
  type: list
  elements: str
  sample: ["10.10.0.1", "fd00:10::1"]
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["create veth pair veth-web <-> eth0 in netns web (absent)", "attach veth-web to bridge br0 (not attached)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.veth import (
    ARGUMENT_SPEC, MODULE_KWARGS, VethResource)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_KWARGS)
    resource = VethResource(module.params, module.check_mode)
    try:
        flow.run(module, resource)
    finally:
        resource.close()


if __name__ == "__main__":
    main()
