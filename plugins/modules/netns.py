#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: netns
short_description: Manage named Linux network namespaces
version_added: 0.1.0
description:
  - Creates and removes named network namespaces the way C(ip netns add) does, so both tools see and manage the
    same namespaces. A named namespace is an nsfs bind mount at C(/run/netns/NAME), and C(/run/netns) is a shared mount.
  - Names match exactly; C(demo) never matches C(demo2).
  - An entry left by an interrupted run (a C(/run/netns/NAME) that is not an nsfs mount) is repaired with
    O(state=present) and removed with O(state=absent).
  - Optionally brings up the loopback interface and sets C(net.*) sysctls inside the namespace.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
options:
  name:
    description:
      - Name of the namespace, the file name under C(/run/netns).
      - At most 255 bytes, not C(.) or C(..), with no C(/) and no NUL.
    type: str
    required: true
  state:
    description:
      - V(present) creates the namespace (or repairs a stale entry).
      - V(absent) removes the name. If processes still live in the namespace the kernel keeps it until they exit,
        and the module warns with their PIDs.
    type: str
    choices: [present, absent]
    default: present
  loopback:
    description:
      - Bring the C(lo) interface up inside the namespace.
      - V(false) leaves C(lo) as it is; it does not take it down.
    type: bool
    default: true
  sysctls:
    description:
      - C(net.*) sysctls to set inside the namespace, such as C(net.ipv4.ip_forward=1).
      - Keys may use dots or slashes. Values compare the way the kernel prints them (whitespace-separated fields).
      - Only listed keys are managed; others keep their values.
    type: dict
    default: {}
notes:
  - Requires root (CAP_SYS_ADMIN) on the target.
  - The module process never leaves its own namespaces; work inside the namespace happens through a netlink
    socket opened there or in a forked child.
seealso:
  - module: kernelbox.containers.veth
  - module: kernelbox.containers.bridge
"""

EXAMPLES = r"""
- name: A namespace with forwarding on
  kernelbox.containers.netns:
    name: web
    sysctls:
      net.ipv4.ip_forward: 1

- name: Remove it
  kernelbox.containers.netns:
    name: web
    state: absent
"""

RETURN = r"""
name:
  description: The namespace name.
  returned: always
  type: str
  sample: web
path:
  description: The namespace's bind mount.
  returned: always
  type: str
  sample: /run/netns/web
exists:
  description: Whether the named namespace exists after the run (before it, in check mode).
  returned: always
  type: bool
  sample: true
inode:
  description: The namespace id, as C(readlink /proc/PID/ns/net) and C(lsns) show it; null when absent.
  returned: always
  type: int
  sample: 4026532710
pids:
  description: PIDs of the processes inside the namespace.
  returned: always
  type: list
  elements: int
  sample: [4242]
sysctls:
  description: The managed sysctls as the kernel reports them.
  returned: always
  type: dict
  sample: {"net.ipv4.ip_forward": "1"}
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["create netns web (absent)", "bring up lo in netns web (new namespace)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.netns import ARGUMENT_SPEC, NetnsResource


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    flow.run(module, NetnsResource(module.params, module.check_mode))


if __name__ == "__main__":
    main()
