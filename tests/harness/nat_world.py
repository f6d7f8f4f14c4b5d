# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small world for the NAT tests, inside the sandbox: a host, its containers, and the internet.

    "internet" netns (PREFIX-inet)                     the sandbox is the host
      eth0 198.51.100.2/24 2001:db8:100::2/64  <-veth->  PREFIX-up 198.51.100.1/24 2001:db8:100::1/64
      lo   203.0.113.5  2001:db8:203::5                  default routes via the internet side
                                                        PREFIX-br 10.78.0.1/24 fd78::1/64 (the containers' bridge)
    "containers" (plain netns, veth on the bridge)        |
      PREFIX-c1  eth0 10.78.0.11/24 fd78::11/64  <-------+  default routes via the bridge
      PREFIX-c2  eth0 10.78.0.12/24 fd78::12/64  <-------+

The internet has no route back to the containers' subnet: an answer reaches a container only if NAT made
it leave with the host's address.  Everything is made with iproute2 (test infrastructure, not code under
test) and removed by ``destroy``; servers are started per test and killed by PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import typing as t
from contextlib import contextmanager
from dataclasses import dataclass

from harness import net

ECHO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo.py")
PYTHON = "/usr/bin/python3"  # any Python 3 runs echo.py; this one is there on every test machine


@dataclass(frozen=True)
class World:
    prefix: str
    bridge: str
    uplink: str
    internet: str
    containers: t.Tuple[str, ...]
    host4: str = "198.51.100.1"
    host6: str = "2001:db8:100::1"
    gateway4: str = "10.78.0.1"
    gateway6: str = "fd78::1"
    remote4: str = "203.0.113.5"  # "the internet", behind the uplink
    remote6: str = "2001:db8:203::5"
    subnet4: str = "10.78.0.0/24"
    subnet6: str = "fd78::/64"

    def address(self, container: str, family: int = 4) -> str:
        index = self.containers.index(container) + 11
        return "10.78.0.%d" % index if family == 4 else "fd78::%d" % index


def _sh(*argv: str) -> None:
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(argv), proc.stderr.strip()))


def build(prefix: str) -> World:
    world = World(prefix, prefix + "-br", prefix + "-up", prefix + "-inet", (prefix + "-c1", prefix + "-c2"))
    _sh("ip", "link", "add", world.bridge, "type", "bridge")
    _sh("ip", "addr", "add", "10.78.0.1/24", "dev", world.bridge)
    _sh("ip", "addr", "add", "fd78::1/64", "dev", world.bridge, "nodad")
    _sh("ip", "link", "set", world.bridge, "up")
    for container in world.containers:
        _sh("ip", "netns", "add", container)
        _sh("ip", "link", "add", container + "h", "type", "veth", "peer", "name", "eth0", "netns", container)
        _sh("ip", "link", "set", container + "h", "master", world.bridge, "up")
        for args in (("link", "set", "lo", "up"), ("link", "set", "eth0", "up"),
                     ("addr", "add", world.address(container) + "/24", "dev", "eth0"),
                     ("addr", "add", world.address(container, 6) + "/64", "dev", "eth0", "nodad"),
                     ("route", "add", "default", "via", world.gateway4),
                     ("-6", "route", "add", "default", "via", world.gateway6)):
            _sh("ip", "-n", container, *args)
    _sh("ip", "netns", "add", world.internet)
    _sh("ip", "link", "add", world.uplink, "type", "veth", "peer", "name", "eth0", "netns", world.internet)
    _sh("ip", "addr", "add", world.host4 + "/24", "dev", world.uplink)
    _sh("ip", "addr", "add", world.host6 + "/64", "dev", world.uplink, "nodad")
    _sh("ip", "link", "set", world.uplink, "up")
    for args in (("link", "set", "lo", "up"), ("link", "set", "eth0", "up"),
                 ("addr", "add", "198.51.100.2/24", "dev", "eth0"),
                 ("addr", "add", "2001:db8:100::2/64", "dev", "eth0", "nodad"),
                 ("addr", "add", world.remote4 + "/32", "dev", "lo"), ("addr", "add", world.remote6 + "/128", "dev", "lo")):
        _sh("ip", "-n", world.internet, *args)
    _sh("ip", "route", "add", "default", "via", "198.51.100.2")
    _sh("ip", "-6", "route", "add", "default", "via", "2001:db8:100::2")
    net.wait_for_dad()
    return world


def destroy(world: World) -> None:
    subprocess.run(["ip", "route", "del", "default", "via", "198.51.100.2"], stderr=subprocess.DEVNULL, check=False)
    subprocess.run(["ip", "-6", "route", "del", "default", "via", "2001:db8:100::2"], stderr=subprocess.DEVNULL,
                   check=False)
    net.remove_test_objects(world.prefix)


@contextmanager
def serving(netns: t.Optional[str], name: str, *ports: str, timeout: float = 120) -> t.Iterator[int]:
    """echo.py serving ``ports`` ('80/tcp', '53/udp') in ``netns`` (None: the host) until the block ends."""
    argv = ([] if netns is None else ["ip", "netns", "exec", netns]) + [PYTHON, ECHO, "serve", name] + list(ports)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout  # a machine under load starts Python slowly
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready" or time.monotonic() > deadline:
            raise RuntimeError("echo server %s in %s did not start: %r %s" % (name, netns, line, proc.stderr.read()))
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def ask(netns: t.Optional[str], host: str, port: int, proto: str = "tcp", seconds: float = 10.0,
        sport: t.Optional[int] = None) -> str:
    """What echo.py answered ('NAME PEER'), or 'no answer ...' (the client's own timeout or refusal)."""
    argv = ([] if netns is None else ["ip", "netns", "exec", netns]) + [
        PYTHON, ECHO, "ask", host, str(port), proto, str(seconds)] + ([str(sport)] if sport else [])
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=seconds + 120,
                          check=False)
    return (proc.stdout.strip() or proc.stderr.strip())


def conntrack(*args: str) -> str:
    """``conntrack -L`` (both families), the independent reader of the connection table."""
    out = []
    for family in ("ipv4", "ipv6"):
        proc = subprocess.run(["conntrack", "-L", "-f", family] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, check=False)
        out.append(proc.stdout)
    return "".join(out)


def nft_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], stdout=subprocess.PIPE, text=True, check=False).stdout


def nft_ruleset_handles() -> str:
    """The ruleset with each rule's handle ('... # handle 12')."""
    return subprocess.run(["nft", "-a", "list", "ruleset"], stdout=subprocess.PIPE, text=True, check=False).stdout


def conntrack_count() -> int:
    return len([line for line in conntrack().splitlines() if line.strip()])


def sysctl(key: str) -> str:
    with open("/proc/sys/" + key.replace(".", "/"), encoding="ascii") as handle:
        return handle.read().strip()


if __name__ == "__main__":  # pragma: no cover - for trying the world by hand inside tests/sandbox
    built = build(sys.argv[1] if len(sys.argv) > 1 else "kbtw")
    print(built)
