# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lexical path rules shared by overlay_rootfs, image_layers and the runtime (pure logic)."""
import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import mounts
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import (
    ValidationError, absolute_path, path_is_within)


@pytest.mark.parametrize("value, expected", [
    ("/srv/a", "/srv/a"),
    ("//srv//a/", "/srv/a"),
    ("/srv/./a/.", "/srv/a"),
    ("/", "/"),
    ("/with space/and:colon", "/with space/and:colon"),
])
def test_absolute_path(value, expected):
    assert absolute_path(value) == expected


@pytest.mark.parametrize("value, fragment", [
    ("srv/a", "not an absolute path"),
    ("", "non-empty"),
    (None, "non-empty"),
    ("/srv/../etc", "contains '..'"),
    ("/srv/a\0b", "NUL"),
])
def test_absolute_path_refuses(value, fragment):
    with pytest.raises(ValidationError) as info:
        absolute_path(value, "merged")
    assert fragment in str(info.value) and str(info.value).startswith("merged:")


@pytest.mark.parametrize("path, root, inside", [
    ("/srv/foo", "/srv/foo", True),
    ("/srv/foo/bar", "/srv/foo", True),
    ("/srv/foo2", "/srv/foo", False),
    ("/srv", "/srv/foo", False),
    ("/anything", "/", True),
])
def test_path_is_within_compares_components(path, root, inside):
    assert path_is_within(path, root) is inside


@pytest.mark.parametrize("path, forbidden", [
    ("/", True), ("/etc", True), ("/usr", True), ("/var/lib", True), ("/proc/1", True), ("/sys", True),
    ("/dev/shm", True), ("/etc/kb", False), ("/srv/rootfs", False), ("/var/lib/kernelbox/c/rootfs", False),
    ("/devices", False), ("/process", False),
])
def test_forbidden_mount_points(path, forbidden):
    assert (mounts.forbidden_mount_point(path) is not None) is forbidden
