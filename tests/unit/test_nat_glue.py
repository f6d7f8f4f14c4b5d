# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nat module's decisions and the published-ports API, on a recorded table (no kernel)."""

import json
import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow, nat as glue, published_ports
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import forwarding, nat
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DATA = os.path.join(os.path.dirname(__file__), "data")


def recorded_state():
    with open(os.path.join(DATA, "nft_table_kernelbox.json"), encoding="utf-8") as handle:
        return nat.parse_table(item for item in json.load(handle)["nftables"] if "metainfo" not in item)


class FakeNft:
    def __init__(self):
        self.applied = []

    def apply(self, commands):
        self.applied.append(list(commands))

    def apply_text(self, text):
        self.applied.append(text)


class FakeSession:
    """A NatSession over a recorded table: what would be sent to libnftables is kept in ``nft.applied``."""

    state_dir = "/nonexistent"

    def __init__(self, state):
        self._state = state
        self.nft = FakeNft()
        self.transaction = nat.Transaction(lambda: self.nft)

    def state(self):
        return self._state

    def forward_drop_chains(self):
        return []


@pytest.fixture
def publisher(monkeypatch):
    monkeypatch.setattr(published_ports, "local_addresses", lambda: {"10.88.0.1", "127.0.0.1", "fd00:88::1"})
    return lambda owner, state=None: published_ports.PortPublisher(owner, session=FakeSession(state or recorded_state()))


def test_unchanged_ports_plan_nothing(publisher):
    web = publisher("web")
    before = web.current()
    assert web.desired(published_ports.parse(["8080:80", "127.0.0.1:5353:53/udp", "9000-9001:9000-9001",
                                              "[fd00:88::1]:8443:443"]), ["10.88.0.10/24", "fd00:88::10/64"]) == before
    assert web.plan() == []


def test_a_changed_port_is_one_transaction_then_conntrack(publisher):
    web = publisher("web")
    web.current()
    web.desired(published_ports.parse(["8081:80", "127.0.0.1:5353:53/udp", "9000-9001:9000-9001",
                                       "[fd00:88::1]:8443:443"]), ["10.88.0.10", "fd00:88::10"])
    steps = web.plan()
    assert [step.description for step in steps] == [
        "unpublish tcp 0.0.0.0:8080 -> 10.88.0.10:80 of web (no longer asked for)",
        "unpublish tcp [::]:8080 -> [fd00:88::10]:80 of web (no longer asked for)",
        "publish tcp 0.0.0.0:8081 -> 10.88.0.10:80 for web (new)",
        "publish tcp [::]:8081 -> [fd00:88::10]:80 for web (new)",
        "forget the conntrack flows of the 2 unpublished ports of web (established flows would keep reaching the old "
        "address)"]
    assert len({step.commit for step in steps[:4]}) == 1 and steps[4].commit is None
    session = web.session
    for step in steps[:4]:
        step.apply()
    steps[3].commit()
    assert len(session.nft.applied) == 1 and [next(iter(c)) for c in session.nft.applied[0]] == [
        "delete", "delete", "create", "create"]


def test_a_clash_names_the_holder(publisher):
    db = publisher("db")
    db.current()
    with pytest.raises(ValidationError) as error:
        db.desired(published_ports.parse(["127.0.0.1:8080:80"]), ["10.88.0.11"])
    assert str(error.value) == ("ports: host port 127.0.0.1:8080/tcp is already published by container web "
                                "(tcp 0.0.0.0:8080 -> 10.88.0.10:80)")


def test_bad_requests_fail_before_any_change(publisher):
    db = publisher("db")
    with pytest.raises(ValidationError, match="10.9.9.9 is not an address of this host"):
        db.desired(published_ports.parse(["10.9.9.9:7000:80"]), ["10.88.0.11"])
    with pytest.raises(ValidationError, match="no container address was given"):
        db.desired(published_ports.parse(["7000:80"]), [])
    assert db.session.nft.applied == []


