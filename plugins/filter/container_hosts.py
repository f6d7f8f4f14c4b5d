# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: container_hosts
short_description: Turn the containers a play runs on its hosts into entries for ansible.builtin.add_host
version_added: 0.1.0
description:
  - Reads, for each host of O(_input) (usually C(ansible_play_hosts)), the result of
    M(kernelbox.containers.container_info) registered under O(result) on that host, and returns one entry per
    running container, with what M(ansible.builtin.add_host) needs to make it an inventory host that the
    P(kernelbox.containers.kernelbox#connection) connection plugin reaches.
  - "Each entry: C(name) (O(name_format) filled in), C(container) (the container's name, for C(ansible_host)),
    C(host) (the inventory host it runs on), C(kernelbox_host) (V(localhost) when that host's connection is
    C(local), else its C(ansible_host) or name), C(kernelbox_host_user) (its C(ansible_user), else V(root)),
    C(kernelbox_host_port) (its C(ansible_port), or null), C(kernelbox_host_ssh_options) (its private key file and
    SSH arguments, by the C(ansible.builtin.ssh) option names), and C(address) (the container's first address
    that is not loopback, without the prefix length, or null)."
  - An add_host task runs once, not once per host, which is why this reads every host's result through
    C(hostvars).
author:
  - kernelbox.containers contributors (@kernelbox)
options:
  _input:
    description: The inventory hosts whose containers to list, usually C(ansible_play_hosts).
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
  result:
    description: The variable each host registered the M(kernelbox.containers.container_info) result in.
    type: str
    default: kernelbox_info
  name_format:
    description: The inventory name of each container host; C({container}) and C({host}) are replaced.
    type: str
    default: "{container}@{host}"
"""

EXAMPLES = r"""
- name: Containers as hosts
  hosts: container_hosts
  tasks:
    - name: What runs here
      kernelbox.containers.container_info:
      register: kernelbox_info

    - name: Every running container becomes an inventory host
      ansible.builtin.add_host:
        name: "{{ item.name }}"
        groups: [kernelbox_containers]
        ansible_connection: kernelbox.containers.kernelbox
        ansible_host: "{{ item.container }}"
        kernelbox_host: "{{ item.kernelbox_host }}"
        kernelbox_host_user: "{{ item.kernelbox_host_user }}"
        kernelbox_host_port: "{{ item.kernelbox_host_port }}"
        kernelbox_host_ssh_options: "{{ item.kernelbox_host_ssh_options }}"
        kernelbox_container_host: "{{ item.host }}"
        kernelbox_address: "{{ item.address }}"
      loop: "{{ ansible_play_hosts | kernelbox.containers.container_hosts(hostvars) }}"
      loop_control:
        label: "{{ item.name }}"
"""

RETURN = r"""
_value:
  description: One entry per running container, in host order then container order.
  type: list
  elements: dict
"""

import ipaddress
import typing as t

from ansible.errors import AnsibleFilterError

# ansible.builtin.ssh option name -> the variables that set it on a host (first found wins)
SSH_OPTIONS = (
    ("private_key_file", ("ansible_ssh_private_key_file", "ansible_private_key_file")),
    ("ssh_common_args", ("ansible_ssh_common_args",)),
    ("ssh_args", ("ansible_ssh_args",)),
    ("ssh_extra_args", ("ansible_ssh_extra_args",)),
)


def first_address(network: t.Any) -> t.Optional[str]:
    """The first address that is not loopback nor link-local, without its prefix length, from container_info's
    ``network`` (a list of interfaces; null when the container shares the host's network, a dict on errors)."""
    for link in network if isinstance(network, list) else []:
        for cidr in (link or {}).get("addresses") or []:
            try:
                address = ipaddress.ip_interface(cidr).ip
            except ValueError:
                continue
            if not (address.is_loopback or address.is_link_local):
                return str(address)
    return None


def _var(variables: t.Any, *names: str) -> t.Any:
    for name in names:
        try:
            value = variables[name]
        except (KeyError, TypeError):
            continue
        if value not in (None, ""):
            return value
    return None


def host_connection(host: str, variables: t.Any) -> t.Dict[str, t.Any]:
    """How the connection plugin reaches a container on ``host``: what that host's own connection uses."""
    local = _var(variables, "ansible_connection") in ("local", "ansible.builtin.local") or (
        _var(variables, "ansible_connection") is None and host in ("localhost", "127.0.0.1", "::1"))
    if local:
        return {"kernelbox_host": "localhost", "kernelbox_host_user": "root", "kernelbox_host_port": None,
                "kernelbox_host_ssh_options": {}}
    options = {}
    for option, names in SSH_OPTIONS:
        value = _var(variables, *names)
        if value is not None:
            options[option] = value
    return {"kernelbox_host": _var(variables, "ansible_host", "ansible_ssh_host") or host,
            "kernelbox_host_user": _var(variables, "ansible_user", "ansible_ssh_user") or "root",
            "kernelbox_host_port": _var(variables, "ansible_port", "ansible_ssh_port"),
            "kernelbox_host_ssh_options": options}


def container_hosts(play_hosts: t.Any, hostvars: t.Any, result: str = "kernelbox_info",
                    name_format: str = "{container}@{host}") -> t.List[t.Dict[str, t.Any]]:
    if not isinstance(play_hosts, (list, tuple)):
        raise AnsibleFilterError("container_hosts: the input must be a list of inventory hosts (ansible_play_hosts)")
    entries = []
    for host in play_hosts:
        try:
            variables = hostvars[host]
        except KeyError:
            raise AnsibleFilterError("container_hosts: %s is not in hostvars" % host)
        info = _var(variables, result)
        if not isinstance(info, dict) or not isinstance(info.get("containers"), list):
            raise AnsibleFilterError("container_hosts: %s has no container_info result in %r (register it there, or "
                                     "pass result=NAME)" % (host, result))
        reach = host_connection(host, variables)
        for container in info["containers"]:
            if not container.get("running"):
                continue
            entry = {"name": name_format.format(container=container["name"], host=host),
                     "container": container["name"], "host": host,
                     "address": first_address(container.get("network"))}
            entry.update(reach)
            entries.append(entry)
    return entries


class FilterModule:
    def filters(self) -> t.Dict[str, t.Callable[..., t.Any]]:
        return {"container_hosts": container_hosts}
