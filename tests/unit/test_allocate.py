# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The allocator: pure choices, the two pool kinds, and the files in a temporary layout."""

import json
import os
import threading

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import allocate, state


def pool(first=1, last=5, reserved=()):
    return allocate.Pool("test", first, last, frozenset(reserved))


def test_lowest_free_value_skips_taken_and_reserved():
    assert allocate.choose(pool(reserved=[1]), {"a": 2}, "b") == 3


def test_an_owner_keeps_what_it_holds():
    assert allocate.choose(pool(), {"a": 4, "b": 1}, "a") == 4


def test_an_owner_may_move_to_a_free_wanted_value():
    assert allocate.choose(pool(), {"a": 4}, "a", wanted=2) == 2


@pytest.mark.parametrize("wanted, text", [
    (9, "9 is outside test (1 to 5)"),
    (3, "3 is reserved in test"),
    (2, "2 is already taken in test, by a"),
])
def test_a_wanted_value_that_cannot_be_given_is_refused_by_name(wanted, text):
    with pytest.raises(allocate.AllocationError) as info:
        allocate.choose(pool(reserved=[3]), {"a": 2}, "b", wanted=wanted)
    assert info.value.msg == text


def test_an_exhausted_pool_says_so():
    with pytest.raises(allocate.AllocationError, match="exhausted: all 2 values"):
        allocate.choose(pool(1, 2), {"a": 1, "b": 2}, "c")


def test_a_held_value_that_became_reserved_is_given_up():
    # The bridge took the container's old address: the container gets a new one.
    assert allocate.choose(pool(reserved=[1]), {"a": 1}, "a") == 2


def test_ipv4_pool_is_the_hosts_of_the_subnet_minus_the_bridge():
    p = allocate.ipv4_pool("10.88.0.1/24", reserved=["10.88.0.1"])
    assert p.name == "ipv4-10.88.0.0_24"
    assert allocate.choose(p, {}, "web") == int.from_bytes(bytes([10, 88, 0, 2]), "big")
    assert p.show(p.last) == "10.88.0.254"
    with pytest.raises(allocate.AllocationError, match="10.88.0.1 is reserved"):
        allocate.choose(p, {}, "web", wanted=p.first)


def test_ipv4_pool_refuses_a_network_without_room():
    with pytest.raises(allocate.AllocationError, match="no room"):
        allocate.ipv4_pool("10.0.0.1/31")


def test_subid_entries_choose_the_ranges():
    ranges = allocate.id_ranges("alice:100000:65536\nkernelbox:200000:196608\n", "kernelbox:300000:131072\n")
    assert (ranges.uid_base, ranges.gid_base, ranges.count) == (200000, 300000, 2)
    assert ranges.mapping(1) == ((0, 265536, 65536), (0, 365536, 65536))
    assert ranges.pool().show(1) == "host ids 265536-331071"


def test_without_subid_entries_the_default_ranges_apply():
    ranges = allocate.id_ranges("alice:100000:65536\n", "")
    assert (ranges.uid_base, ranges.count, ranges.source) == (0x70000000, 4096, "default")
    assert ranges.mapping(0)[0] == (0, 1879048192, 65536)


@pytest.mark.parametrize("subuid, subgid, text", [
    ("kernelbox:1:65536", "", "must both have an entry"),
    ("kernelbox:100000:1000", "kernelbox:100000:1000", "fewer than 65536"),
])
def test_unusable_subid_entries_are_refused(subuid, subgid, text):
    with pytest.raises(allocate.AllocationError, match=text):
        allocate.id_ranges(subuid, subgid)


@pytest.fixture
def allocator(tmp_path):
    return allocate.Allocator(state.Layout(run_root=str(tmp_path / "run"), lib_root=str(tmp_path / "lib")))


def test_allocate_records_and_release_removes_the_empty_pool(allocator):
    p = pool()
    assert allocator.predict(p, "a") == 1
    assert allocator.allocate(p, "a") == 1
    assert allocator.allocate(p, "b") == 2
    assert allocator.allocate(p, "a") == 1  # idempotent
    with open(os.path.join(allocator.root, "test.json")) as handle:
        assert json.load(handle) == {"format": 1, "pool": "test", "owners": {"a": 1, "b": 2}}
    assert allocator.pools_of("b") == {"test": 2}
    assert allocator.release("test", "a") is True
    assert allocator.release("test", "a") is False
    assert allocator.release("test", "b") is True
    assert os.listdir(allocator.root) == []  # no file, no lock: nothing left behind


def test_concurrent_allocations_never_give_one_value_twice(allocator):
    p = pool(1, 50)
    results = {}

    def take(owner):
        results[owner] = allocator.allocate(p, owner)

    threads = [threading.Thread(target=take, args=("c%d" % i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == list(range(1, 21))
    assert allocator.owners("test") == results


def test_a_table_from_another_format_is_refused(allocator):
    os.makedirs(allocator.root)
    with open(os.path.join(allocator.root, "test.json"), "w") as handle:
        json.dump({"format": 9, "owners": {}}, handle)
    with pytest.raises(state.StateError, match="format 9"):
        allocator.owners("test")
