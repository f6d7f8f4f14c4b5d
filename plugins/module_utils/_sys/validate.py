# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: input validation and normalisation.

Pure functions.  Each validator returns the normalised value or raises
``ValidationError`` whose text is ready to be a module's ``msg``.
Normalising before comparing is what keeps a second run at changed=false.
"""

from __future__ import annotations

import ipaddress
import re
import typing as t


class ValidationError(ValueError):
    """Bad user input.  The message names the option and the value."""


# net/core/dev.c dev_valid_name(): IFNAMSIZ is 16 including the NUL.
IFNAMSIZ = 16
# include/uapi/linux/limits.h
NAME_MAX = 255


def interface_name(value: t.Any, option: str = "name") -> str:
    """A Linux interface name, as the kernel's dev_valid_name() accepts it.

    Length is counted in bytes: a 15-character UTF-8 name can be too long.
    """
    if not isinstance(value, str) or value == "":
        raise ValidationError("%s: an interface name must be a non-empty string, got %r" % (option, value))
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) >= IFNAMSIZ:
        raise ValidationError("%s: interface name %r is %d bytes; the kernel allows at most %d"
                              % (option, value, len(raw), IFNAMSIZ - 1))
    if value in (".", ".."):
        raise ValidationError("%s: %r is not a valid interface name" % (option, value))
    for char in value:
        if char in "/:" or char.isspace() or char == "\0":
            raise ValidationError("%s: interface name %r contains %r, which the kernel refuses"
                                  % (option, value, char))
    return value


def netns_name(value: t.Any, option: str = "name") -> str:
    """A named network namespace, as iproute2's invalid_name() and /run/netns allow."""
    if not isinstance(value, str) or value == "":
        raise ValidationError("%s: a netns name must be a non-empty string, got %r" % (option, value))
    if "\0" in value:
        raise ValidationError("%s: netns name %r contains a NUL byte" % (option, value))
    if "/" in value:
        raise ValidationError("%s: netns name %r contains '/'; it must be a single file name under /run/netns"
                              % (option, value))
    if value in (".", ".."):
        raise ValidationError("%s: %r is not a valid netns name" % (option, value))
    if len(value.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise ValidationError("%s: netns name is longer than %d bytes" % (option, NAME_MAX))
    return value


def cidr(value: t.Any, option: str = "addresses") -> str:
    """An interface address with prefix, normalised: '2001:db8:0::1/64' -> '2001:db8::1/64'.

    The host bits are kept (it is an interface address, not a network).
    """
    if not isinstance(value, str) or "/" not in value:
        raise ValidationError("%s: %r must be an address with a prefix length, such as 10.0.0.1/24"
                              % (option, value))
    try:
        iface = ipaddress.ip_interface(value.strip())
    except ValueError as exc:
        raise ValidationError("%s: %r is not a valid IPv4 or IPv6 address/prefix: %s" % (option, value, exc))
    return iface.with_prefixlen


def cidr_list(values: t.Optional[t.Iterable[t.Any]], option: str = "addresses") -> t.List[str]:
    """Validate, normalise, de-duplicate and sort a list of interface addresses."""
    normalised = {cidr(v, option) for v in (values or [])}
    return sorted(normalised, key=_address_sort_key)


def _address_sort_key(value: str) -> t.Tuple[int, int, int]:
    iface = ipaddress.ip_interface(value)
    return iface.version, int(iface.ip), iface.network.prefixlen


def ip_address(value: t.Any, option: str = "gateway") -> str:
    """A bare IPv4 or IPv6 address, normalised."""
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise ValidationError("%s: %r is not a valid IPv4 or IPv6 address" % (option, value))


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def mac_address(value: t.Any, option: str = "mac") -> str:
    """A MAC address in lower case with colons; '-' separators are accepted."""
    text = str(value).strip().lower().replace("-", ":")
    if not _MAC.fullmatch(text):
        raise ValidationError("%s: %r is not a MAC address like 02:00:00:00:00:01" % (option, value))
    return text


_SIZE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>[kKmMgGtTpP]?)(?:[iI]?[bB])?")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
MAX_SIZE = (1 << 63) - 1


def size_bytes(value: t.Any, option: str = "size", allow_max: bool = False,
               minimum: int = 0) -> t.Union[int, str]:
    """Parse '512M', '1G', '1073741824', '4KiB' (binary units) by *full* match.

    Returns an int, or the string 'max' when ``allow_max`` and the value means
    unlimited ('max', 'MAX', ' max ', -1).  '512M junk', '1.5G', '1e9' and
    values above 2**63-1 are refused.
    """
    if isinstance(value, bool):
        raise ValidationError("%s: %r is not a size" % (option, value))
    if isinstance(value, int):
        if allow_max and value == -1:
            return "max"
        number = value
    else:
        text = str(value).strip()
        if allow_max and text.lower() in ("max", "-1", "infinity", "unlimited"):
            return "max"
        match = _SIZE.fullmatch(text)
        if not match:
            raise ValidationError("%s: %r is not a size; use bytes or a whole number with K, M, G or T%s"
                                  % (option, value, ", or 'max'" if allow_max else ""))
        number = int(match.group("number")) * _SIZE_UNITS[match.group("unit").lower()]
    if number < minimum:
        raise ValidationError("%s: %r is below the minimum of %d bytes" % (option, value, minimum))
    if number > MAX_SIZE:
        raise ValidationError("%s: %r is larger than the kernel accepts" % (option, value))
    return number


