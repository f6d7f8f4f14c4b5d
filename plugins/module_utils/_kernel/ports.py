# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: published ports, as users write them (pure logic, no kernel).

``parse_ports(values)`` turns what users write for ``docker run -p`` into
``PortSpec``s, or raises ``ValidationError`` naming the entry:

    "8080:80"                 host port 8080 on every host address -> container port 80, tcp
    "8080:80/tcp"             the same
    "5353:53/udp"             udp
    "127.0.0.1:8080:80"       only on one host address (IPv4 or IPv6)
    "[2001:db8::1]:8080:80"   IPv6 host address, in brackets (bare also works: "2001:db8::1:8080:80")
    "0.0.0.0:8080:80"         every IPv4 host address only; "[::]:8080:80" every IPv6 one only
    "9000-9005:9000-9005"     a range; both sides the same length ("9000-9005:8000-8005" shifts)
    {host_port: 8080, container_port: 80, host_ip: 127.0.0.1, protocol: udp}   the same as a dict

Refused: no host port ("80", "127.0.0.1::80": kernelbox never picks a random port, since a
port that changes on every run is not idempotent), port 0 or above 65535, a protocol other
than tcp and udp, ranges of different lengths, the IPv6 loopback (the kernel never routes
``::1`` to another interface, so no NAT can reach a container from it), and two entries of
one list that claim the same host port.

``expand(specs, addresses)`` turns specs into ``Mapping``s, one per host port and address
family, towards the container's address of that family.  ``conflicts()`` finds mappings of
another owner that claim the same host port; ``collapse()`` turns mappings back into ranges
for people to read.
"""

from __future__ import annotations

import ipaddress
import re
import typing as t
from dataclasses import dataclass

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

PROTOCOLS = ("tcp", "udp")
PORT_MIN, PORT_MAX = 1, 65535
_RANGE = re.compile(r"(?P<low>[0-9]+)(?:-(?P<high>[0-9]+))?")


@dataclass(frozen=True)
class PortSpec:
    """One entry as the user meant it: host port (range) -> container port (range)."""

    host_ip: t.Optional[str]  # None: every host address of every family the container has
    host_port: int
    host_port_end: int
    container_port: int
    container_port_end: int
    protocol: str

    @property
    def family(self) -> t.Optional[int]:
        """4 or 6 when the host address limits the family, else None."""
        return None if self.host_ip is None else ipaddress.ip_address(self.host_ip).version

    def text(self) -> str:
        """The canonical string form: '127.0.0.1:8080:80/tcp', '[::]:9000-9001:9000-9001/udp'."""
        host = "" if self.host_ip is None else "%s:" % _bracketed(self.host_ip)
        return "%s%s:%s/%s" % (host, _span(self.host_port, self.host_port_end),
                               _span(self.container_port, self.container_port_end), self.protocol)


@dataclass(frozen=True)
class Mapping:
    """One host port of one family forwarded to one container address and port."""

    family: int  # 4 or 6
    host_ip: t.Optional[str]  # None: every local address of the family
    protocol: str
    host_port: int
    address: str  # the container's address
    port: int
    owner: str = ""  # the container that holds it

    def claims_same_port(self, other: "Mapping") -> bool:
        """Both would take the same packets: same family, protocol and port, and one host address covers the other."""
        return (self.family == other.family and self.protocol == other.protocol
                and self.host_port == other.host_port
                and (self.host_ip is None or other.host_ip is None or self.host_ip == other.host_ip))

    def key(self) -> t.Tuple[int, t.Optional[str], str, int]:
        return self.family, self.host_ip, self.protocol, self.host_port

    def order(self) -> t.Tuple[str, int, str, str, int, str, int]:
        """Sort key: owner, family, host address (every address first), protocol, host port."""
        return self.owner, self.family, self.host_ip or "", self.protocol, self.host_port, self.address, self.port


def _bracketed(address: str) -> str:
    return "[%s]" % address if ":" in address else address


def _span(low: int, high: int) -> str:
    return str(low) if low == high else "%d-%d" % (low, high)


def host_label(family: int, host_ip: t.Optional[str]) -> str:
    """How a host address reads in a mapping: the family's wildcard when it is every address."""
    if host_ip is None:
        return "0.0.0.0" if family == 4 else "[::]"
    return _bracketed(host_ip)


# --- parsing ---------------------------------------------------------------------------------------------------

def _port_range(text: t.Any, entry: t.Any, side: str) -> t.Tuple[int, int]:
    value = str(text).strip()
    match = _RANGE.fullmatch(value)
    if not match:
        raise ValidationError("ports: %r: %s port %r is not a port number or a range such as 9000-9005"
                              % (entry, side, value))
    low = int(match.group("low"))
    high = int(match.group("high")) if match.group("high") else low
    for number in (low, high):
        if not PORT_MIN <= number <= PORT_MAX:
            raise ValidationError("ports: %r: %s port %d is outside %d..%d" % (entry, side, number, PORT_MIN, PORT_MAX))
    if high < low:
        raise ValidationError("ports: %r: %s port range %s runs backwards" % (entry, side, value))
    return low, high