def test_the_last_owner_removes_the_table(publisher):
    state = recorded_state()
    state.rules = [rule for rule in state.rules if rule.owner == nat.TABLE_OWNER]  # no network left
    web = publisher("web", state)
    web.current()
    web.desired([], [])
    steps = web.plan(why_remove="state=absent")
    assert steps[-2].description == "delete table inet kernelbox (nothing of kernelbox's is left in it)"
    assert steps[-1].description.startswith("forget the conntrack flows of the 8 unpublished ports of web")


def test_a_new_table_is_created_first(publisher):
    web = publisher("web", nat.TableState())
    web.current()
    web.desired(published_ports.parse(["5353:53/udp"]), ["10.88.0.10"])
    steps = web.plan()
    assert [step.description.split(" (")[0] for step in steps] == [
        "create table inet kernelbox with its chains, maps and fixed rules", "publish udp 0.0.0.0:5353 -> 10.88.0.10:53 for web",
        "forget untranslated udp flows to the 1 newly published udp port of web"]
    for step in steps[:2]:
        step.apply()
    steps[1].commit()
    assert web.session.nft.applied[0] == nat.skeleton_text()
    assert [next(iter(c)) for c in web.session.nft.applied[1]] == ["add"] * len(nat.infrastructure_rules()) + ["create"]
    assert web.warnings and "no kernelbox network covers 10.88.0.10" in web.warnings[0]


def params(**given):
    values = {key: spec.get("default") for key, spec in glue.ARGUMENT_SPEC.items()}
    values.update(given)
    return values


@pytest.mark.parametrize("given, message", [
    ({"bridge": "kb0", "ports": ["80:80"]}, "ports only go with container:, not with bridge:"),
    ({"container": "web", "subnets": ["10.0.0.0/24"]}, "subnets only go with bridge:"),
    ({"container": "web", "ports": ["8080:80"]}, "given without the container's address"),
    ({"container": "web", "addresses": ["10.0.0.2"], "ports": ["8080:0"]}, "container port 0 is outside 1..65535"),
    ({"container": "web", "addresses": ["10.0.0.2"], "ports": ["8080:80/icmp"]}, "protocol 'icmp' is not supported"),
    ({"container": "web!"}, "not a valid container name"),
    ({"bridge": "kb:0"}, "contains ':'"),
    ({"bridge": "kb0", "subnets": ["10.0.0.0"]}, "needs a prefix length"),
    ({"bridge": "kb0", "subnets": ["127.0.0.0/8"]}, "cannot be a container subnet"),
])
def test_module_input_is_checked_before_anything_is_read(given, message):
    resource = glue.NatResource(params(**given))
    outcome = flow.execute(resource)
    resource.close()
    assert outcome.failed and not outcome.changed and message in outcome.msg, outcome.msg


def test_subnets_are_normalised():
    assert glue.subnet_list(["fd00:88:0::1/64", "10.88.0.7/24", "10.88.0.0/24"]) == ["10.88.0.0/24", "fd00:88::/64"]


def test_sysctl_record_puts_back_only_after_the_last_user(tmp_path):
    record = forwarding.Record(str(tmp_path / "nat"))
    record.claim(forwarding.IP_FORWARD, "kb0", "0", "1")
    record.claim(forwarding.IP_FORWARD, "kb1", "1", "1")  # the value before stays the first one seen
    again = forwarding.Record(str(tmp_path / "nat"))
    assert again.entries == {forwarding.IP_FORWARD: {"before": "0", "set": "1", "users": ["kb0", "kb1"]}}
    assert again.release(forwarding.IP_FORWARD, "kb0") is None
    assert again.release(forwarding.IP_FORWARD, "kb1") == {"before": "0", "set": "1", "users": []}
    assert not os.path.exists(str(tmp_path / "nat" / "sysctls.json"))  # nothing recorded: no file


