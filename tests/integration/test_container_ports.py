# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The container module's ``ports`` (``podman run -p``), proven by real traffic in the sandbox.

The world is harness/nat_world.py's: the sandbox is the host, a bridge with the network's NAT (the nat module,
as the host role makes it), a namespace on the bridge, and one behind the host's uplink veth standing in for
another host.  The container serves with echo.py (the host's Python, its /usr bound read-only), which answers
with the address it saw, over tcp and udp.  nft is the independent reader of the table.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from harness import nat_world, net
from harness.containers import build_busybox_rootfs, cgroup_parent, containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import wait_until
from harness.nat_world import ask

PREFIX = "kbtp"
SERVE = ["/usr/bin/python3", "/echo.py", "serve", "web", "80/tcp", "53/udp"]
WAIT = 180  # a machine under 4x load starts Python slowly


@pytest.fixture(scope="module")
def world(ansible):
    """The bridge and the other namespaces, with the network's rules and sysctls (nat bridge:), for the module."""
    built = nat_world.build(PREFIX)
    try:
        result = ansible.module("nat", {"bridge": built.bridge})
        assert result.changed and not result.failed, result.result
        yield built
    finally:
        ansible.module("nat", {"bridge": built.bridge, "state": "absent"})
        nat_world.destroy(built)


@pytest.fixture(scope="module")
def echo_image():
    """busybox, echo.py, and /lib and /lib64 pointing into /usr, which the container gets from the host."""
    top = tempfile.mkdtemp(prefix="kbt-pimage-")
    os.chmod(top, 0o755)
    root = build_busybox_rootfs(os.path.join(top, "rootfs"))
    shutil.copy(nat_world.ECHO, os.path.join(root, "echo.py"))
    for name in ("lib", "lib64"):
        os.symlink("usr/" + name, os.path.join(root, name))
    path = os.path.join(top, "echo.tar")
    with tarfile.open(path, "w") as tar:
        for entry in sorted(os.listdir(root)):
            tar.add(os.path.join(root, entry), arcname=entry,
                    filter=lambda info: (setattr(info, "uid", 0), setattr(info, "gid", 0), info)[-1])
    yield path
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def made(ansible, containers, cgroup_test_parent, echo_image):
    names = []

    def register(name):
        names.append(containers(name))
        return name

    yield register
    for name in names:
        ansible.module("container", {"name": name, "state": "absent"})
    ansible.module("image_layers", {"src": echo_image, "state": "absent"})


def web(world, image, name, **extra):
    args = dict(name=name, image=image, command=SERVE, network=world.bridge, ip="10.78.0.20",
                volumes=["/usr:/usr:ro"], stop_timeout=1, cgroup_parent=cgroup_parent())
    args.update(extra)
    return args


def answers(netns, host, port, proto="tcp", expect="web "):
    """What the published port answers, asked again until it does (the server starts after the task returns)."""
    seen = []

    def answered():
        seen.append(ask(netns, host, port, proto, seconds=5))
        return seen[-1].startswith(expect)
    wait_until(answered, WAIT, 0.5)
    return seen[-1]


def evidence(name):
    """What a failed ask is explained by: the container's addresses, the table, the connection table."""
    addresses = subprocess.run(["ip", "-n", name, "-br", "addr"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, check=False).stdout
    return "container addresses:\n%s\nruleset:\n%s\nconntrack:\n%s" % (
        addresses, nat_world.nft_ruleset(), nat_world.conntrack())


def ipv6_settled(name):
    """Both ends of the container's veth have their IPv6 link-local address past DAD (their routes come then)."""
    host_end = "kb" + hashlib.sha1(name.encode()).hexdigest()[:8] + "h"
    for where, dev in ((None, host_end), (name, "eth0")):
        found = [entry for link in net.ip_json("-6", "addr", "show", "dev", dev, netns=where)
                 for entry in link.get("addr_info", [])]
        if not found or any(entry.get("tentative") for entry in found):
            return False
    return True


def elements_of(name):
    """The table's map elements recorded under the container's name (nft's own listing)."""
    return [line.strip() for line in nat_world.nft_ruleset().splitlines() if 'comment "%s"' % name in line]


def test_published_ports_reach_the_container_follow_it_and_go_with_it(ansible, world, echo_image, made, host_state):
    name = made("kbt-pweb")
    args = web(world, echo_image, name, ports=["8080:80", "5353:53/udp"])

    before = host_state()
    planned = ansible.module("container", args, check=True, diff=True)
    assert planned.changed and not planned.failed, planned.result
    assert "publish tcp 0.0.0.0:8080 -> 10.78.0.20:80 for %s (ports)" % name in planned.actions, planned.actions
    assert "publish udp 0.0.0.0:5353 -> 10.78.0.20:53 for %s (ports)" % name in planned.actions, planned.actions
    assert planned.diff["after"]["definition"]["ports"] == ["8080:80", "5353:53/udp"]
    assert host_state() == before, "check mode changed the host"

    first = ansible.module("container", args)
    assert first.changed and not first.failed, first.result
    assert [line for line in first.actions if line.startswith("publish ")] == [
        "publish tcp 0.0.0.0:8080 -> 10.78.0.20:80 for %s (ports)" % name,
        "publish udp 0.0.0.0:5353 -> 10.78.0.20:53 for %s (ports)" % name], first.actions
    assert len(elements_of(name)) == 2, nat_world.nft_ruleset()
    # From the host's 127.0.0.1, from another host (the uplink's far side, seen as itself: DNAT only), and from
    # a namespace on the same bridge (hairpin), over tcp; and udp from the other host.
    assert answers(None, "127.0.0.1", 8080).startswith("web ")
    assert answers(world.internet, world.host4, 8080) == "web 198.51.100.2"
    assert answers(world.internet, world.host4, 5353, "udp") == "web 198.51.100.2"
    assert answers(world.containers[0], world.host4, 8080).startswith("web ")

    again = ansible.module("container", args)
    assert not again.changed and again.actions == [], again.result

    moved = dict(args, ports=["8081:80"], ip="10.78.0.21")
    changed = ansible.module("container", moved, diff=True)
    assert changed.changed and not changed.failed, changed.result
    assert "unpublish tcp 0.0.0.0:8080 -> 10.78.0.20:80 of %s (no longer in ports)" % name in changed.actions
    assert "unpublish udp 0.0.0.0:5353 -> 10.78.0.20:53 of %s (no longer in ports)" % name in changed.actions
    assert "publish tcp 0.0.0.0:8081 -> 10.78.0.21:80 for %s (ports)" % name in changed.actions
    assert changed.diff["before"]["definition"]["ports"] == ["8080:80", "5353:53/udp"]
    assert changed.diff["after"]["definition"]["ports"] == ["8081:80"]
    assert answers(world.internet, world.host4, 8081) == "web 198.51.100.2", (changed.actions, evidence(name))
    assert ask(world.internet, world.host4, 8080, seconds=3).startswith("no answer")
    assert [element for element in elements_of(name) if "10.78.0.21" in element] == elements_of(name) != []

    stopped = ansible.module("container", dict(moved, state="stopped"))
    assert "unpublish tcp 0.0.0.0:8081 -> 10.78.0.21:80 of %s (the container is stopped)" % name in stopped.actions
    assert elements_of(name) == []
    started = ansible.module("container", dict(moved, state="started"))
    assert "publish tcp 0.0.0.0:8081 -> 10.78.0.21:80 for %s (ports)" % name in started.actions, started.actions

    gone = ansible.module("container", {"name": name, "state": "absent"})
    assert gone.actions[0] == "unpublish tcp 0.0.0.0:8081 -> 10.78.0.21:80 of %s (state=absent)" % name, gone.actions
    assert elements_of(name) == [] and "10.78.0.21" not in nat_world.nft_ruleset()


def test_a_port_held_by_another_container_and_ports_without_a_network_are_refused(ansible, world, echo_image, made,
                                                                                  host_state):
    holder = made("kbt-phold")
    held = ansible.module("container", web(world, echo_image, holder, ports=["127.0.0.1:9090:80"], ip="10.78.0.30"))
    assert held.changed and not held.failed, held.result
    # The veth ends' IPv6 link-local routes come after DAD: wait for that event before the snapshot.
    assert wait_until(lambda: ipv6_settled(holder), WAIT, 0.1), "the veth of %s never finished IPv6 DAD" % holder
    other = made("kbt-pother")
    before = host_state()
    clash = ansible.module("container", web(world, echo_image, other, ports=["9090:80"], ip="10.78.0.31"))
    assert clash.failed and not clash.changed, clash.result
    assert "host port 0.0.0.0:9090/tcp is already published by container %s" % holder in clash.msg, clash.msg
    no_network = ansible.module("container", web(world, echo_image, other, network="none", ip=None,
                                                 ports=["9091:80"]))
    assert no_network.failed and not no_network.changed, no_network.result
    assert "ports: container %s has no network (network: none)" % other in no_network.msg, no_network.msg
    assert host_state() == before
    assert not os.path.exists("/var/lib/kernelbox/containers/" + other)
    assert answers(None, "127.0.0.1", 9090).startswith("web ")