def _protocol(text: t.Any, entry: t.Any) -> str:
    value = str(text).strip().lower()
    if value not in PROTOCOLS:
        raise ValidationError("ports: %r: protocol %r is not supported; use tcp or udp" % (entry, str(text)))
    return value


def _host_ip(text: t.Any, entry: t.Any) -> t.Optional[str]:
    value = str(text).strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError("ports: %r: host address %r is not an IPv4 or IPv6 address" % (entry, str(text)))
    if address.version == 6 and address.is_loopback:
        raise ValidationError("ports: %r: the kernel never routes the IPv6 loopback (::1) to another interface, "
                              "so no NAT rule can reach a container from it; use [::]:PORT or a host address"
                              % (entry,))
    if address.version == 6 and address.ipv4_mapped is not None:
        raise ValidationError("ports: %r: %s is an IPv4-mapped IPv6 address; give the IPv4 address" % (entry, value))
    if address.is_multicast:
        raise ValidationError("ports: %r: %s is a multicast address, not a host address" % (entry, value))
    return str(address)


def _split_string(entry: str) -> t.Tuple[t.Optional[str], str, str, str]:
    """(host_ip, host ports, container ports, protocol) of '[ip:]host:container[/proto]'."""
    body, _slash, protocol = entry.strip().partition("/")
    protocol = protocol if _slash else "tcp"
    if body.startswith("["):
        address, bracket, rest = body[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValidationError("ports: %r: an IPv6 host address in brackets must be followed by :HOST:CONTAINER"
                                  % entry)
        parts = rest[1:].split(":")
        if len(parts) != 2:
            raise ValidationError("ports: %r: expected [ADDRESS]:HOST_PORT:CONTAINER_PORT" % entry)
        return address, parts[0], parts[1], protocol
    parts = body.rsplit(":", 2)
    if len(parts) == 1:
        raise ValidationError("ports: %r: give the host port too, as HOST_PORT:CONTAINER_PORT (kernelbox never "
                              "picks a random host port: it would change on every run)" % entry)
    if len(parts) == 2:
        return None, parts[0], parts[1], protocol
    return parts[0], parts[1], parts[2], protocol


def parse_port(entry: t.Any) -> PortSpec:
    """One entry, a string or a dict (host_ip, host_port, container_port, protocol)."""
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"host_ip", "host_port", "container_port", "protocol"})
        if unknown:
            raise ValidationError("ports: %r: unknown keys %s" % (entry, ", ".join(unknown)))
        if entry.get("container_port") in (None, ""):
            raise ValidationError("ports: %r: container_port is required" % (entry,))
        host_ip_text = entry.get("host_ip")
        host_text, container_text = entry.get("host_port"), entry["container_port"]
        protocol_text = entry.get("protocol") or "tcp"
    elif isinstance(entry, (str, int)) and not isinstance(entry, bool):
        host_ip_text, host_text, container_text, protocol_text = _split_string(str(entry))
    else:
        raise ValidationError("ports: %r must be a string such as '8080:80' or a dict" % (entry,))
    if host_text in (None, ""):
        raise ValidationError("ports: %r: give the host port (kernelbox never picks a random host port: it would "
                              "change on every run)" % (entry,))
    host_low, host_high = _port_range(host_text, entry, "host")
    container_low, container_high = _port_range(container_text, entry, "container")
    if host_high - host_low != container_high - container_low:
        raise ValidationError("ports: %r: the host range has %d ports and the container range %d; they must match"
                              % (entry, host_high - host_low + 1, container_high - container_low + 1))
    host_ip = _host_ip(host_ip_text, entry) if host_ip_text not in (None, "") else None
    return PortSpec(host_ip, host_low, host_high, container_low, container_high, _protocol(protocol_text, entry))


def parse_ports(values: t.Optional[t.Iterable[t.Any]]) -> t.List[PortSpec]:
    """Every entry parsed, in order; two entries that claim the same host port are refused."""
    specs = [parse_port(value) for value in (values or [])]
    for index, spec in enumerate(specs):
        for other in specs[:index]:
            if _specs_overlap(spec, other):
                raise ValidationError("ports: %r and %r both claim host port %s/%s"
                                      % (other.text(), spec.text(), _span(max(spec.host_port, other.host_port),
                                                                          min(spec.host_port_end, other.host_port_end)),
                                         spec.protocol))
    return specs


