# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kernelbox-runtime as a client drives it: installed by the oci_runtime module, called as a program.

``runtime`` (session) installs the command with ``kernelbox.containers.oci_runtime``
from the collection's built tarball, exactly as a user would, into the sandbox's
/var/lib.  ``oci`` (per test) runs it and remembers the container IDs a test
uses, and deletes them with --force afterwards whatever happened.  Bundles put
every container's cgroup below the run's test parent (``linux.cgroupsPath``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import tempfile
import typing as t

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from harness.containers import cgroup2_mount, cgroup_parent

INSTALL_DIR = "/var/lib/kbt-oci/bin"
COMMAND = os.path.join(INSTALL_DIR, "kernelbox-runtime")
PREFIX = "kbt-oci-"


@pytest.fixture(scope="session")
def runtime(ansible) -> str:
    installed = ansible.module("oci_runtime", {"path": COMMAND})
    assert installed["installed"] and not installed.failed, installed.result  # changed: once per run, not per module
    return COMMAND


def leaf(container_id: str) -> str:
    return os.path.join(cgroup2_mount(), cgroup_parent(), container_id)


class Oci:
    """Calls the command and cleans up after the test."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.ids: t.List[str] = []

    def __call__(self, *args: str, timeout: float = 120, **kwargs: t.Any) -> subprocess.CompletedProcess:
        """Run the command; stdout and stderr are files, not pipes: a container started by ``create`` or
        ``run -d`` keeps the runtime's stdio open (as with runc), and a pipe would never reach EOF."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            kwargs.setdefault("stdout", out)
            kwargs.setdefault("stderr", err)
            proc = subprocess.run([self.command] + list(args), timeout=timeout, check=False, **kwargs)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read().decode(errors="replace"),
                                               err.read().decode(errors="replace"))

    def ok(self, *args: str, **kwargs: t.Any) -> subprocess.CompletedProcess:
        proc = self(*args, **kwargs)
        assert proc.returncode == 0, "%s: rc=%d\nstdout: %s\nstderr: %s" % (args, proc.returncode, proc.stdout,
                                                                            proc.stderr)
        return proc

    def state(self, container_id: str) -> t.Dict[str, t.Any]:
        return json.loads(self.ok("state", container_id).stdout)

    def new_id(self, suffix: str) -> str:
        container_id = PREFIX + suffix
        self.ids.append(container_id)
        return container_id

    def cleanup(self) -> None:
        for container_id in self.ids:
            self("delete", "--force", container_id)


@contextlib.contextmanager
def not_a_subreaper() -> t.Iterator[None]:
    """The test process is *not* a child subreaper meanwhile.

    The launcher's tests make the pytest process a subreaper (harness/launch_support.py) and leave it so; a
    container's init, orphaned when ``create`` exits (and conmon, which daemonizes), would then be re-parented
    to pytest, which never reaps: the sandbox init (a subreaper that reaps) must inherit them instead.
    """
    flag = ctypes.c_int(0)
    libc.prctl(libc.PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag))
    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 0)
    try:
        yield
    finally:
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, flag.value)


@pytest.fixture
def oci(runtime):
    client = Oci(runtime)
    with not_a_subreaper():
        try:
            yield client
        finally:
            client.cleanup()


def config(rootfs: str, args: t.Sequence[str], container_id: str, **options: t.Any) -> t.Dict[str, t.Any]:
    """The collection's secure defaults as a config.json, its cgroup below the test parent."""
    data = S.default_spec(rootfs, list(args), hostname="kbt-oci", **options).to_oci()
    data["linux"]["cgroupsPath"] = "/%s/%s" % (cgroup_parent(), container_id)
    return data


def write_bundle(path: str, data: t.Dict[str, t.Any]) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as handle:
        json.dump(data, handle)
    return path
