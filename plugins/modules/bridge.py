#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: bridge
short_description: Manage Linux bridges
version_added: 0.1.0
description:
  - Creates and removes a Linux bridge in the target's own network namespace and brings it up. Ports are attached
    from the other side, with the O(kernelbox.containers.veth#module:bridge) option of M(kernelbox.containers.veth).
  - The module refuses, changing nothing, when O(name) is taken by an interface that is not a bridge (a veth,
    a physical device). Names match exactly.
  - A bridge made by C(ip link add NAME type bridge) is found and managed; one made by the module is an ordinary
    bridge to C(ip) and C(bridge).
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
options:
  name:
    description:
      - Name of the bridge.
      - 1 to 15 bytes; no C(/), C(:) or whitespace; not C(.) or C(..).
    type: str
    required: true
  addresses:
    description:
      - The complete list of addresses (CIDR, IPv4 or IPv6, such as C(10.0.0.1/24)) of the bridge.
      - Addresses written another way compare equal (C(2001:db8:0::1/64) is C(2001:db8::1/64)).
      - Addresses not listed are removed, except the IPv6 link-local (C(fe80::/10)) addresses the kernel gives every
        interface, which are never counted or removed.
      - Leave out to leave the addresses alone; V([]) removes them all.
    type: list
    elements: str
  mtu:
    description:
      - The bridge's MTU, from 68 to 65535.
      - Until its MTU is set explicitly, the kernel gives a bridge the smallest MTU of its ports and changes it
        whenever a port joins, leaves or changes its MTU. The module sets the MTU so that the kernel keeps it, even
        on a new bridge whose MTU already has the requested value; ports then keep their own MTU.
      - Leave out to let the kernel follow the ports; the MTU is then not managed and never reported as a change.
      - A bridge made elsewhere that already has the requested MTU is left alone, so the kernel may still adjust it
        later; the next run then sets it, and from then on the kernel keeps it.
    type: int
  state:
    description:
      - V(present) creates the bridge if needed and brings it up.
      - V(absent) deletes it. The kernel detaches its ports (they are not deleted) and the module warns naming them.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Requires root (CAP_NET_ADMIN) on the target.
seealso:
  - module: kernelbox.containers.veth
  - module: kernelbox.containers.netns
"""

EXAMPLES = r"""
- name: A bridge that is the containers' gateway
  kernelbox.containers.bridge:
    name: br0
    addresses: [10.10.0.1/24, "fd00:10::1/64"]
    mtu: 1500

- name: Remove it
  kernelbox.containers.bridge:
    name: br0
    state: absent
"""

RETURN = r"""
name:
  description: The bridge's name.
  returned: always
  type: str
  sample: br0
exists:
  description: Whether the bridge exists after the run (before it, in check mode).
  returned: always
  type: bool
  sample: true
ifindex:
  description: The bridge's interface index; null when absent.
  returned: always
  type: int
  sample: 7
mtu:
  description: The bridge's MTU; null when absent.
  returned: always
  type: int
  sample: 1500
addresses:
  description: The bridge's addresses, normalised (IPv6 link-local addresses made by the kernel are not listed).
  returned: always
  type: list
  elements: str
  sample: ["10.10.0.1/24", "fd00:10::1/64"]
ports:
  description: Names of the interfaces attached to the bridge (before the run, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["veth-web"]
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["create bridge br0 (absent)", "set mtu 1500 on bridge br0 (new bridge)", "bring up bridge br0 (new bridge)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.bridge import ARGUMENT_SPEC, BridgeResource


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    resource = BridgeResource(module.params, module.check_mode)
    try:
        flow.run(module, resource)
    finally:
        resource.close()


if __name__ == "__main__":
    main()
