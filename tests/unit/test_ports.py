# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Published ports as users write them: parsing, expansion, clashes and ranges (pure logic)."""

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import ports
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.ports import Mapping, PortSpec
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


@pytest.mark.parametrize("entry, expected", [
    ("8080:80", PortSpec(None, 8080, 8080, 80, 80, "tcp")),
    ("8080:80/tcp", PortSpec(None, 8080, 8080, 80, 80, "tcp")),
    ("5353:53/UDP", PortSpec(None, 5353, 5353, 53, 53, "udp")),
    ("127.0.0.1:8080:80", PortSpec("127.0.0.1", 8080, 8080, 80, 80, "tcp")),
    ("0.0.0.0:8080:80", PortSpec("0.0.0.0", 8080, 8080, 80, 80, "tcp")),
    ("[2001:db8::1]:8080:80/udp", PortSpec("2001:db8::1", 8080, 8080, 80, 80, "udp")),
    ("2001:db8:0::1:8080:80", PortSpec("2001:db8::1", 8080, 8080, 80, 80, "tcp")),
    ("[::]:8443:443", PortSpec("::", 8443, 8443, 443, 443, "tcp")),
    ("9000-9005:9000-9005", PortSpec(None, 9000, 9005, 9000, 9005, "tcp")),
    ("9000-9001:8000-8001/udp", PortSpec(None, 9000, 9001, 8000, 8001, "udp")),
    (" 1:65535 ", PortSpec(None, 1, 1, 65535, 65535, "tcp")),
    ({"host_port": 2222, "container_port": 22}, PortSpec(None, 2222, 2222, 22, 22, "tcp")),
    ({"host_port": "7000-7001", "container_port": "7000-7001", "host_ip": "10.0.0.1", "protocol": "udp"},
     PortSpec("10.0.0.1", 7000, 7001, 7000, 7001, "udp")),
])
def test_parse_forms(entry, expected):
    assert ports.parse_port(entry) == expected


@pytest.mark.parametrize("entry, message", [
    ("0:80", "host port 0 is outside 1..65535"),
    ("8080:70000", "container port 70000 is outside 1..65535"),
    ("8080:80/sctp", "protocol 'sctp' is not supported; use tcp or udp"),
    ("80", "give the host port too"),
    ("127.0.0.1::80", "give the host port"),
    ("9000-9005:80", "the host range has 6 ports and the container range 1"),
    ("9005-9000:9005-9000", "runs backwards"),
    ("[::1]:8080:80", "IPv6 loopback"),
    ("example.com:8080:80", "is not an IPv4 or IPv6 address"),
    ("224.0.0.1:8080:80", "multicast"),
    ("[::ffff:10.0.0.1]:8080:80", "IPv4-mapped"),
    ("a:b", "host port 'a' is not a port number"),
    ({"host_port": 80}, "container_port is required"),
    ({"container_port": 80, "bogus": 1}, "unknown keys bogus"),
    (True, "must be a string"),
    ("[2001:db8::1]8080:80", "must be followed by :HOST:CONTAINER"),
])
def test_parse_refusals(entry, message):
    with pytest.raises(ValidationError) as error:
        ports.parse_port(entry)
    assert message in str(error.value) and str(error.value).startswith("ports: ")


def test_one_list_may_not_claim_a_port_twice():
    with pytest.raises(ValidationError, match="both claim host port 9003/tcp"):
        ports.parse_ports(["9000-9005:9000-9005", "127.0.0.1:9003:80"])
    with pytest.raises(ValidationError, match="both claim host port 8080/tcp"):
        ports.parse_ports(["0.0.0.0:8080:80", "127.0.0.1:8080:81"])
    # Different protocols, families or addresses do not clash.
    assert len(ports.parse_ports(["8080:80", "8080:80/udp"])) == 2
    assert len(ports.parse_ports(["0.0.0.0:8080:80", "[::]:8080:81"])) == 2
    assert len(ports.parse_ports(["127.0.0.1:8080:80", "127.0.0.2:8080:81"])) == 2


