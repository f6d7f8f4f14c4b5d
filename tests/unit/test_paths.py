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


# The helpers below touch only a pytest tmp_path (no privileges, no mounts).

def test_open_dir_refuses_symlinks_and_creates_on_fds(tmp_path):
    import os

    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(mounts.UnsafePath) as info:
        mounts.open_dir(str(tmp_path / "link" / "sub"), create=True)
    assert "is a symlink" in info.value.msg and not (real / "sub").exists()
    fd = mounts.open_dir(str(tmp_path / "a" / "b"), create=True, mode=0o700)
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b"))
        assert mounts.same_inode(fd, str(tmp_path / "a" / "b"))
        assert not mounts.same_inode(fd, str(tmp_path / "a"))
    finally:
        os.close(fd)
    held, missing = mounts.deepest_existing(str(tmp_path / "a" / "x" / "y"))
    os.close(held)
    assert missing == ["x", "y"]


def test_open_in_root_stays_inside(tmp_path):
    import os

    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "marker").write_text("inside")
    (root / "proc").symlink_to("/etc")  # a hostile image: /proc -> the host's /etc
    (root / "up").symlink_to("../../../../../etc")
    root_fd = os.open(str(root), os.O_PATH | os.O_DIRECTORY)
    try:
        for path in ("/proc/marker", "up/marker", "/../../etc/marker"):
            fd = mounts.open_in_root(root_fd, path, os.O_RDONLY)
            try:
                assert os.read(fd, 100) == b"inside", path
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)


def test_remove_tree_never_follows_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    doomed = tmp_path / "doomed"
    deep = doomed
    for level in range(300):  # deeper than a naive recursion would like, cheap anyway
        deep = deep / ("d%d" % level)
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    (doomed / "escape").symlink_to(outside)
    (doomed / "d0" / "escape_file").symlink_to(outside / "keep")
    mounts.remove_tree(str(doomed))
    assert not doomed.exists() and (outside / "keep").read_text() == "keep"
    mounts.remove_tree(str(doomed))  # nothing left: nothing to do
