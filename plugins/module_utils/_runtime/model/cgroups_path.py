# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE to kernelbox.containers: where ``linux.cgroupsPath`` puts a container, as a cgroupfs path.

Pure.  The result is relative to the cgroup2 mount root, without a leading '/':

* empty or absent: ``<default parent>/<container name>``;
* absolute (``/libpod_parent/libpod-ID``): that path below the cgroup2 root, as the
  runtime spec says;
* relative (``web``): below the runtime's default parent, ``kernelbox`` (the spec lets
  the runtime choose where relative paths start);
* systemd's ``slice:prefix:name`` (``machine.slice:libpod:ID``): the path systemd
  itself would use, ``machine.slice/libpod-ID.scope`` (``a-b.slice`` expands to
  ``a.slice/a-b.slice``), made and managed as plain cgroupfs directories.
"""

from __future__ import annotations

import posixpath
import typing as t

from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError

DEFAULT_PARENT = "kernelbox"
WHERE = "linux.cgroupsPath"


def expand_slice(name: str) -> str:
    """systemd's slice nesting: 'a-b-c.slice' -> 'a.slice/a-b.slice/a-b-c.slice'; '-.slice' -> ''."""
    if not name.endswith(".slice") or name == ".slice" or "/" in name:
        raise ValidationError("%s: %r is not a systemd slice name (NAME.slice)" % (WHERE, name))
    stem = name[:-len(".slice")]
    if stem == "-":
        return ""
    parts = stem.split("-")
    if "" in parts:
        raise ValidationError("%s: %r is not a valid slice name (empty component)" % (WHERE, name))
    return "/".join("-".join(parts[:depth]) + ".slice" for depth in range(1, len(parts) + 1))


def is_systemd_form(value: str) -> bool:
    return value.count(":") == 2 and "/" not in value


def resolve(value: t.Optional[str], name: str, default_parent: str = DEFAULT_PARENT) -> str:
    """The container's group, relative to the cgroup2 root (see the module docstring)."""
    if not value:
        return "%s/%s" % (default_parent, name)
    if "\0" in value or "\n" in value:
        raise ValidationError("%s: %r contains a NUL or a newline" % (WHERE, value))
    if is_systemd_form(value):
        slice_name, prefix, unit = value.split(":")
        if not unit:
            raise ValidationError("%s: %r names no unit (slice:prefix:name)" % (WHERE, value))
        base = expand_slice(slice_name or "system.slice")
        leaf = unit if unit.endswith(".slice") else "%s-%s.scope" % (prefix, unit) if prefix else unit + ".scope"
        return posixpath.join(base, leaf) if base else leaf
    if ":" in value:
        raise ValidationError("%s: %r is neither a path nor systemd's slice:prefix:name" % (WHERE, value))
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValidationError("%s: %r must not contain '..'" % (WHERE, value))
    if not parts:
        raise ValidationError("%s: %r is the cgroup root; a container needs a group of its own" % (WHERE, value))
    relative = "/".join(parts)
    return relative if value.startswith("/") else "%s/%s" % (default_parent, relative)
