# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the sysctls a container network needs, and putting them back.

A network (a bridge and its subnets) needs, in the host's network namespace:

* ``net.ipv4.ip_forward=1`` for an IPv4 subnet and ``net.ipv6.conf.all.forwarding=1``
  for an IPv6 one (only then: turning IPv6 forwarding on makes every interface
  with ``accept_ra=1`` ignore router advertisements, which can cost a host its
  IPv6 default route);
* ``net.ipv4.conf.BRIDGE.route_localnet=1`` for published ports to answer on
  127.0.0.1: the kernel refuses to route a packet from 127.0.0.1 out of any
  other interface without it.

``Record`` (``/run/kernelbox/nat/sysctls.json``, gone at reboot like the
sysctls themselves) remembers each value kernelbox changed, what it was before,
and which networks need it; when the last of them goes, the value is put back,
unless someone changed it since.  A value that was already right is never
recorded, so it is never "put back" either.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts, netns
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import netlink
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

IP_FORWARD = "net.ipv4.ip_forward"
IPV6_FORWARDING = "net.ipv6.conf.all.forwarding"
RECORD_FILE = "sysctls.json"


def route_localnet_key(bridge: str) -> str:
    return "net.ipv4.conf.%s.route_localnet" % bridge


def wanted(bridge: str, subnets: t.Iterable[str], forwarding: bool, localhost: bool) -> t.Dict[str, str]:
    """key -> value this network needs."""
    versions = {ipaddress.ip_network(subnet).version for subnet in subnets}
    result = {}
    if forwarding and 4 in versions:
        result[IP_FORWARD] = "1"
    if forwarding and 6 in versions:
        result[IPV6_FORWARDING] = "1"
    if localhost and 4 in versions:
        result[route_localnet_key(bridge)] = "1"
    return result


def read(key: str) -> t.Optional[str]:
    """The value in our own network namespace; None when the key does not exist (a bridge not made yet)."""
    return netns.read_sysctl(None, key)


def write(key: str, value: str) -> None:
    netns.write_sysctl(None, key, value)


RTPROT_RA = 9  # include/uapi/linux/rtnetlink.h


def ra_interfaces() -> t.List[str]:
    """Interfaces whose IPv6 default route came from a router advertisement and that would stop taking them
    (accept_ra=1) once IPv6 forwarding is on: the route would expire and not come back."""
    found = set()
    with netlink.rtnl() as handle:
        for route in handle.default_routes(socket.AF_INET6):
            if route.proto != RTPROT_RA or route.oif is None:
                continue
            link = handle.link_by_index(route.oif)
            if link is not None and read("net.ipv6.conf.%s.accept_ra" % link.name) == "1":
                found.add(link.name)
    return sorted(found)


class Record:
    """What kernelbox changed: key -> {"before": old value, "set": our value, "users": [bridges]}."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, RECORD_FILE)
        self.entries: t.Dict[str, t.Dict[str, t.Any]] = {}
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            raise KernelboxError("%s cannot be read (%s); remove it if the sysctls are as you want them"
                                 % (self.path, exc))
        if not isinstance(data, dict):
            raise KernelboxError("%s is not a kernelbox sysctl record" % self.path)
        self.entries = {key: value for key, value in data.items() if isinstance(value, dict)}

    def users(self, key: str) -> t.List[str]:
        return list(self.entries.get(key, {}).get("users", []))

    def keys_of(self, user: str) -> t.List[str]:
        return sorted(key for key, entry in self.entries.items() if user in entry.get("users", []))

    def claim(self, key: str, user: str, before: t.Optional[str], value: str) -> None:
        """``user`` needs ``key`` = ``value``; ``before`` is kept from the first claim."""
        entry = self.entries.setdefault(key, {"before": before, "set": value, "users": []})
        if user not in entry["users"]:
            entry["users"] = sorted(entry["users"] + [user])
        self.save()

    def release(self, key: str, user: str) -> t.Optional[t.Dict[str, t.Any]]:
        """Drop ``user``; the entry when it was the last user (the caller puts ``before`` back)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        entry["users"] = [name for name in entry.get("users", []) if name != user]
        if entry["users"]:
            self.save()
            return None
        del self.entries[key]
        self.save()
        return entry

    def save(self) -> None:
        """Atomically (temp file, rename); the file goes when nothing is recorded."""
        directory = mounts.open_dir(self.state_dir, create=True, mode=0o700)
        try:
            if not self.entries:
                try:
                    os.unlink(RECORD_FILE, dir_fd=directory)
                except FileNotFoundError:
                    pass
                return
            temp = RECORD_FILE + ".tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=directory)
            try:
                os.write(fd, json.dumps(self.entries, sort_keys=True, indent=1).encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, RECORD_FILE, src_dir_fd=directory, dst_dir_fd=directory)
        finally:
            os.close(directory)
