# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: the host's nftables table for container networks, ``inet kernelbox``.

kernelbox owns this one table and never reads or writes a rule of another one
(it only lists other tables' base chains, to warn about a forward hook that
drops).  Inside it::

    table inet kernelbox {
      map ports4 / ports6        host address . protocol . port : container address . port   (published ports
      map ports4any / ports6any  protocol . port : container address . port                   on one / every address)
      chain prerouting   nat prerouting -100    fib daddr type local jump published
      chain output       nat output -100        ip6 daddr ::1 return; fib daddr type local jump published
      chain published                           dnat through the four maps (the specific address first)
      chain postrouting  nat postrouting 100    per network: masquerade, hairpin, localhost
      chain forward      filter forward 0       jump isolate; per network: accept from / back to / published
      chain isolate                             per network: drop what is neither a reply nor published
      chain guard        filter prerouting -300 per network: drop 127.0.0.0/8 arriving from the bridge
    }

Who made what is recorded in the kernel itself, so a crash can never leave a
separate record out of date:

* every rule carries the comment ``OWNER: what #DIGEST``: OWNER is a bridge
  name (interface names never hold ':' or spaces) or ``kernelbox table`` for
  the fixed rules above; DIGEST is the first 8 hex digits of the SHA-256 of
  the rule's chain and expression, so a rule this code would now write
  differently is replaced, never kept by its name;
* every published port is one map element whose comment is the container's name.

Changes are built as libnftables JSON commands and applied in one transaction
per run (``Transaction``); reading is one ``list table``.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import time
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts, ports
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import nftables
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

FAMILY = "inet"
TABLE = "kernelbox"
TABLE_OWNER = "kernelbox table"
LOOPBACK_NET4 = "127.0.0.0/8"
HAIRPIN_LABEL = "hairpin: masquerade published ports reached from "

# name -> (type, hook, priority) for base chains; None for regular chains.  Creation order matters: a
# jump's target must exist before the rule that jumps.
CHAINS: t.Dict[str, t.Optional[t.Tuple[str, str, int]]] = {
    "published": None,
    "isolate": None,
    "prerouting": ("nat", "prerouting", -100),  # NF_IP_PRI_NAT_DST
    "output": ("nat", "output", -100),
    "postrouting": ("nat", "postrouting", 100),  # NF_IP_PRI_NAT_SRC
    "forward": ("filter", "forward", 0),
    "guard": ("filter", "prerouting", -300),  # NF_IP_PRI_RAW: before conntrack and before any NAT
}
MAPS: t.Dict[str, t.Tuple[int, bool]] = {  # name -> (family, keyed by host address)
    "ports4": (4, True), "ports4any": (4, False), "ports6": (6, True), "ports6any": (6, False),
}


def _map_for(family: int, keyed_by_address: bool) -> str:
    return "ports%d%s" % (family, "" if keyed_by_address else "any")


def map_name(family: int, host_ip: t.Optional[str]) -> str:
    """The map a mapping lives in: keyed by host address, or by port alone when it is every address."""
    return _map_for(family, host_ip is not None)


# --- expressions (libnftables-json(5)) --------------------------------------------------------------------------

def _meta(key: str) -> t.Dict[str, t.Any]:
    return {"meta": {"key": key}}


def _payload(protocol: str, name: str) -> t.Dict[str, t.Any]:
    return {"payload": {"protocol": protocol, "field": name}}


