#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: nat
short_description: Let container networks reach the world - masquerade, forwarding and published ports
version_added: 0.1.0
description:
  - Manages the host's address translation and forwarding for container networks, in one nftables table of its
    own, C(inet kernelbox). It never edits another table or chain, so the host's firewall and Docker's or
    firewalld's rules are left alone; it only lists other tables' forward chains, to warn about one that drops.
  - "A task is one of two kinds. With O(bridge), a B(network): outbound traffic from the bridge's subnets leaves
    with the host's address (masquerade), forwarding is turned on (C(net.ipv4.ip_forward),
    C(net.ipv6.conf.all.forwarding)), connections into the bridge are limited to replies and published ports
    (O(isolate)), and published ports answer on C(127.0.0.1) (O(localhost)) and from the bridge itself
    (hairpin)."
  - "With O(container), that container's B(published ports), like C(docker run -p): C(host_ip:host_port) is
    forwarded (DNAT) to C(container_address:container_port), for tcp and udp, port ranges, IPv4 and IPv6. They
    are reached from other hosts, from the host itself (C(127.0.0.1:PORT) or any host address) and from other
    containers on the same bridge."
  - Who made what is recorded in the kernel itself, in each rule's and map element's comment, so a host port held by
    another container is refused naming the holder, and O(state=absent) removes what this network or container made
    and nothing else. The table goes when nothing of kernelbox's is left in it.
  - Talks to the kernel through libnftables' JSON API (loaded with ctypes, so any Python works), and removes the
    conntrack flows an unpublished port leaves behind over ctnetlink.
author:
  - kernelbox.containers contributors (@kernelbox)
extends_documentation_fragment:
  - kernelbox.containers._attributes
  - kernelbox.containers._requirements
options:
  bridge:
    description:
      - The bridge a container network's veth host ends are attached to; makes this task a network task.
      - The bridge must exist when O(state=present).
      - Mutually exclusive with O(container).
    type: str
  subnets:
    description:
      - The network's subnets (IPv4 or IPv6, such as C(10.88.0.0/24); host bits are ignored).
      - Defaults to the networks of the bridge's addresses (link-local ones left out).
      - Only with O(bridge).
    type: list
    elements: str
  masquerade:
    description:
      - Traffic from a subnet that leaves by another interface than the bridge leaves with the host's address.
      - Turn off for subnets that the network routes to the host, such as global IPv6 prefixes.
    type: bool
    default: true
  forwarding:
    description:
      - Turns on C(net.ipv4.ip_forward) for an IPv4 subnet and C(net.ipv6.conf.all.forwarding) for an IPv6 one. The
        value before is reported (RV(sysctls_before)) and recorded, and put back when the last network that needed it
        is removed, unless it was changed since.
      - IPv6 forwarding makes interfaces with C(accept_ra=1) ignore router advertisements; the module warns naming them.
    type: bool
    default: true
  isolate:
    description:
      - Drop connections into the bridge from elsewhere that are neither replies nor published ports, as Docker and
        podman do. Without it, a machine that routes the subnet through this host reaches every port of every
        container.
      - Containers on the same bridge always reach each other.
    type: bool
    default: true
  localhost:
    description:
      - Published ports answer on C(127.0.0.1) too. This turns on C(net.ipv4.conf.BRIDGE.route_localnet) (the kernel
        drops packets from C(127.0.0.1) leaving by another interface without it) and adds a rule that drops anything
        sent to C(127.0.0.0/8) from the bridge, which route_localnet would otherwise let containers reach.
      - The IPv6 loopback C(::1) can never be forwarded by the kernel; use the host's IPv6 address.
    type: bool
    default: true
  container:
    description:
      - The container the ports are published for (the name the ports are recorded under); makes this task a ports
        task.
      - Mutually exclusive with O(bridge).
    type: str
  addresses:
    description:
      - The container's addresses, at most one IPv4 and one IPv6 (C(10.88.0.10) or C(10.88.0.10/24)).
      - Required when O(ports) is not empty. Only with O(container).
    type: list
    elements: str
    default: []
  ports:
    description:
      - The complete list of the container's published ports; ports not listed are unpublished.
      - "Strings as C(docker run -p) takes them: C(HOST_PORT:CONTAINER_PORT[/PROTOCOL]), or with a host address,
        C(127.0.0.1:8080:80), C([2001:db8::1]:8080:80); ranges of the same length C(9000-9005:9000-9005); protocol
        C(tcp) (the default) or C(udp)."
      - Or dicts with C(host_ip), C(host_port), C(container_port) and C(protocol).
      - Without a host address, the port is published on every host address of each family the container has an
        address of; C(0.0.0.0) limits it to IPv4 and C([::]) to IPv6.
      - A host port is required (no random ports, which would change on every run); a given host address must be on
        this host; a host port already published by another container is refused, naming it.
      - Only with O(container).
    type: list
    elements: raw
    default: []
  state:
    description:
      - V(present) makes the rules, ports and sysctls as asked.
      - V(absent) removes this network's rules and puts back the sysctls it changed, or unpublishes all of this
        container's ports (and forgets their conntrack flows).
    type: str
    choices: [present, absent]
    default: present
