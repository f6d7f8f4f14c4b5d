# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: one small persistent, locked allocator of integers in named pools.

A pool is a range of integers; an owner (a container name) holds at most
one value in each pool.  Two things use it:

* a container's address on a bridge: pool ``ipv4-10.88.0.0_24``, values are
  the addresses as integers, the network and broadcast addresses and the
  bridge's own addresses reserved;
* a container's own user-namespace id range: pool ``userns``, values are slot
  numbers (slot N maps 65536 host ids, see ``IdRanges``).

On disk (``FORMAT = 1``)::

    /var/lib/kernelbox/allocations/<pool>.json   {"format": 1, "pool": ..., "owners": {owner: value}}
    /var/lib/kernelbox/allocations/<pool>.lock   flock(2): one read-modify-write at a time

The JSON file is replaced atomically (temp file, fsync, rename), so a reader
without the lock sees the old or the new table, and a SIGKILL never leaves a
torn one.  A value is taken exactly while an owner holds it: a pool whose
last owner releases its value is removed (file and lock), so nothing stays
behind.  The decisions (``choose``) are pure and unit-tested.
"""

from __future__ import annotations

import ipaddress
import os
import re
import typing as t
from dataclasses import dataclass, field

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError

FORMAT = 1
_POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")


class AllocationError(KernelboxError):
    """The pool cannot give what was asked: the value is taken, outside the pool, or none is left."""


@dataclass(frozen=True)
class Pool:
    """Integers ``first``..``last`` (inclusive), minus ``reserved``; ``show`` prints a value for messages."""

    name: str
    first: int
    last: int
    reserved: t.FrozenSet[int] = field(default_factory=frozenset)
    show: t.Callable[[int], str] = str

    def __post_init__(self) -> None:
        if not _POOL_NAME.fullmatch(self.name):
            raise ValueError("allocation pool name %r is not a plain file name" % self.name)


def choose(pool: Pool, owners: t.Mapping[str, int], owner: str, wanted: t.Optional[int] = None) -> int:
    """The value ``owner`` gets: what it holds, else ``wanted``, else the lowest free one (pure).

    Raises AllocationError when ``wanted`` is outside the pool, reserved or
    held by another owner, or when nothing is free.
    """
    held = owners.get(owner)
    if wanted is None and held is not None and pool.first <= held <= pool.last and held not in pool.reserved:
        return held
    taken = {value: name for name, value in owners.items() if name != owner}
    if wanted is not None:
        if not pool.first <= wanted <= pool.last:
            raise AllocationError("%s is outside %s (%s to %s)" % (pool.show(wanted), pool.name,
                                                                   pool.show(pool.first), pool.show(pool.last)))
        if wanted in pool.reserved:
            raise AllocationError("%s is reserved in %s" % (pool.show(wanted), pool.name))
        if wanted in taken:
            raise AllocationError("%s is already taken in %s, by %s" % (pool.show(wanted), pool.name, taken[wanted]))
        return wanted
    value = pool.first
    while value <= pool.last:
        if value not in taken and value not in pool.reserved:
            return value
        value += 1
    raise AllocationError("%s is exhausted: all %d values are taken or reserved"
                          % (pool.name, pool.last - pool.first + 1))


class Allocator:
    """The pools under ``root`` (default /var/lib/kernelbox/allocations)."""

    def __init__(self, layout: state.Layout = state.DEFAULT_LAYOUT) -> None:
        self.root = os.path.join(layout.lib_root, "allocations")

    def _file(self, pool_name: str) -> str:
        return os.path.join(self.root, pool_name + ".json")

    def owners(self, pool_name: str) -> t.Dict[str, int]:
        """owner -> value, as last written (no lock: the file is replaced atomically)."""
        path = self._file(pool_name)
        data = state.read_json(path)
        if data is None:
            return {}
        if data.get("format") != FORMAT or not isinstance(data.get("owners"), dict):
            raise state.StateError("%s has allocation format %r; this kernelbox understands format %d"
                                   % (path, data.get("format"), FORMAT))
        return {str(k): int(v) for k, v in data["owners"].items()}

    def held(self, pool_name: str, owner: str) -> t.Optional[int]:
        return self.owners(pool_name).get(owner)

    def predict(self, pool: Pool, owner: str, wanted: t.Optional[int] = None) -> int:
        """What ``allocate`` would give now; writes nothing (check mode, and early validation)."""
        return choose(pool, self.owners(pool.name), owner, wanted)

    def allocate(self, pool: Pool, owner: str, wanted: t.Optional[int] = None) -> int:
        """Give ``owner`` a value and record it, under the pool's lock."""
        with state.NameLock(os.path.join(self.root, pool.name + ".lock")):
            owners = self.owners(pool.name)
            value = choose(pool, owners, owner, wanted)
            if owners.get(owner) != value:
                owners[owner] = value
                self._write(pool.name, owners)
        return value

    def release(self, pool_name: str, owner: str) -> bool:
        """Drop ``owner``'s value; True if it held one.  The pool goes when its last owner does."""
        lock = state.NameLock(os.path.join(self.root, pool_name + ".lock")).acquire()
        empty = False
        try:
            owners = self.owners(pool_name)
            if owner not in owners:
                empty = not owners
                return False
            del owners[owner]
            empty = not owners
            if empty:
                try:
                    os.unlink(self._file(pool_name))
                except FileNotFoundError:
                    pass
            else:
                self._write(pool_name, owners)
            return True
        finally:
            lock.release(remove=empty)

    def pools_of(self, owner: str) -> t.Dict[str, int]:
        """pool name -> value, for every pool ``owner`` holds a value in."""
        found = {}
        try:
            names = sorted(entry[:-5] for entry in os.listdir(self.root) if entry.endswith(".json"))
        except FileNotFoundError:
            return {}
        for name in names:
            value = self.owners(name).get(owner)
            if value is not None:
                found[name] = value
        return found

    def _write(self, pool_name: str, owners: t.Mapping[str, int]) -> None:
        state.write_json_atomic(self._file(pool_name),
                                {"format": FORMAT, "pool": pool_name, "owners": dict(sorted(owners.items()))})


