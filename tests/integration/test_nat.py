# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""nat module: masquerade, forwarding, isolation and published ports, proven by real traffic in the sandbox.

The world (harness/nat_world.py): the sandbox is the host; two plain network namespaces on a bridge stand in
for containers; a namespace behind the host's uplink veth stands in for the internet and for "another host".
Servers say whom they saw, so masquerade is proven from the far side; nft, conntrack and /proc are the
independent readers.
"""

import subprocess

import pytest

from harness import nat_world
from harness.net import play, task
from harness.nat_world import ask, serving

PREFIX = "kbtn"
PORTS = ("8080:80", "5353:53/udp", "9000-9001:9100-9101")


@pytest.fixture(scope="module")
def world():
    built = nat_world.build(PREFIX)
    yield built
    nat_world.destroy(built)


def network(world, **options):
    return dict({"bridge": world.bridge}, **options)


def publish(world, container, ports=PORTS, **options):
    addresses = [world.address(container) + "/24", world.address(container, 6) + "/64"]
    return dict({"container": container, "addresses": addresses, "ports": list(ports)}, **options)


def teardown_tasks(world):
    return [task("unpublish " + name, "nat", {"container": name, "state": "absent"}) for name in world.containers] + [
        task("remove network", "nat", {"bridge": world.bridge, "state": "absent"})]


def test_network_lifecycle_check_mode_diff_and_idempotence(any_ansible, world, host_state):
    before = host_state()
    planned = any_ansible.module("nat", network(world), check=True, diff=True)
    assert planned.changed and planned["table_exists"] is False
    assert planned.actions[0] == "create table inet kernelbox with its chains, maps and fixed rules (for network %s)" % (
        world.bridge)
    assert "add rule postrouting: %s: masquerade 10.78.0.0/24 leaving by another interface (missing)" % world.bridge in (
        planned.actions)
    assert "set net.ipv4.ip_forward = 1 (was 0; network %s needs it)" % world.bridge in planned.actions
    assert planned.diff["before"]["rules"] == [] and len(planned.diff["after"]["rules"]) == 10
    assert planned.diff["after"]["sysctls"]["net.ipv4.ip_forward"] == "1"
    assert host_state() == before, "check mode changed the host"

    run = any_ansible.playbook(play(task("network", "nat", network(world)), task("again", "nat", network(world))),
                               diff=True)
    first, again = run.named("network"), run.named("again")
    assert first.changed and first.actions == planned.actions
    assert first["sysctls_before"]["net.ipv4.ip_forward"] == "0" and first["sysctls"] == {
        "net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1",
        "net.ipv4.conf.%s.route_localnet" % world.bridge: "1"}
    assert not again.changed and again.actions == [] and again["rules"] == first["rules"]
    assert first["subnets"] == [world.subnet4, world.subnet6]
    ruleset = nat_world.nft_ruleset()
    assert 'ip saddr 10.78.0.0/24 ip daddr != 10.78.0.0/24 oifname != "%s" masquerade' % world.bridge in ruleset
    assert nat_world.sysctl("net.ipv4.ip_forward") == "1" and nat_world.sysctl("net.ipv6.conf.all.forwarding") == "1"
    assert nat_world.sysctl("net.ipv4.conf.%s.route_localnet" % world.bridge) == "1"

    # Options off: their rules go, and the sysctls nobody needs any more are put back.
    narrowed = any_ansible.module("nat", network(world, subnets=[world.subnet4], localhost=False, isolate=False),
                                  diff=True)
    assert "put net.ipv6.conf.all.forwarding back to 0" in " ".join(narrowed.actions)
    assert not [rule for rule in narrowed["rules"] if "127.0.0.0/8" in rule or rule.startswith("isolate:")]
    assert nat_world.sysctl("net.ipv6.conf.all.forwarding") == "0"

    gone = any_ansible.playbook(play(task("remove", "nat", network(world, state="absent")),
                                     task("remove again", "nat", network(world, state="absent"))))
    assert gone.named("remove").actions[-1] == "delete table inet kernelbox (nothing of kernelbox's is left in it)"
    assert not gone.named("remove again").changed
    assert "kernelbox" not in nat_world.nft_ruleset() and nat_world.sysctl("net.ipv4.ip_forward") == "0"


def test_masquerade_is_seen_from_the_internet(ansible, world):
    """Containers reach an address outside the host, and it sees the host's address, never the container's."""
    try:
        assert ansible.module("nat", network(world)).changed
        with serving(world.internet, "internet", "7000/tcp", "7000/udp"):
            for proto in ("tcp", "udp"):
                assert ask(world.containers[1], world.remote4, 7000, proto) == "internet %s" % world.host4
                assert ask(world.containers[1], world.remote6, 7000, proto) == "internet %s" % world.host6
    finally:
        assert ansible.module("nat", network(world, state="absent")).changed


def test_published_ports_from_outside_from_localhost_and_hairpin(ansible, world, host_state):
    c1, c2 = world.containers
    run = ansible.playbook(play(task("network", "nat", network(world)),
                                task("ports", "nat", publish(world, c1)),
                                task("ports again", "nat", publish(world, c1))), diff=True)
    try:
        ports = run.named("ports")
        assert ports.actions == [
            "publish tcp 0.0.0.0:8080 -> 10.78.0.11:80 for %s (new)" % c1,
            "publish tcp 0.0.0.0:9000-9001 -> 10.78.0.11:9100-9101 for %s (new)" % c1,
            "publish udp 0.0.0.0:5353 -> 10.78.0.11:53 for %s (new)" % c1,
            "publish tcp [::]:8080 -> [fd78::11]:80 for %s (new)" % c1,
            "publish tcp [::]:9000-9001 -> [fd78::11]:9100-9101 for %s (new)" % c1,
            "publish udp [::]:5353 -> [fd78::11]:53 for %s (new)" % c1,
            "forget untranslated udp flows to the 2 newly published udp ports of %s (a flow that began before the "
            "port was published would keep bypassing it)" % c1]
        assert ports.diff == {"before": {"published": []}, "after": {"published": [
            action.split(" for ")[0][len("publish "):] for action in ports.actions[:6]]}}
        assert not run.named("ports again").changed
        assert 'tcp . 8080 comment "%s" : 10.78.0.11 . 80' % c1 in nat_world.nft_ruleset()

        with serving(c1, "c1", "80/tcp", "53/udp", "9101/tcp"):
            for proto, port in (("tcp", 8080), ("udp", 5353)):
                # From another host, IPv4 and IPv6: the container sees the client as it is (no SNAT).
                assert ask(world.internet, world.host4, port, proto) == "c1 198.51.100.2"
                assert ask(world.internet, world.host6, port, proto) == "c1 2001:db8:100::2"
                # From the host itself: 127.0.0.1 (route_localnet, masqueraded to the bridge's address) and its
                # own addresses.
                assert ask(None, "127.0.0.1", port, proto) == "c1 %s" % world.gateway4
                assert ask(None, world.host6, port, proto) == "c1 %s" % world.host6
                # Hairpin: another container on the same bridge, through the host's addresses.
                assert ask(c2, world.host4, port, proto) == "c1 %s" % world.gateway4
                assert ask(c2, world.gateway6, port, proto) == "c1 %s" % world.gateway6
            assert ask(world.internet, world.host4, 9001) == "c1 198.51.100.2"  # the range, shifted
            # The kernel never routes ::1 out of the host: refused at once, never a hang.
            assert "refused" in ask(None, "::1", 8080)
    finally:
        ansible.playbook(play(*teardown_tasks(world)))


def _attacker(world):
    """One more namespace on the bridge that sends to 127.0.0.2 through the host, as a hostile container could."""
    name = world.prefix + "-x"
    for argv in (["ip", "netns", "add", name],
                 ["ip", "link", "add", name + "h", "type", "veth", "peer", "name", "eth0", "netns", name],
                 ["ip", "link", "set", name + "h", "master", world.bridge, "up"],
                 ["ip", "-n", name, "link", "set", "eth0", "up"],
                 ["ip", "-n", name, "addr", "add", "10.78.0.13/24", "dev", "eth0"],
                 ["ip", "-n", name, "route", "add", "127.0.0.2/32", "via", world.gateway4, "dev", "eth0"],
                 ["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1",
                  "net.ipv4.conf.eth0.route_localnet=1"]):
        subprocess.run(argv, check=True)
    return name


def test_isolation_and_the_localhost_guard(ansible, world):
    """A machine that routes the subnet through the host reaches published ports only; a container cannot use the
    bridge's route_localnet to reach what listens on the host's loopback."""
    c1, c2 = world.containers
    subprocess.run(["ip", "-n", world.internet, "route", "add", world.subnet4, "via", world.host4], check=True)
    attacker = _attacker(world)
    try:
        run = ansible.playbook(play(task("network", "nat", network(world)),
                                    task("ports", "nat", publish(world, c1, ["8080:80"]))))
        assert run.rc == 0, run.stdout
        with serving(c1, "c1", "80/tcp", "81/tcp"), serving(None, "host-loopback", "7070/tcp"):
            assert ask(world.internet, world.host4, 8080) == "c1 198.51.100.2"  # published
            assert ask(world.internet, world.address(c1), 81, seconds=3).startswith("no answer")  # routed: dropped
            assert ask(c2, world.address(c1), 81) == "c1 %s" % world.address(c2)  # same bridge: never isolated
            assert ask(attacker, "127.0.0.2", 7070, seconds=3).startswith("no answer")  # the guard
            # Without the guard the attack works: the rule is what stops it.  The next run puts it back.
            handle = [line for line in nat_world.nft_ruleset_handles().splitlines() if "127.0.0.0/8 drop" in line]
            subprocess.run(["nft", "delete", "rule", "inet", "kernelbox", "guard", "handle",
                            handle[0].rsplit(" ", 1)[1]], check=True)
            assert ask(attacker, "127.0.0.2", 7070) == "host-loopback 10.78.0.13"
            repaired = ansible.module("nat", network(world))
            assert repaired.actions == ["add rule guard: %s: drop 127.0.0.0/8 from the bridge (route_localnet is on) "
                                        "(missing)" % world.bridge]
            assert ask(attacker, "127.0.0.2", 7070, seconds=3).startswith("no answer")
    finally:
        subprocess.run(["ip", "-n", world.internet, "route", "del", world.subnet4], check=False)
        subprocess.run(["ip", "link", "del", attacker + "h"], check=False)
        subprocess.run(["ip", "netns", "del", attacker], check=False)
        ansible.playbook(play(*teardown_tasks(world)))


def test_clashes_and_bad_input_fail_and_change_nothing(ansible, world):
    c1, c2 = world.containers
    assert ansible.playbook(play(task("network", "nat", network(world)), task("ports", "nat", publish(world, c1)))).rc == 0
    try:
        before = (nat_world.nft_ruleset(), nat_world.sysctl("net.ipv4.ip_forward"))
        bad = {
            "clash": publish(world, c2, ["127.0.0.1:8080:80"]),
            "port 0": publish(world, c2, ["0:80"]),
            "port 70000": publish(world, c2, ["7000:70000"]),
            "no address": {"container": c2, "ports": ["7000:80"]},
            "sctp": publish(world, c2, ["7000:80/sctp"]),
            "not on the host": publish(world, c2, ["192.0.2.99:7000:80"]),
            "no such bridge": {"bridge": PREFIX + "-nobr"},
        }
        run = ansible.playbook(play(*[task(name, "nat", args, ignore_errors=True) for name, args in bad.items()]))
        msgs = {name: run.named(name).msg for name in bad}
        assert all(run.named(name).failed and not run.named(name).changed for name in bad), msgs
        assert msgs["clash"] == ("ports: host port 127.0.0.1:8080/tcp is already published by container %s "
                                 "(tcp 0.0.0.0:8080 -> 10.78.0.11:80)" % c1)
        assert "host port 0 is outside 1..65535" in msgs["port 0"]
        assert "container port 70000 is outside 1..65535" in msgs["port 70000"]
        assert "without the container's address" in msgs["no address"]
        assert "protocol 'sctp' is not supported; use tcp or udp" in msgs["sctp"]
        assert "192.0.2.99 is not an address of this host" in msgs["not on the host"]
        assert "bridge %s-nobr does not exist" % PREFIX in msgs["no such bridge"]
        assert (nat_world.nft_ruleset(), nat_world.sysctl("net.ipv4.ip_forward")) == before
    finally:
        ansible.playbook(play(*teardown_tasks(world)))


def test_unpublishing_forgets_conntrack_flows(ansible, world):
    """A UDP flow keeps its NAT while packets come; moving a port to another container must not leave it with the
    old one, nor may a flow that began before the port was published bypass it."""
    c1, c2 = world.containers
    sport = 40053
    try:
        assert ansible.playbook(play(task("network", "nat", network(world)),
                                     task("c1 ports", "nat", publish(world, c1, ["5353:53/udp"])))).rc == 0
        with serving(c1, "c1", "53/udp"), serving(c2, "c2", "53/udp", "54/udp"):
            assert ask(world.internet, world.host4, 5353, "udp", sport=sport) == "c1 198.51.100.2"
            assert "dport=5353 src=10.78.0.11" in nat_world.conntrack("-p", "udp")
            # A flow to 5354 before anything is published there: untranslated, unanswered.
            assert ask(world.internet, world.host4, 5354, "udp", seconds=2, sport=sport).startswith("no answer")
            assert "dport=5354" in nat_world.conntrack("-p", "udp")
            moved = ansible.playbook(play(task("c1 gone", "nat", {"container": c1, "state": "absent"}),
                                          task("c2 ports", "nat", publish(world, c2, ["5353:53/udp", "5354:54/udp"]))))
            assert moved.named("c1 gone").actions[-1] == (
                "forget the conntrack flows of the 2 unpublished ports of %s (established flows would keep reaching "
                "the old address)" % c1)
            assert "src=10.78.0.11" not in nat_world.conntrack("-p", "udp")
            # Same source port, so the same flow: it now reaches c2, on both ports.
            assert ask(world.internet, world.host4, 5353, "udp", sport=sport) == "c2 198.51.100.2"
            assert ask(world.internet, world.host4, 5354, "udp", sport=sport) == "c2 198.51.100.2"
    finally:
        ansible.playbook(play(*teardown_tasks(world)))


def test_a_forward_policy_of_drop_elsewhere_is_reported_with_its_fix(ansible, world):
    """iptables -P FORWARD DROP (what Docker sets): every base chain of the hook must accept, so container traffic
    is dropped whatever kernelbox's table says; the module says so, names the fix, and the fix works."""
    c2 = world.containers[1]
    subprocess.run(["iptables", "-P", "FORWARD", "DROP"], check=True)
    try:
        result = ansible.module("nat", network(world))
        assert result["forward_blocked_by"] == ["ip filter FORWARD (policy drop)"]
        warning = " ".join(result.get("warnings", []))
        fix = "iptables -I FORWARD -i %s -j ACCEPT; iptables -I FORWARD -o %s -m conntrack --ctstate " \
              "RELATED,ESTABLISHED,DNAT -j ACCEPT" % (world.bridge, world.bridge)
        assert "ip filter FORWARD (policy drop)" in warning and fix in warning, warning
        with serving(world.internet, "internet", "7000/tcp"):
            assert ask(c2, world.remote4, 7000, seconds=3).startswith("no answer")  # dropped by the other table
            for command in fix.split("; "):
                subprocess.run(command.split(), check=True)
            assert ask(c2, world.remote4, 7000) == "internet %s" % world.host4
        # The other table is never touched by the module: its rules are exactly the two the fix added.
        listing = subprocess.run(["iptables", "-S", "FORWARD"], stdout=subprocess.PIPE, text=True, check=True).stdout
        assert len([line for line in listing.splitlines() if line.startswith("-A")]) == 2
    finally:
        subprocess.run(["iptables", "-F", "FORWARD"], check=False)
        subprocess.run(["iptables", "-P", "FORWARD", "ACCEPT"], check=False)
        subprocess.run(["nft", "delete", "table", "ip", "filter"], check=False)
        ansible.playbook(play(*teardown_tasks(world)))
