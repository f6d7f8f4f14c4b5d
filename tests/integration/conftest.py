# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Integration tests: real kernel objects, driven through Ansible, inside the sandbox.

These tests refuse to run (they fail, never skip) outside tests/sandbox or as
non-root: a silently skipped kernel test would be a fake pass.  After every
test, an independent reader compares host state with the state before the
test; anything left behind fails the test and is cleaned up by name or PID.
"""

import os
import signal
import subprocess

import pytest

from harness import snapshot
from harness.ansible_runner import Ansible, venv_bin

DISTRO_PYTHON = "/usr/bin/python3"


def pytest_configure(config):
    if os.geteuid() != 0:
        raise pytest.UsageError("integration tests need root: run them through 'make test'")
    if os.environ.get("KB_SANDBOX") != "1":
        raise pytest.UsageError("integration tests must run inside tests/sandbox (make test does this), "
                                "so they never touch this machine's own network or mounts")


@pytest.fixture(scope="session")
def ansible():
    """Ansible with the project's virtualenv Python as target: PyPI psutil 7."""
    return Ansible(venv_bin("python"))


@pytest.fixture(scope="session")
def ansible_distro():
    """Ansible with Debian's /usr/bin/python3 as target: python3-psutil 5.9."""
    return Ansible(DISTRO_PYTHON)


@pytest.fixture(params=["venv", "distro"])
def any_ansible(request, ansible, ansible_distro):
    """Runs the test once per supported target interpreter (PyPI and distro library versions)."""
    return ansible if request.param == "venv" else ansible_distro


@pytest.fixture(scope="session")
def cgroup_test_parent():
    """$KB_TEST_CGROUP_PARENT, relative to the cgroup2 mount, created once for the run (before any leak
    check's first snapshot); the sandbox removes it at the end.  Put every test cgroup below it."""
    root, name = snapshot.cgroup2_root(), os.environ.get("KB_TEST_CGROUP_PARENT", "")
    if not root or not name:
        raise RuntimeError("no cgroup2 mount or no KB_TEST_CGROUP_PARENT: run inside tests/sandbox")
    os.makedirs(os.path.join(root, name), exist_ok=True)
    return name


@pytest.fixture
def host_state():
    """A function returning a detailed snapshot, for check-mode 'nothing changed' proofs."""
    return snapshot.host_state


@pytest.fixture(autouse=True)
def leak_check():
    before = snapshot.host_state(detailed=False)
    yield
    after = snapshot.host_state(detailed=False)
    strays = snapshot.stray_processes()
    problems = []
    for key in before:
        if before[key] != after[key]:
            problems.append("%s changed:\n  before: %s\n  after:  %s" % (key, before[key], after[key]))
    if strays:
        problems.append("processes left running: %s" % strays)
    if problems:
        _clean_up(before, after, strays)
        beside = sorted(set(after["cgroup_root_children"]) - set(before["cgroup_root_children"]))
        pytest.fail("the test leaked state (cleaned up now, except cgroups beside the test parent, which are not "
                    "the suite's to remove: %s):\n%s" % (beside or "none", "\n".join(problems)))


def _clean_up(before, after, strays):
    """Remove what a failed test left, by exact name or PID, so later tests start clean.

    Only what is certainly the suite's: processes re-parented to the sandbox or this test, and netns, links and
    mounts of the sandbox's own namespaces, and cgroups below the run's own test parent.  A group new beside
    the test parent may belong to another workload of a shared host (a container started meanwhile): it is
    reported as a failure, never killed nor removed.
    """
    for pid, _cmd in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for name in set(after["netns"]) - set(before["netns"]):
        subprocess.run(["ip", "netns", "delete", name], check=False)
    for name in set(after["links"]) - set(before["links"]):
        subprocess.run(["ip", "link", "delete", name], check=False)
    for family, table in set(snapshot.nftables_tables(after["nftables"])) - set(
            snapshot.nftables_tables(before["nftables"])):
        subprocess.run(["nft", "delete", "table", family, table], check=False)
    for key, value in before["forwarding_sysctls"].items():
        if after["forwarding_sysctls"].get(key) != value:
            subprocess.run(["sysctl", "-qw", "%s=%s" % (key, value)], check=False)
    before_mounts = set(m[0] for m in before["mounts"])
    for mount_point, _fstype, _opts in reversed(after["mounts"]):
        if mount_point not in before_mounts:
            subprocess.run(["umount", "-l", mount_point], check=False)
    root = snapshot.cgroup2_root()
    for path in snapshot.cgroups_to_remove(before, after, os.environ["KB_TEST_CGROUP_PARENT"]):
        full = os.path.join(root, path)
        try:
            with open(os.path.join(full, "cgroup.kill"), "w") as handle:
                handle.write("1")
        except OSError:
            pass
        subprocess.run(["rmdir", full], check=False)


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """A real 3-layer image built with podman (whiteouts, an opaque directory), in every format image_layers reads."""
    from harness import oci_images
    return oci_images.build_with_podman(str(tmp_path_factory.mktemp("kbt-images")))
