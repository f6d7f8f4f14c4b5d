# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Removing a container's state never deletes through a mount made inside it.

Users used to put an overlay root inside the container's state directory: `state=absent` removed
the directory tree and with it everything visible through the mount.  A real tmpfs is mounted
inside a state tree here (the suite runs in a private mount namespace).
"""

import os
import subprocess

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import state
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.errors import KernelboxError


@pytest.fixture
def state_tree(tmp_path):
    top = tmp_path / "kbt-state"
    (top / "rootfs").mkdir(parents=True)
    (top / "config.json").write_text("{}")
    subprocess.run(["mount", "-t", "tmpfs", "kbt-tmpfs", str(top / "rootfs")], check=True)
    try:
        (top / "rootfs" / "precious").write_text("user data")
        yield top
    finally:
        subprocess.run(["umount", "-l", str(top / "rootfs")], check=False)


def test_remove_tree_refuses_a_tree_with_a_mount_and_deletes_nothing(state_tree):
    with pytest.raises(KernelboxError, match="rootfs is mounted inside it"):
        state.remove_tree(str(state_tree))
    assert (state_tree / "rootfs" / "precious").read_text() == "user data"
    assert (state_tree / "config.json").exists()  # refused before touching anything


def test_remove_tree_removes_the_tree_once_unmounted(state_tree):
    subprocess.run(["umount", str(state_tree / "rootfs")], check=True)
    (state_tree / "link").symlink_to("/etc")
    state.remove_tree(str(state_tree))
    assert not state_tree.exists() and os.path.isdir("/etc")
    state.remove_tree(str(state_tree))  # already gone: nothing to do