def test_canonical_text():
    assert ports.parse_port("[2001:db8:0::1]:9000-9001:80-81/UDP").text() == "[2001:db8::1]:9000-9001:80-81/udp"
    assert ports.parse_port("8080:80").text() == "8080:80/tcp"


ADDRESSES = {4: "10.88.0.10", 6: "fd00::10"}


def test_expand_per_family_and_port():
    mappings = ports.expand(ports.parse_ports(["8080:80", "127.0.0.1:53:5353/udp", "[::]:9000-9001:9100-9101"]),
                            ADDRESSES, "web")
    assert [ports.describe(m) for m in mappings] == [
        "tcp 0.0.0.0:8080 -> 10.88.0.10:80", "udp 127.0.0.1:53 -> 10.88.0.10:5353",
        "tcp [::]:8080 -> [fd00::10]:80", "tcp [::]:9000 -> [fd00::10]:9100", "tcp [::]:9001 -> [fd00::10]:9101"]
    assert {m.owner for m in mappings} == {"web"}
    # A port without a host address goes to the families the container has, and only those.
    assert [m.family for m in ports.expand(ports.parse_ports(["8080:80"]), {4: "10.88.0.10"})] == [4]


def test_expand_refuses_a_family_the_container_lacks():
    with pytest.raises(ValidationError, match="IPv6 host address, but the container has no IPv6 address"):
        ports.expand(ports.parse_ports(["[2001:db8::1]:8080:80"]), {4: "10.88.0.10"})


def test_container_addresses():
    assert ports.container_addresses(["10.88.0.10/24", "fd00:0::10"]) == ADDRESSES
    with pytest.raises(ValidationError, match="one IPv4 address per container"):
        ports.container_addresses(["10.88.0.10", "10.88.0.11"])
    with pytest.raises(ValidationError, match="cannot be a container's address"):
        ports.container_addresses(["127.0.0.1"])
    with pytest.raises(ValidationError, match="not an IPv4 or IPv6 address"):
        ports.container_addresses(["web"])


def test_conflicts_name_the_holder_and_respect_wildcards():
    held = [Mapping(4, None, "tcp", 8080, "10.88.0.11", 80, "db"), Mapping(4, "127.0.0.1", "udp", 53, "10.88.0.11", 53, "db"),
            Mapping(4, None, "tcp", 9000, "10.88.0.10", 9000, "web")]
    wanted = ports.expand(ports.parse_ports(["127.0.0.1:8080:80", "53:53/udp", "9000:9000", "8081:80"]), ADDRESSES, "web")
    clashes = ports.conflicts(wanted, held, "web")
    assert sorted((ports.describe(mine), theirs.owner) for mine, theirs in clashes) == [
        ("tcp 127.0.0.1:8080 -> 10.88.0.10:80", "db"), ("udp 0.0.0.0:53 -> 10.88.0.10:53", "db")]
    # Its own ports never clash with themselves; names are exact ("web" is not "web2").
    assert ports.conflicts(wanted, [Mapping(4, None, "tcp", 8081, "10.0.0.9", 80, "web2")], "web") != []


def test_collapse_makes_ranges_back():
    mappings = ports.expand(ports.parse_ports(["9000-9002:8000-8002", "9003:9999", "9004:8004"]), {4: "10.88.0.10"}, "web")
    assert [p.text() for p in ports.collapse(mappings)] == [
        "tcp 0.0.0.0:9000-9002 -> 10.88.0.10:8000-8002", "tcp 0.0.0.0:9003 -> 10.88.0.10:9999",
        "tcp 0.0.0.0:9004 -> 10.88.0.10:8004"]
    assert ports.collapse(mappings)[0].as_dict() == {
        "protocol": "tcp", "host_ip": "0.0.0.0", "host_port": 9000, "host_port_end": 9002, "container_ip": "10.88.0.10",
        "container_port": 8000, "container_port_end": 8002, "container": "web"}