def int_in_range(value: t.Any, low: int, high: int, option: str) -> int:
    if isinstance(value, bool):
        raise ValidationError("%s: %r is not an integer" % (option, value))
    try:
        number = int(str(value).strip(), 10) if not isinstance(value, int) else value
    except ValueError:
        raise ValidationError("%s: %r is not an integer" % (option, value))
    if not low <= number <= high:
        raise ValidationError("%s: %d is outside %d..%d" % (option, number, low, high))
    return number


_SYSCTL_KEY = re.compile(r"[a-z0-9_][a-z0-9_.\-/]*")


def sysctl_key(key: t.Any, required_prefix: str = "", option: str = "sysctls") -> str:
    """A sysctl key such as net.ipv4.ip_forward, normalised to dots.

    Keys that would climb out of /proc/sys are refused.
    """
    text = str(key).strip().replace("/", ".")
    if not _SYSCTL_KEY.fullmatch(text) or ".." in text or text.startswith(".") or text.endswith("."):
        raise ValidationError("%s: %r is not a valid sysctl key" % (option, key))
    if required_prefix and not text.startswith(required_prefix):
        raise ValidationError("%s: %r is not allowed here; only %s* keys are" % (option, key, required_prefix))
    return text


def sysctl_value(value: t.Any, option: str = "sysctls") -> str:
    """Sysctl values compare as the kernel prints them: whitespace-separated fields."""
    if isinstance(value, bool):
        return "1" if value else "0"
    text = " ".join(str(value).split())
    if "\n" in str(value).strip() or "\0" in text:
        raise ValidationError("%s: value %r must be a single line" % (option, value))
    return text


def absolute_path(value: t.Any, option: str = "path") -> str:
    """An absolute path, normalised lexically: '//a/./b/' -> '/a/b'.

    '..' is refused rather than collapsed: '/a/b/..' may not mean '/a' once
    symlinks are involved, and a path that climbs is never what a caller meant.
    NUL bytes are refused.  Symlinks are a matter for the resolver, not for
    this lexical check.
    """
    if not isinstance(value, str) or value == "":
        raise ValidationError("%s: a path must be a non-empty string, got %r" % (option, value))
    if "\0" in value:
        raise ValidationError("%s: path %r contains a NUL byte" % (option, value))
    if not value.startswith("/"):
        raise ValidationError("%s: %r is not an absolute path" % (option, value))
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValidationError("%s: %r contains '..'; give the path without parent references" % (option, value))
    return "/" + "/".join(parts)


def path_is_within(path: str, root: str) -> bool:
    """True when normalised ``path`` is ``root`` or below it, compared by whole components.

    '/srv/foo2' is not within '/srv/foo' (the string-prefix trap).
    """
    if root == "/":
        return True
    return path == root or path.startswith(root + "/")


# RFC 1123 section 2.1 (RFC 952 relaxed): letters, digits and '-', 1 to 63 per label, no '-' at either end.
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
DNS_NAME_MAX = 253


def hostname(value: t.Any, option: str = "hostname", trailing_dot: bool = False) -> str:
    """A host or domain name as RFC 1123 allows it: dot-separated labels of letters, digits and '-'.

    What lands in a generated /etc/hosts or /etc/resolv.conf must not carry a
    newline, a space or a '#' (each would start a line, a field or a comment of
    its own), and this alphabet has none.  ``trailing_dot`` accepts a fully
    qualified 'example.com.' (resolv.conf search domains).
    """
    text = value if isinstance(value, str) else None
    if not text:
        raise ValidationError("%s: a host name must be a non-empty string, got %r" % (option, value))
    labels = text[:-1].split(".") if trailing_dot and text.endswith(".") and len(text) > 1 else text.split(".")
    bad = next((label for label in labels if not _HOST_LABEL.fullmatch(label)), None)
    if bad is not None or len(text) > DNS_NAME_MAX:
        raise ValidationError("%s: %r is not a valid host name (RFC 1123: labels of 1 to 63 letters, digits or "
                              "'-', not starting or ending with '-', separated by dots, %d characters at most)"
                              % (option, value, DNS_NAME_MAX))
    return text


# resolv.conf(5) options: 'ndots:2', 'timeout:1', 'rotate', 'edns0', 'single-request-reopen', 'no-aaaa'...
_RESOLVER_OPTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(:[0-9]+)?")


def resolver_option(value: t.Any, option: str = "dns_options") -> str:
    """One resolv.conf option, a single word (with an optional ':N'): nothing that starts another line."""
    if not isinstance(value, str) or not _RESOLVER_OPTION.fullmatch(value):
        raise ValidationError("%s: %r is not a resolver option such as ndots:2, timeout:1 or rotate"
                              % (option, value))
    return value


# Container names become directory names, cgroup names and systemd unit instance names.
_CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def container_name(value: t.Any, option: str = "name") -> str:
    """A container name: 1-63 of [A-Za-z0-9_.-], starting with a letter or digit (as Docker allows)."""
    if not isinstance(value, str) or not _CONTAINER_NAME.fullmatch(value):
        raise ValidationError("%s: %r is not a valid container name; use 1 to 63 letters, digits, '_', '.' or "
                              "'-', starting with a letter or digit" % (option, value))
    return value
