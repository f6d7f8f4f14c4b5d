# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The kernelbox nftables table: rules, comments, reading recorded libnftables JSON, the command batches."""

import json
import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import nat, ports
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.ports import Mapping
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import nftables

DATA = os.path.join(os.path.dirname(__file__), "data")


def load(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return [item for item in json.load(handle)["nftables"] if "metainfo" not in item]


def test_reads_a_recorded_table():
    """``nft -j list table inet kernelbox`` after the module published web's ports on network kb0 (nft 1.0.6)."""
    state = nat.parse_table(load("nft_table_kernelbox.json"))
    assert state.exists and set(state.chains) == set(nat.CHAINS) and set(state.maps) == set(nat.MAPS)
    assert [ports.describe(m) for m in state.mappings_of("web")] == [
        "tcp 0.0.0.0:8080 -> 10.88.0.10:80", "tcp 0.0.0.0:9000 -> 10.88.0.10:9000",
        "tcp 0.0.0.0:9001 -> 10.88.0.10:9001", "udp 127.0.0.1:5353 -> 10.88.0.10:53",
        "tcp [::]:8080 -> [fd00:88::10]:80", "tcp [::]:9000 -> [fd00:88::10]:9000",
        "tcp [::]:9001 -> [fd00:88::10]:9001", "tcp [fd00:88::1]:8443 -> [fd00:88::10]:443"]
    assert state.owners() == ["kb0"]
    assert state.network_subnets() == {"kb0": ["10.88.0.0/24", "fd00:88::/64"]}
    # What this code would write now is exactly what the table holds: no spurious change.
    wanted = nat.network_rules(nat.NetworkSpec("kb0", ("10.88.0.0/24", "fd00:88::/64")))
    assert sorted(rule.comment for rule in state.rules_of("kb0")) == sorted(rule.comment for rule in wanted)
    assert nat.infrastructure_changes(state) == ([], [])
    assert not state.empty_without(bridges=["kb0"]) and not state.empty_without(containers=["web"])
    assert state.empty_without(bridges=["kb0"], containers=["web"])


def test_fixed_rules_that_differ_are_rewritten_at_the_head_of_their_chain():
    objects = load("nft_table_kernelbox.json")
    for item in objects:
        rule = item.get("rule")
        if rule and rule["chain"] == "output" and "::1" in json.dumps(rule["expr"]):
            rule["comment"] = rule["comment"][:-8] + "00000000"  # what an older version wrote
    stale, missing = nat.infrastructure_changes(nat.parse_table(objects))
    assert [rule.chain for rule in stale] == ["output", "output"]
    assert [rule.chain for rule in missing] == ["output", "output"]
    assert "::1" in json.dumps(list(missing[0].expr))  # first in the chain: inserted last, at the head


def test_rules_without_a_kernelbox_comment_are_someone_elses():
    objects = load("nft_table_kernelbox.json") + [
        {"rule": {"family": "inet", "table": "kernelbox", "chain": "forward", "handle": 99, "expr": []}}]
    state = nat.parse_table(objects)
    assert state.rules[-1].owner is None and "not made by kernelbox" in state.rules[-1].text()
    assert not state.empty_without(bridges=["kb0"], containers=["web"])


def test_comments_fit_the_kernel_limit_for_the_longest_names():
    bridge = "b" * 15
    spec = nat.NetworkSpec(bridge, ("255.255.255.0/24", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120"))
    comments = [rule.comment for rule in nat.network_rules(spec) + nat.infrastructure_rules()]
    assert max(len(comment.encode()) for comment in comments) < 128  # NFTNL_UDATA_COMMENT_MAXLEN
    parsed = nat.Rule("postrouting", 1, nat.network_rules(spec)[0].comment)
    assert parsed.owner == bridge and parsed.label.startswith("masquerade 255.255.255.0/24")


def test_network_rules_follow_the_options():
    def labels(**options):
        return [rule.text() for rule in nat.network_rules(nat.NetworkSpec("kb0", ("10.88.0.0/24",), **options))]
    full = labels()
    assert "postrouting: kb0: masquerade 10.88.0.0/24 leaving by another interface" in full
    assert "guard: kb0: drop 127.0.0.0/8 from the bridge (route_localnet is on)" in full
    assert not [text for text in labels(masquerade=False) if "leaving by another interface" in text]
    assert not [text for text in labels(isolate=False) if text.startswith("isolate:")]
    assert not [text for text in labels(localhost=False) if "127.0.0.0/8" in text]
    # The digest tracks the expression: a different bridge or subnet is a different rule.
    one = nat.network_rules(nat.NetworkSpec("kb0", ("10.88.0.0/24",)))[0]
    two = nat.network_rules(nat.NetworkSpec("kb0", ("10.89.0.0/24",)))[0]
    assert one.digest != two.digest


def test_blocking_chains_of_other_tables():
    """``nft -j list chains`` with iptables-nft's FORWARD -P DROP (and Docker's DOCKER-USER) and a native table."""
    found = nat.forward_drop_chains(load("nft_chains_forward_drop.json"))
    assert [chain.text() for chain in found] == ["ip filter FORWARD (policy drop)", "inet fw forwarding (policy drop)"]
    assert found[0].fix("kb0") == ("iptables -I DOCKER-USER -i kb0 -j ACCEPT; iptables -I DOCKER-USER -o kb0 -m "
                                   "conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT")
    assert found[1].fix("kb0").startswith("nft insert rule inet fw forwarding iifname kb0 accept;")


def test_element_commands():
    mappings = [Mapping(4, None, "tcp", 8080, "10.88.0.10", 80, "web"), Mapping(6, "fd00::1", "udp", 53, "fd00::10", 53, "web")]
    add = nat.add_mappings(mappings)
    assert [command["create"]["element"]["name"] for command in add] == ["ports4any", "ports6"]
    assert add[0]["create"]["element"]["elem"] == [
        [{"elem": {"val": {"concat": ["tcp", 8080]}, "comment": "web"}}, {"concat": ["10.88.0.10", 80]}]]
    assert nat.delete_mappings(mappings)[1]["delete"]["element"]["elem"] == [{"concat": ["fd00::1", "udp", 53]}]
    # Read back through the listing's shape, the element is the same mapping.
    assert nat.mapping_from_element("ports4any", add[0]["create"]["element"]["elem"][0]) == mappings[0]


def test_skeleton_is_constant_text():
    text = nat.skeleton_text()
    assert text.startswith("add table inet kernelbox\n")
    assert "add chain inet kernelbox guard { type filter hook prerouting priority -300; policy accept; }" in text
    assert "add map inet kernelbox ports6any { type inet_proto . inet_service : ipv6_addr . inet_service; }" in text


class FakeLib:
    """The five libnftables calls, answering from a script."""

    def __init__(self, status=0, output=b"", error=b""):
        self.status, self.output, self.error, self.buffers = status, output, error, []

    def nft_ctx_new(self, flags):
        return 1

    def nft_ctx_output_set_flags(self, ctx, flags):
        self.flags = flags

    def nft_ctx_buffer_output(self, ctx):
        return 0

    nft_ctx_buffer_error = nft_ctx_buffer_output

    def nft_run_cmd_from_buffer(self, ctx, buffer):
        self.buffers.append(buffer)
        return self.status

    def nft_ctx_get_output_buffer(self, ctx):
        return self.output

    def nft_ctx_get_error_buffer(self, ctx):
        return self.error

    def nft_ctx_free(self, ctx):
        self.freed = True


def test_binding_sends_json_and_reports_refusals():
    lib = FakeLib(status=1, error=b"Error: Could not process rule: File exists\n")
    with nftables.Nft(lib) as nft:
        with pytest.raises(nftables.NftError) as error:
            nft.apply([{"create": {"element": {}}}, {"add": {"rule": {}}}])
    assert json.loads(lib.buffers[0]) == {"nftables": [{"create": {"element": {}}}, {"add": {"rule": {}}}]}
    assert lib.flags == nftables.NFT_CTX_OUTPUT_JSON | nftables.NFT_CTX_OUTPUT_HANDLE and lib.freed
    assert str(error.value) == ("nftables refused the transaction (create element, add rule), so none of it was applied: "
                                "Error: Could not process rule: File exists")


def test_binding_lists_without_metainfo():
    lib = FakeLib(output=b'{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"name": "x"}}]}')
    with nftables.Nft(lib) as nft:
        assert nft.list({"tables": None}) == [{"table": {"name": "x"}}]
        nft.apply([])  # nothing to do: libnftables is not even called
    assert len(lib.buffers) == 1


def test_ctnetlink_dump_recorded_from_the_kernel():
    """An IPv4 conntrack dump (Linux 6.18): a udp flow to 5353, unanswered, and an established tcp flow."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import conntrack
    with open(os.path.join(DATA, "ctnetlink_dump_ipv4.json"), encoding="utf-8") as handle:
        messages = json.load(handle)
    flows = sorted((conntrack.parse_flow(4, bytes.fromhex(body)) for kind, body in messages), key=lambda f: f.dport)
    assert [(f.protocol, f.source, f.destination, f.sport, f.dport, f.reply_source, f.reply_sport, f.translated)
            for f in flows] == [(17, "10.0.0.1", "10.0.0.2", 1002, 5353, "10.0.0.2", 5353, False),
                                (6, "10.0.0.1", "10.0.0.2", 1001, 8080, "10.0.0.2", 8080, False)]
    # The delete request sends the original tuple back as the kernel encoded it.
    request = conntrack.delete_request(flows[0])
    assert request.startswith(conntrack.NFGENMSG.pack(2, 0, 0)) and flows[0].tuple_orig in request


def test_ctnetlink_dump_request_asks_the_kernel_to_filter():
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import conntrack, netlink
    body = conntrack.dump_request(6, 17, 5353)
    attrs = netlink.parse_attrs(body, conntrack.NFGENMSG.size)
    proto = netlink.parse_attrs(netlink.parse_attrs(attrs[conntrack.CTA_TUPLE_ORIG])[conntrack.CTA_TUPLE_PROTO])
    assert proto == {conntrack.CTA_PROTO_NUM: bytes([17]), conntrack.CTA_PROTO_DST_PORT: (5353).to_bytes(2, "big")}
    flags = netlink.parse_attrs(attrs[conntrack.CTA_FILTER])[conntrack.CTA_FILTER_ORIG_FLAGS]
    assert int.from_bytes(flags, "little") == conntrack.FILTER_PROTO_NUM | conntrack.FILTER_PROTO_DST_PORT
    assert body[0] == 10  # AF_INET6