def _match(left: t.Any, right: t.Any, op: str = "==") -> t.Dict[str, t.Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix(network: str) -> t.Dict[str, t.Any]:
    net = ipaddress.ip_network(network)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _ip(network: str) -> str:
    return "ip" if ipaddress.ip_network(network).version == 4 else "ip6"


def _no_bit(key: str, bits: t.Any) -> t.Dict[str, t.Any]:
    """``ct KEY & BITS == 0``: none of the flags set (nft's own ``!=`` compares the whole value)."""
    return _match({"&": [{"ct": {"key": key}}, bits]}, 0)


def _dnat_through(family: int, keyed_by_address: bool) -> t.List[t.Dict[str, t.Any]]:
    ip = "ip" if family == 4 else "ip6"
    key = [_meta("l4proto"), _payload("th", "dport")]
    if keyed_by_address:
        key.insert(0, _payload(ip, "daddr"))
    return [_match(_meta("nfproto"), "ipv4" if family == 4 else "ipv6"),
            {"dnat": {"family": ip, "addr": {"map": {"key": {"concat": key}, "data": "@%s" % _map_for(
                family, keyed_by_address)}}}}]


@dataclass(frozen=True)
class RuleSpec:
    """A rule kernelbox wants: its chain, owner, a readable label and the expression."""

    chain: str
    owner: str
    label: str
    expr: t.Tuple[t.Any, ...]

    @property
    def digest(self) -> str:
        text = json.dumps({"chain": self.chain, "expr": list(self.expr)}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]

    @property
    def comment(self) -> str:
        return "%s: %s #%s" % (self.owner, self.label, self.digest)

    def text(self) -> str:
        """How diffs and actions show it: 'postrouting: kb0: masquerade 10.88.0.0/24'."""
        return "%s: %s: %s" % (self.chain, self.owner, self.label)


def infrastructure_rules() -> t.List[RuleSpec]:
    """The fixed rules of the table, in chain order (each chain's are its first rules)."""
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    rules = [
        RuleSpec("prerouting", TABLE_OWNER, "published ports to any local address", (local, {"jump": {"target": "published"}})),
        RuleSpec("output", TABLE_OWNER, "never NAT the IPv6 loopback (the kernel cannot route it out)",
                 (_match(_payload("ip6", "daddr"), "::1"), {"return": None})),
        RuleSpec("output", TABLE_OWNER, "published ports from this host", (local, {"jump": {"target": "published"}})),
        RuleSpec("forward", TABLE_OWNER, "isolation first", ({"jump": {"target": "isolate"}},)),
    ]
    for name, (family, keyed) in sorted(MAPS.items(), key=lambda item: (item[1][0], not item[1][1])):
        rules.append(RuleSpec("published", TABLE_OWNER, "dnat through @%s" % name, tuple(_dnat_through(family, keyed))))
    return rules


@dataclass(frozen=True)
class NetworkSpec:
    """What one container network (a bridge and its subnets) asks of the table."""

    bridge: str
    subnets: t.Tuple[str, ...]  # normalised networks, IPv4 first
    masquerade: bool = True
    isolate: bool = True
    localhost: bool = True  # publish to 127.0.0.1 too (route_localnet on the bridge + its guard)


def network_rules(spec: NetworkSpec) -> t.List[RuleSpec]:
    """The rules of one network, in the order they are added."""
    bridge = spec.bridge
    oif, iif = _meta("oifname"), _meta("iifname")
    rules = []
    for subnet in spec.subnets if spec.masquerade else ():
        ip = _ip(subnet)
        rules.append(RuleSpec("postrouting", bridge, "masquerade %s leaving by another interface" % subnet, (
            _match(_payload(ip, "saddr"), _prefix(subnet)), _match(_payload(ip, "daddr"), _prefix(subnet), "!="),
            _match(oif, bridge, "!="), {"masquerade": None})))
    for subnet in spec.subnets:
        ip = _ip(subnet)
        rules.append(RuleSpec("postrouting", bridge, HAIRPIN_LABEL + subnet, (
            _match(oif, bridge), _match({"ct": {"key": "status"}}, "dnat", "in"),
            _match(_payload(ip, "saddr"), _prefix(subnet)), {"masquerade": None})))
    has_ipv4 = any(ipaddress.ip_network(subnet).version == 4 for subnet in spec.subnets)
    if spec.localhost and has_ipv4:
        rules.append(RuleSpec("postrouting", bridge, "masquerade published ports reached from 127.0.0.0/8", (
            _match(oif, bridge), _match({"ct": {"key": "status"}}, "dnat", "in"),
            _match(_payload("ip", "saddr"), _prefix(LOOPBACK_NET4)), {"masquerade": None})))
        rules.append(RuleSpec("guard", bridge, "drop 127.0.0.0/8 from the bridge (route_localnet is on)", (
            _match(iif, bridge), _match(_payload("ip", "daddr"), _prefix(LOOPBACK_NET4)), {"drop": None})))
    rules += [
        RuleSpec("forward", bridge, "accept from the bridge", (_match(iif, bridge), {"accept": None})),
        RuleSpec("forward", bridge, "accept replies back in", (
            _match(oif, bridge), _match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None})),
        RuleSpec("forward", bridge, "accept published ports", (
            _match(oif, bridge), _match({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None})),
    ]
    if spec.isolate:
        rules.append(RuleSpec("isolate", bridge, "drop into the bridge what is neither a reply nor published", (
            _match(oif, bridge), _match(iif, bridge, "!="), _no_bit("state", ["established", "related"]),
            _no_bit("status", "dnat"), {"drop": None})))
    return rules


# --- reading --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A rule as found in the table."""

    chain: str
    handle: int
    comment: str

    @property
    def owner(self) -> t.Optional[str]:
        owner, sep, rest = self.comment.partition(": ")
        return owner if sep and " #" in rest else None

    @property
    def label(self) -> str:
        return self.comment.partition(": ")[2].rpartition(" #")[0]

    def text(self) -> str:
        return "%s: %s: %s" % (self.chain, self.owner, self.label) if self.owner else "%s: %s" % (
            self.chain, self.comment or "handle %d (no comment: not made by kernelbox)" % self.handle)


@dataclass
class TableState:
    """The table as the kernel has it; ``exists`` False means there is no table at all."""

    exists: bool = False
    chains: t.Dict[str, t.Dict[str, t.Any]] = field(default_factory=dict)
    maps: t.Dict[str, t.Dict[str, t.Any]] = field(default_factory=dict)
    rules: t.List[Rule] = field(default_factory=list)
    mappings: t.List[ports.Mapping] = field(default_factory=list)
    foreign_elements: int = 0  # map elements without an owner comment

    def rules_of(self, owner: str) -> t.List[Rule]:
        return [rule for rule in self.rules if rule.owner == owner]

    def mappings_of(self, owner: str) -> t.List[ports.Mapping]:
        return [mapping for mapping in self.mappings if mapping.owner == owner]

    def owners(self) -> t.List[str]:
        """Bridges with rules in the table (the fixed rules' owner left out)."""
        return sorted({rule.owner for rule in self.rules if rule.owner and rule.owner != TABLE_OWNER})

    def empty_without(self, bridges: t.Iterable[str] = (), containers: t.Iterable[str] = ()) -> bool:
        """Nothing but the fixed rules would be left once the rules of ``bridges`` and the published ports of
        ``containers`` are gone (rules without a kernelbox comment count as someone else's: never empty)."""
        gone_rules, gone_ports = set(bridges), set(containers)
        return (all(rule.owner == TABLE_OWNER or rule.owner in gone_rules for rule in self.rules)
                and all(mapping.owner in gone_ports for mapping in self.mappings) and not self.foreign_elements)

    def network_subnets(self) -> t.Dict[str, t.List[str]]:
        """bridge -> the subnets its hairpin rules cover (every network has one per subnet)."""
        found: t.Dict[str, t.List[str]] = {}
        for rule in self.rules:
            if rule.owner and rule.owner != TABLE_OWNER and rule.label.startswith(HAIRPIN_LABEL):
                found.setdefault(rule.owner, []).append(rule.label[len(HAIRPIN_LABEL):])
        return found


def _element_parts(entry: t.Any) -> t.Tuple[t.List[t.Any], t.List[t.Any], str]:
    """(key values, data values, comment) of one listed map element."""
    if not isinstance(entry, list) or len(entry) != 2:
        raise KernelboxError("unexpected map element in table %s %s: %r" % (FAMILY, TABLE, entry))
    key, data = entry
    comment = ""
    if isinstance(key, dict) and "elem" in key:
        comment = key["elem"].get("comment", "") or ""
        key = key["elem"].get("val")
    keys = key["concat"] if isinstance(key, dict) and "concat" in key else [key]
    datas = data["concat"] if isinstance(data, dict) and "concat" in data else [data]
    return keys, datas, comment


def mapping_from_element(name: str, entry: t.Any) -> ports.Mapping:
    family, keyed = MAPS[name]
    keys, datas, comment = _element_parts(entry)
    if len(keys) != (3 if keyed else 2) or len(datas) != 2:
        raise KernelboxError("unexpected map element in %s: %r" % (name, entry))
    host_ip = str(ipaddress.ip_address(keys[0])) if keyed else None
    protocol, port = keys[-2], keys[-1]
    return ports.Mapping(family, host_ip, str(protocol), int(port), str(ipaddress.ip_address(datas[0])),
                         int(datas[1]), comment)


def parse_table(objects: t.Iterable[t.Mapping[str, t.Any]]) -> TableState:
    """A TableState from the objects ``list table inet kernelbox`` returns (JSON)."""
    state = TableState(exists=True)
    for item in objects:
        if "chain" in item:
            state.chains[item["chain"]["name"]] = item["chain"]
        elif "map" in item:
            body = item["map"]
            state.maps[body["name"]] = body
            if body["name"] not in MAPS:
                continue
            for entry in body.get("elem") or []:
                mapping = mapping_from_element(body["name"], entry)
                if mapping.owner:
                    state.mappings.append(mapping)
                else:
                    state.foreign_elements += 1
        elif "rule" in item:
            body = item["rule"]
            state.rules.append(Rule(body["chain"], int(body["handle"]), body.get("comment", "") or ""))
    state.mappings.sort(key=ports.Mapping.order)
    return state


def published_by_owner(state: TableState) -> t.Dict[str, t.List[t.Dict[str, t.Any]]]:
    """container name -> its published ports as dicts (consecutive ports as ranges)."""
    found: t.Dict[str, t.List[t.Dict[str, t.Any]]] = {}
    for published in ports.collapse(state.mappings):
        found.setdefault(published.owner, []).append(published.as_dict())
    return found


def read_table(nft: nftables.Nft) -> TableState:
    tables = nft.list({"tables": None})
    if not any(item.get("table", {}).get("family") == FAMILY and item["table"].get("name") == TABLE
               for item in tables):
        return TableState()
    return parse_table(nft.list({"table": {"family": FAMILY, "name": TABLE}}))


@dataclass(frozen=True)
class BlockingChain:
    """A base chain of another table that drops forwarded packets by policy."""

    family: str
    table: str
    chain: str
    priority: int
    table_chains: t.Tuple[str, ...] = ()  # every chain of that table (DOCKER-USER tells Docker's)

    def text(self) -> str:
        return "%s %s %s (policy drop)" % (self.family, self.table, self.chain)

    def fix(self, bridge: str) -> str:
        """The commands that let a network's traffic through this chain (in its own table: never ours to edit)."""
        if self.table == "filter" and self.chain == "FORWARD" and self.family in ("ip", "ip6"):
            tool = "iptables" if self.family == "ip" else "ip6tables"
            target = "DOCKER-USER" if "DOCKER-USER" in self.table_chains else "FORWARD"
            return ("%s -I %s -i %s -j ACCEPT; %s -I %s -o %s -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT"
                    % (tool, target, bridge, tool, target, bridge))
        where = "%s %s %s" % (self.family, self.table, self.chain)
        return ("nft insert rule %s iifname %s accept; nft insert rule %s oifname %s ct state established,related "
                "accept; nft insert rule %s oifname %s ct status dnat accept" % (where, bridge, where, bridge, where, bridge))


def forward_drop_chains(objects: t.Iterable[t.Mapping[str, t.Any]]) -> t.List[BlockingChain]:
    """Base chains of other tables on the forward hook whose policy is drop (iptables' FORWARD -P DROP).

    A forwarded packet must be accepted by every base chain on its hook, so any of these drops container
    traffic whatever kernelbox's own table accepts.
    """
    chains = [item["chain"] for item in objects if "chain" in item]
    names: t.Dict[t.Tuple[str, str], t.List[str]] = {}
    for chain in chains:
        names.setdefault((chain.get("family", ""), chain.get("table", "")), []).append(chain.get("name", ""))
    found = []
    for chain in chains:
        family, table = chain.get("family"), chain.get("table")
        if chain.get("hook") != "forward" or chain.get("policy") != "drop" or family not in ("ip", "ip6", "inet"):
            continue
        if (family, table) == (FAMILY, TABLE):
            continue
        found.append(BlockingChain(family, table, chain["name"], int(chain.get("prio", 0)),
                                   tuple(sorted(names.get((family, table), [])))))
    return found


# --- writing --------------------------------------------------------------------------------------------------

def _table_ref() -> t.Dict[str, t.Any]:
    return {"family": FAMILY, "table": TABLE}


def skeleton_text() -> str:
    """The table, its chains and maps, in nft's own language (``add`` is a no-op for what already exists).

    Constant text, with nothing from users or containers in it.  It is not JSON because libnftables 1.0.6
    (Debian 12) crashes on a JSON map whose data is a concatenation (``ipv4_addr . inet_service``) as soon
    as a rule uses it; every rule and element, which do carry user data, goes as JSON.
    """
    lines = ["add table %s %s" % (FAMILY, TABLE)]
    for name, hook in CHAINS.items():
        body = " { type %s hook %s priority %d; policy accept; }" % hook if hook is not None else ""
        lines.append("add chain %s %s %s%s" % (FAMILY, TABLE, name, body))
    for name, (family, keyed) in MAPS.items():
        address = "ipv4_addr" if family == 4 else "ipv6_addr"
        key = "%s . inet_proto . inet_service" % address if keyed else "inet_proto . inet_service"
        lines.append("add map %s %s %s { type %s : %s . inet_service; }" % (FAMILY, TABLE, name, key, address))
    return "\n".join(lines) + "\n"


def add_rule(rule: RuleSpec, insert: bool = False) -> t.Dict[str, t.Any]:
    body = dict(_table_ref(), chain=rule.chain, expr=list(rule.expr), comment=rule.comment)
    return {"insert" if insert else "add": {"rule": body}}


def delete_rule(rule: Rule) -> t.Dict[str, t.Any]:
    return {"delete": {"rule": dict(_table_ref(), chain=rule.chain, handle=rule.handle)}}


def _element(mapping: ports.Mapping, with_comment: bool) -> t.Any:
    key: t.List[t.Any] = [mapping.protocol, mapping.host_port]
    if mapping.host_ip is not None:
        key.insert(0, mapping.host_ip)
    value: t.Any = {"concat": key}
    if with_comment:
        value = {"elem": {"val": value, "comment": mapping.owner}}
    return value


def add_mappings(mappings: t.Sequence[ports.Mapping]) -> t.List[t.Dict[str, t.Any]]:
    """``create element`` commands (the kernel refuses a key that exists: a race can never overwrite)."""
    commands = []
    for name in sorted({map_name(m.family, m.host_ip) for m in mappings}):
        elements = [[_element(m, True), {"concat": [m.address, m.port]}]
                    for m in mappings if map_name(m.family, m.host_ip) == name]
        commands.append({"create": {"element": dict(_table_ref(), name=name, elem=elements)}})
    return commands


def delete_mappings(mappings: t.Sequence[ports.Mapping]) -> t.List[t.Dict[str, t.Any]]:
    commands = []
    for name in sorted({map_name(m.family, m.host_ip) for m in mappings}):
        elements = [_element(m, False) for m in mappings if map_name(m.family, m.host_ip) == name]
        commands.append({"delete": {"element": dict(_table_ref(), name=name, elem=elements)}})
    return commands


def delete_table() -> t.Dict[str, t.Any]:
    return {"delete": {"table": {"family": FAMILY, "name": TABLE}}}


def infrastructure_changes(state: TableState) -> t.Tuple[t.List[Rule], t.List[RuleSpec]]:
    """(stale fixed rules to delete, fixed rules to insert) so the table's fixed rules are exactly this code's.

    The fixed rules must come first in their chains, so a chain whose fixed rules differ gets all of them
    again, inserted at its head.
    """
    wanted = infrastructure_rules()
    stale: t.List[Rule] = []
    missing: t.List[RuleSpec] = []
    for chain in CHAINS:
        want = [rule for rule in wanted if rule.chain == chain]
        have = [rule for rule in state.rules if rule.chain == chain and rule.owner == TABLE_OWNER]
        if [rule.comment for rule in have] != [rule.comment for rule in want]:
            stale += have
            missing += want
    return stale, missing


class Transaction:
    """Commands queued by the steps of one run and applied by ``commit`` in one nftables transaction.

    A run that creates the table applies the constant skeleton first, in a transaction of its own (see
    ``skeleton_text``); if the second one fails, what is left is an empty table, which the next run fills
    or, with nothing of ours in it, removes.
    """

    def __init__(self, nft: t.Callable[[], nftables.Nft], committed: t.Callable[[], t.Any] = lambda: None) -> None:
        self._nft = nft
        self._committed = committed
        self.skeleton = False
        self.commands: t.List[t.Dict[str, t.Any]] = []

    def queue(self, commands: t.Iterable[t.Dict[str, t.Any]]) -> None:
        self.commands.extend(commands)

    def commit(self) -> None:
        commands, self.commands = self.commands, []
        try:
            if self.skeleton:
                self._nft().apply_text(skeleton_text())
                self.skeleton = False
            self._nft().apply(commands)
        finally:
            self._committed()  # what was read before is out of date, even after a failure


# --- one run ----------------------------------------------------------------------------------------------------

STATE_DIR = "/run/kernelbox/nat"
LOCK_TIMEOUT = 60.0


class NatSession:
    """What one module run shares: the libnftables context, the table as read, the transaction, the lock.

    ``lock=True`` (never in check mode) holds an flock on ``STATE_DIR/lock`` from the first read until
    ``close()``, so two runs cannot both find a host port free and both take it.  The table is read
    once, and again after each commit.

    ``only_removes=True`` (a run with ``state: absent``): on a host with neither the table nor the state
    directory there is nothing to remove, so nothing is locked and nothing is written (no lock directory
    left behind by a run that changed nothing); otherwise the lock is taken as above.
    """

    def __init__(self, lock: bool = True, state_dir: str = STATE_DIR, only_removes: bool = False) -> None:
        self._want_lock = lock
        self._only_removes = only_removes
        self.state_dir = state_dir
        self._lock_fd: t.Optional[int] = None
        self._nft: t.Optional[nftables.Nft] = None
        self._state: t.Optional[TableState] = None
        self.transaction = Transaction(self.nft, self._forget_state)

    def nft(self) -> nftables.Nft:
        if self._nft is None:
            self._nft = nftables.Nft()
        return self._nft

    def state(self) -> TableState:
        if self._state is None:
            if self._want_lock and self._lock_fd is None:
                if self._only_removes and not os.path.isdir(self.state_dir):
                    unlocked = read_table(self.nft())
                    if not unlocked.exists:
                        return unlocked  # nothing to remove: no lock, and not kept, so a later read locks
                self._lock_fd = _take_lock(self.state_dir)
            self._state = read_table(self.nft())
        return self._state

    def _forget_state(self) -> None:
        self._state = None

    def forward_drop_chains(self) -> t.List[BlockingChain]:
        return forward_drop_chains(self.nft().list({"chains": None}))

    def close(self) -> None:
        if self._nft is not None:
            self._nft.close()
            self._nft = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _take_lock(state_dir: str) -> int:
    parent = mounts.open_dir(os.path.dirname(state_dir), create=True, mode=0o755)
    os.close(parent)
    directory = mounts.open_dir(state_dir, create=True, mode=0o700)
    try:
        fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory)
    finally:
        os.close(directory)
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise KernelboxError("%s/lock stayed held by another kernelbox run for %d s" % (state_dir, LOCK_TIMEOUT))
            time.sleep(0.1)