def _specs_overlap(one: PortSpec, two: PortSpec) -> bool:
    if one.protocol != two.protocol or one.host_port > two.host_port_end or two.host_port > one.host_port_end:
        return False
    if one.family is not None and two.family is not None and one.family != two.family:
        return False
    return one.host_ip is None or two.host_ip is None or one.host_ip == two.host_ip or \
        ipaddress.ip_address(one.host_ip).is_unspecified or ipaddress.ip_address(two.host_ip).is_unspecified


# --- mappings --------------------------------------------------------------------------------------------------

def container_addresses(values: t.Iterable[t.Any], option: str = "addresses") -> t.Dict[int, str]:
    """{4: '10.88.0.10', 6: 'fd00::10'} from addresses with or without a prefix; one per family."""
    found: t.Dict[int, str] = {}
    for value in values or []:
        text = str(value).strip()
        try:
            address = ipaddress.ip_interface(text).ip
        except ValueError:
            raise ValidationError("%s: %r is not an IPv4 or IPv6 address" % (option, value))
        if address.is_unspecified or address.is_multicast or address.is_loopback:
            raise ValidationError("%s: %s cannot be a container's address" % (option, address))
        if address.version in found and found[address.version] != str(address):
            raise ValidationError("%s: give one IPv%d address per container, got %s and %s"
                                  % (option, address.version, found[address.version], address))
        found[address.version] = str(address)
    return found


def expand(specs: t.Iterable[PortSpec], addresses: t.Mapping[int, str], owner: str = "") -> t.List[Mapping]:
    """One Mapping per host port and family; a spec bound to a family the container lacks is refused."""
    mappings = []
    for spec in specs:
        family = spec.family
        if family is not None and family not in addresses:
            raise ValidationError("ports: %r listens on an IPv%d host address, but the container has no IPv%d address "
                                  "(addresses: %s)" % (spec.text(), family, family,
                                                       ", ".join(addresses.values()) or "none"))
        families = [family] if family is not None else sorted(addresses)
        host_ip = None if spec.host_ip is None or ipaddress.ip_address(spec.host_ip).is_unspecified else spec.host_ip
        for version in families:
            for offset in range(spec.host_port_end - spec.host_port + 1):
                mappings.append(Mapping(version, host_ip, spec.protocol, spec.host_port + offset,
                                        addresses[version], spec.container_port + offset, owner))
    return sorted(set(mappings), key=Mapping.order)


def conflicts(wanted: t.Iterable[Mapping], held: t.Iterable[Mapping], owner: str) -> t.List[t.Tuple[Mapping, Mapping]]:
    """(wanted, held) pairs where a mapping of another owner already takes the same packets."""
    others = [mapping for mapping in held if mapping.owner != owner]
    return [(mine, theirs) for mine in wanted for theirs in others if mine.claims_same_port(theirs)]


def describe(mapping: Mapping) -> str:
    return "%s %s:%d -> %s:%d" % (mapping.protocol, host_label(mapping.family, mapping.host_ip), mapping.host_port,
                                  _bracketed(mapping.address), mapping.port)


@dataclass(frozen=True)
class Published:
    """Consecutive mappings read as one range: what people write, and what ``docker ps`` shows."""

    family: int
    host_ip: t.Optional[str]
    protocol: str
    host_port: int
    host_port_end: int
    address: str
    port: int
    port_end: int
    owner: str

    def text(self) -> str:
        return "%s %s:%s -> %s:%s" % (self.protocol, host_label(self.family, self.host_ip),
                                      _span(self.host_port, self.host_port_end), _bracketed(self.address),
                                      _span(self.port, self.port_end))

    def as_dict(self) -> t.Dict[str, t.Any]:
        return {"protocol": self.protocol, "host_ip": host_label(self.family, self.host_ip).strip("[]"),
                "host_port": self.host_port, "host_port_end": self.host_port_end,
                "container_ip": self.address, "container_port": self.port, "container_port_end": self.port_end,
                "container": self.owner}


def collapse(mappings: t.Iterable[Mapping]) -> t.List[Published]:
    """Runs of consecutive host ports to consecutive container ports, sorted (owner, family, address, protocol, port)."""
    ordered = sorted(mappings, key=lambda m: (m.owner, m.family, m.host_ip or "", m.protocol, m.address, m.host_port))
    result: t.List[Published] = []
    for mapping in ordered:
        last = result[-1] if result else None
        if (last is not None and (last.owner, last.family, last.host_ip, last.protocol, last.address)
                == (mapping.owner, mapping.family, mapping.host_ip, mapping.protocol, mapping.address)
                and mapping.host_port == last.host_port_end + 1 and mapping.port == last.port_end + 1):
            result[-1] = Published(last.family, last.host_ip, last.protocol, last.host_port, mapping.host_port,
                                   last.address, last.port, mapping.port, last.owner)
        else:
            result.append(Published(mapping.family, mapping.host_ip, mapping.protocol, mapping.host_port,
                                    mapping.host_port, mapping.address, mapping.port, mapping.port, mapping.owner))
    return result