notes:
  - Requires root (CAP_NET_ADMIN) on the target, and libnftables (package C(libnftables1) on Debian and Ubuntu,
    C(nftables) on Fedora and RHEL). Without it the module fails naming the package, except for a task that only
    removes (O(state=absent), or a container with no O(ports)); no kernelbox table can exist then, so it succeeds
    unchanged.
  - "A forwarded packet must be accepted by every base chain of the forward hook. A host whose iptables FORWARD policy
    is DROP (Docker sets it) drops container traffic whatever this table accepts. The module warns, naming the chain
    and the commands that let the bridge through, for example
    C(iptables -I DOCKER-USER -i kb0 -j ACCEPT; iptables -I DOCKER-USER -o kb0 -m conntrack --ctstate
    RELATED,ESTABLISHED,DNAT -j ACCEPT); it never edits that table itself."
  - Run the network task before the containers' port tasks; the ports of a container whose address no network covers
    work from other hosts, but not from its own bridge or 127.0.0.1, and the module warns.
seealso:
  - module: kernelbox.containers.bridge
  - module: kernelbox.containers.veth
  - name: libnftables-json(5)
    description: The JSON API this module uses.
    link: https://manpages.debian.org/bookworm/libnftables1/libnftables-json.5.en.html
"""

EXAMPLES = r"""
- name: NAT, forwarding and isolation for the containers' bridge (subnets from its addresses)
  kernelbox.containers.nat:
    bridge: kb0

- name: Only masquerade the IPv4 subnet; the IPv6 prefix is routed to this host
  kernelbox.containers.nat:
    bridge: kb0
    subnets: [10.88.0.0/24, "2001:db8:88::/64"]
    masquerade: false

- name: Publish a web container's ports, like docker run -p
  kernelbox.containers.nat:
    container: web
    addresses: [10.88.0.10/24, "fd00:88::10/64"]
    ports:
      - "8080:80"                # every host address, IPv4 and IPv6, tcp
      - "127.0.0.1:8443:443"     # only on the host's loopback
      - "5353:53/udp"
      - "9000-9005:9000-9005"
      - {host_port: 2222, container_port: 22, host_ip: 192.0.2.10}

- name: Unpublish them all (and forget their conntrack flows)
  kernelbox.containers.nat:
    container: web
    state: absent

- name: Remove the network's rules; put ip_forward back if kernelbox turned it on
  kernelbox.containers.nat:
    bridge: kb0
    state: absent
"""

RETURN = r"""
table:
  description: The nftables table the module owns.
  returned: always
  type: str
  sample: inet kernelbox
table_exists:
  description: Whether the table exists after the run (before it, in check mode).
  returned: always
  type: bool
  sample: true
forward_blocked_by:
  description: Base chains of other tables on the forward hook whose policy is drop (see the notes).
  returned: always
  type: list
  elements: str
  sample: ["ip filter FORWARD (policy drop)"]
bridge:
  description: The network's bridge.
  returned: with O(bridge)
  type: str
  sample: kb0
subnets:
  description: The network's subnets, normalised (empty with O(state=absent)).
  returned: with O(bridge)
  type: list
  elements: str
  sample: ["10.88.0.0/24"]
rules:
  description: "The network's rules, as C(chain: bridge: what)."
  returned: with O(bridge)
  type: list
  elements: str
  sample: ["postrouting: kb0: masquerade 10.88.0.0/24 leaving by another interface"]
sysctls:
  description: The values of the sysctls the network needs or needed, after the run (before it, in check mode).
  returned: with O(bridge)
  type: dict
  sample: {"net.ipv4.ip_forward": "1", "net.ipv4.conf.kb0.route_localnet": "1"}
sysctls_before:
  description: The same sysctls before the run.
  returned: with O(bridge)
  type: dict
  sample: {"net.ipv4.ip_forward": "0", "net.ipv4.conf.kb0.route_localnet": "0"}
container:
  description: The container whose ports these are.
  returned: with O(container)
  type: str
  sample: web
published:
  description: The container's published ports after the run (before it, in check mode), consecutive ports as ranges.
  returned: with O(container)
  type: list
  elements: dict
  sample:
    - {protocol: tcp, host_ip: 0.0.0.0, host_port: 8080, host_port_end: 8080, container_ip: 10.88.0.10,
       container_port: 80, container_port_end: 80, container: web}
actions:
  description: The steps taken (or, in check mode, that would be taken), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["publish tcp 0.0.0.0:8080 -> 10.88.0.10:80 for web (new)", "set net.ipv4.ip_forward = 1 (was 0; network kb0 needs it)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import deps, flow
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.nat import (
    ARGUMENT_SPEC, MUTUALLY_EXCLUSIVE, REQUIRED_ONE_OF, NatResource, asks_for_nothing)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=MUTUALLY_EXCLUSIVE, required_one_of=REQUIRED_ONE_OF)
    if deps.missing_libraries(["libnftables"]) and asks_for_nothing(module.params):
        module.warn("libnftables is not installed, so no kernelbox NAT can exist here: nothing to remove")
        module.exit_json(changed=False, actions=[], table="inet kernelbox", table_exists=False, forward_blocked_by=[])
    deps.require(module, "libnftables")
    resource = NatResource(module.params, module.check_mode)
    try:
        flow.run(module, resource)
    finally:
        resource.close()


if __name__ == "__main__":
    main()
