# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import validate
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


@pytest.mark.parametrize("name", ["eth0", "veth-a.100", "x" * 15, "br_0", "é" * 7])
def test_interface_names_accepted(name):
    assert validate.interface_name(name) == name


@pytest.mark.parametrize("name, fragment", [
    ("", "non-empty"), (None, "non-empty"), (".", "not a valid"), ("..", "not a valid"),
    ("x" * 16, "16 bytes"), ("é" * 8, "16 bytes"),  # 8 characters, 16 bytes in UTF-8
    ("a/b", "'/'"), ("a:b", "':'"), ("a b", "' '"), ("a\tb", "'\\t'"), ("a\nb", "'\\n'"),
])
def test_interface_names_refused(name, fragment):
    with pytest.raises(ValidationError, match="name"):
        validate.interface_name(name)
    with pytest.raises(ValidationError) as info:
        validate.interface_name(name)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["web", "a.b", "x" * 255, "-dash", "with space"])
def test_netns_names_accepted(name):
    assert validate.netns_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../../etc", "x" * 256, "nul\0", 5])
def test_netns_names_refused(name):
    with pytest.raises(ValidationError):
        validate.netns_name(name)


@pytest.mark.parametrize("given, normal", [
    ("10.0.0.1/24", "10.0.0.1/24"),
    (" 10.0.0.1/24 ", "10.0.0.1/24"),
    ("2001:db8:0:0::1/64", "2001:db8::1/64"),
    ("2001:DB8::0:1/64", "2001:db8::1/64"),
    ("::1/128", "::1/128"),
    ("0:0:0:0:0:0:0:1/128", "::1/128"),
])
def test_cidr_normalised(given, normal):
    assert validate.cidr(given) == normal


@pytest.mark.parametrize("bad", ["10.0.0.1", "10.0.0.256/24", "10.0.0.1/33", "fe80::1/129", "x/24", 7, None])
def test_cidr_refused(bad):
    with pytest.raises(ValidationError):
        validate.cidr(bad)


def test_cidr_list_dedupes_and_sorts_v4_first():
    assert validate.cidr_list(["2001:db8::1/64", "10.0.0.2/24", "10.0.0.1/24", "2001:db8:0::1/64"]) == [
        "10.0.0.1/24", "10.0.0.2/24", "2001:db8::1/64"]


@pytest.mark.parametrize("given, normal", [
    ("02:AB:cd:00:00:01", "02:ab:cd:00:00:01"), ("02-ab-cd-00-00-01", "02:ab:cd:00:00:01")])
def test_mac_compared_case_insensitively(given, normal):
    assert validate.mac_address(given) == normal


@pytest.mark.parametrize("bad", ["02:ab:cd:00:00", "zz:ab:cd:00:00:01", "02abcd000001"])
def test_mac_refused(bad):
    with pytest.raises(ValidationError):
        validate.mac_address(bad)


@pytest.mark.parametrize("given, expected", [
    ("512M", 512 << 20), ("1G", 1 << 30), ("1073741824", 1 << 30), (4096, 4096), ("4KiB", 4096),
    ("4kb", 4096), (" 2 g ", 2 << 30), ("max", "max"), ("MAX", "max"), (-1, "max"), ("-1", "max"),
])
def test_sizes_parsed(given, expected):
    assert validate.size_bytes(given, allow_max=True) == expected


@pytest.mark.parametrize("bad", ["512M junk", "1.5G", "1e9", "10Mb;rm", "", "-5", "1.5.3G", str(1 << 64), True,
                                 "512M; rm -rf /"])
def test_sizes_refused_by_full_match(bad):
    with pytest.raises(ValidationError):
        validate.size_bytes(bad, allow_max=True)


def test_size_max_only_when_allowed_and_minimum():
    with pytest.raises(ValidationError):
        validate.size_bytes("max")
    with pytest.raises(ValidationError, match="minimum"):
        validate.size_bytes("1M", minimum=6 << 20)


@pytest.mark.parametrize("key, normal", [("net.ipv4.ip_forward", "net.ipv4.ip_forward"),
                                         ("net/ipv4/ip_forward", "net.ipv4.ip_forward"),
                                         ("net.ipv4.conf.eth0-1.forwarding", "net.ipv4.conf.eth0-1.forwarding")])
def test_sysctl_keys(key, normal):
    assert validate.sysctl_key(key, required_prefix="net.") == normal


@pytest.mark.parametrize("key", ["kernel.hostname", "net..x", "net.ipv4/../../kernel", ".net", "net.a b"])
def test_sysctl_keys_refused(key):
    with pytest.raises(ValidationError):
        validate.sysctl_key(key, required_prefix="net.")


def test_sysctl_values_normalised():
    assert validate.sysctl_value(True) == "1"
    assert validate.sysctl_value("20000\t30000") == "20000 30000"
    assert validate.sysctl_value(1) == "1"


def test_int_in_range():
    assert validate.int_in_range("100", 1, 10000, "cpu_weight") == 100
    for bad in (0, 10001, "1.5", True, "x"):
        with pytest.raises(ValidationError):
            validate.int_in_range(bad, 1, 10000, "cpu_weight")


@pytest.mark.parametrize("name", ["web", "a.b", "x" * 63, "1-2.example.org", "A" * 63 + "." + "b" * 63])
def test_hostnames_accepted(name):
    assert validate.hostname(name) == name


@pytest.mark.parametrize("name", ["", "x" * 64, "a..b", ".a", "a.", "-a", "a-", "a_b", "a b", "a\nb", "a\0b", "é",
                                  "a" * 250 + ".bcd", None, 5])
def test_hostnames_refused(name):
    with pytest.raises(validate.ValidationError, match="hostname"):
        validate.hostname(name)


def test_trailing_dot_only_where_allowed():
    assert validate.hostname("example.org.", trailing_dot=True) == "example.org."
    with pytest.raises(validate.ValidationError):
        validate.hostname(".", trailing_dot=True)