# --- the two kinds of pool -------------------------------------------------------------

def ipv4_pool(network: str, reserved: t.Iterable[str] = ()) -> Pool:
    """The host addresses of ``network`` (e.g. 10.88.0.0/24), minus ``reserved`` (the bridge's own)."""
    net = ipaddress.IPv4Network(network, strict=False)
    if net.prefixlen > 30:
        raise AllocationError("%s has no room for containers: a /%d bridge network holds at most 2 hosts, one of "
                              "them the bridge" % (net, net.prefixlen))
    taken = {int(ipaddress.IPv4Address(address)) for address in reserved}
    name = "ipv4-%s_%d" % (net.network_address, net.prefixlen)
    return Pool(name, int(net.network_address) + 1, int(net.broadcast_address) - 1, frozenset(taken),
                show=lambda value: str(ipaddress.IPv4Address(value)))


RANGE_SIZE = 65536                 # ids per container: every id an image may use (0..65535)
DEFAULT_RANGE_BASE = 0x70000000    # 1879048192: above systemd-nspawn's container range (0x80000-0x6FFFFFFF)
DEFAULT_RANGE_COUNT = 4096         # up to 2**31: ids above it confuse tools that use signed ints
SUBID_USER = "kernelbox"           # an /etc/subuid and /etc/subgid entry for it chooses the ranges instead


@dataclass(frozen=True)
class IdRanges:
    """Where per-container id ranges come from: slot N is uids ``uid_base + N*65536`` (and gids alike)."""

    uid_base: int
    gid_base: int
    count: int
    source: str

    def pool(self) -> Pool:
        return Pool("userns", 0, self.count - 1,
                    show=lambda slot: "host ids %d-%d" % (self.uid_base + slot * RANGE_SIZE,
                                                          self.uid_base + (slot + 1) * RANGE_SIZE - 1))

    def mapping(self, slot: int) -> t.Tuple[t.Tuple[int, int, int], t.Tuple[int, int, int]]:
        """((0, host uid, size), (0, host gid, size)) for a slot: the container's uid_map and gid_map."""
        return ((0, self.uid_base + slot * RANGE_SIZE, RANGE_SIZE), (0, self.gid_base + slot * RANGE_SIZE, RANGE_SIZE))


def parse_subid(text: str, user: str = SUBID_USER) -> t.Optional[t.Tuple[int, int]]:
    """(start, count) of ``user``'s first entry in /etc/subuid or /etc/subgid text, or None (pure)."""
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] != user:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            return start, count
    return None


def id_ranges(subuid: t.Optional[str] = None, subgid: t.Optional[str] = None) -> IdRanges:
    """The host's per-container ranges: its ``kernelbox`` subordinate ids, else the built-in default.

    ``subuid``/``subgid`` are the files' text (None: read /etc/subuid and /etc/subgid).
    """
    texts = []
    for given, path in ((subuid, "/etc/subuid"), (subgid, "/etc/subgid")):
        if given is None:
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    given = handle.read(1 << 20)
            except OSError:
                given = ""
        texts.append(given)
    uids, gids = parse_subid(texts[0]), parse_subid(texts[1])
    if uids is None and gids is None:
        return IdRanges(DEFAULT_RANGE_BASE, DEFAULT_RANGE_BASE, DEFAULT_RANGE_COUNT, "default")
    if uids is None or gids is None:
        raise AllocationError("/etc/subuid and /etc/subgid must both have an entry for %s (only %s has one)"
                              % (SUBID_USER, "/etc/subuid" if uids else "/etc/subgid"))
    count = min(uids[1], gids[1]) // RANGE_SIZE
    if count < 1:
        raise AllocationError("the %s entries in /etc/subuid and /etc/subgid hold fewer than %d ids; a container "
                              "needs %d" % (SUBID_USER, RANGE_SIZE, RANGE_SIZE))
    return IdRanges(uids[0], gids[0], count, "/etc/subuid and /etc/subgid (%s)" % SUBID_USER)