def test_wanted_sysctls_follow_the_families():
    assert forwarding.wanted("kb0", ["10.88.0.0/24"], True, True) == {
        "net.ipv4.ip_forward": "1", "net.ipv4.conf.kb0.route_localnet": "1"}
    assert forwarding.wanted("kb0", ["fd00::/64"], True, True) == {"net.ipv6.conf.all.forwarding": "1"}
    assert forwarding.wanted("kb0", ["10.88.0.0/24"], False, False) == {}


class FailingModule:
    def fail_json(self, **result):
        raise RuntimeError(result["msg"])


def test_missing_libnftables_names_the_distro_packages(monkeypatch):
    from ansible_collections.kernelbox.containers.plugins.module_utils._glue import deps
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import nftables
    monkeypatch.setattr(nftables, "LIBRARY", "libnftables-not-installed.so.1")
    monkeypatch.setattr(nftables, "_LIB", None)
    assert [name for name, _trace in deps.missing_libraries(["libnftables"])] == ["libnftables"]
    with pytest.raises(RuntimeError) as error:
        deps.require(FailingModule(), "libnftables")
    assert "libnftables" in str(error.value) and "libnftables1 (Debian, Ubuntu) or nftables (Fedora, RHEL)" in str(
        error.value) and "pip install" not in str(error.value)


@pytest.mark.parametrize("given, nothing", [
    ({"container": "web", "ports": []}, True), ({"container": "web", "ports": ["80:80"]}, False),
    ({"bridge": "kb0", "state": "absent"}, True), ({"bridge": "kb0"}, False),
    ({"container": "web", "ports": ["80:80"], "state": "absent"}, True)])
def test_tasks_that_ask_for_nothing_need_no_library(given, nothing):
    assert glue.asks_for_nothing(params(**given)) is nothing


def test_a_network_gone_from_the_table_no_longer_holds_a_sysctl(tmp_path):
    """kb9 claimed ip_forward, then vanished without its rules (a killed run): kb0's removal puts the value back."""
    record = forwarding.Record(str(tmp_path))
    record.claim(forwarding.IP_FORWARD, "kb9", "0", "1")
    record.claim(forwarding.IP_FORWARD, "kb0", "1", "1")
    resource = glue.NatResource(params(bridge="kb0", state="absent"))
    resource.validate()
    resource.session = FakeSession(recorded_state())  # only kb0 has rules there
    resource.record, resource.sysctls_before = record, {forwarding.IP_FORWARD: "1"}
    step = resource._release_step(forwarding.IP_FORWARD)
    assert step.description == ("put net.ipv4.ip_forward back to 0 (kernelbox set it to 1 for network kb0, which no "
                                "longer needs it)")


class ListingNft:
    """libnftables' list answers for a host with no kernelbox table (or with one, ``table=True``)."""

    def __init__(self, table=False):
        self.table = table

    def list(self, what):
        return [{"table": {"family": "inet", "name": "kernelbox", "handle": 1}}] if self.table else []

    def close(self):
        pass


@pytest.mark.parametrize("only_removes, has_table, locked", [(True, False, False), (True, True, True), (False, False, True)])
def test_a_removal_with_nothing_to_remove_locks_and_writes_nothing(tmp_path, monkeypatch, only_removes, has_table, locked):
    """state: absent on a host without the table and the state directory leaves no lock directory behind (a
    teardown re-run must change nothing); any run that may write, or finds a table, takes the lock."""
    state_dir = str(tmp_path / "kernelbox" / "nat")
    monkeypatch.setattr(nat, "read_table", lambda nft: nat.TableState(exists=has_table))
    session = nat.NatSession(lock=True, state_dir=state_dir, only_removes=only_removes)
    session._nft = ListingNft(has_table)
    try:
        assert session.state().exists is has_table
        assert os.path.exists(os.path.join(state_dir, "lock")) is locked
    finally:
        session.close()
