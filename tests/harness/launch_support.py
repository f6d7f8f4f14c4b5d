# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Support for the launcher's real-kernel tests: a busybox-static rootfs, running and inspecting containers.

Fixtures are defined here and imported by tests/integration/test_launch*.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import launch
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

DOCKER_CAPS_MASK = 0x00000000A80425FB
BUSYBOX = "/bin/busybox"
HOST_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    """The launcher's contract: the caller is a child subreaper (the supervisor is).

    Only for the module: pytest never reaps what it adopts, and a zombie left from a container's PID namespace
    (a process joined into it whose parent died) keeps that namespace's init from ever finishing its exit, so
    every later test module saw a container that could not be removed.  Undone and reaped at the end.
    """
    libc.set_child_subreaper()
    yield
    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 0)
    reap_adopted_zombies()


def reap_adopted_zombies():
    """waitpid the zombies among this process's children (orphans it adopted as a subreaper)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def make_rootfs(path: str) -> str:
    """A busybox-static rootfs: /bin/busybox and its applets, and the usual top directories."""
    os.makedirs(path)
    os.chmod(path, 0o755)
    for name in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "usr", "data"):
        os.mkdir(os.path.join(path, name), 0o755)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], check=True, stdout=subprocess.PIPE, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", os.path.join(path, "bin", applet))
    # For syscall-level checks the host's Python runs inside through a read-only bind of /usr.
    os.symlink("usr/lib", os.path.join(path, "lib"))
    os.symlink("usr/lib64", os.path.join(path, "lib64"))
    with open(os.path.join(path, "etc", "passwd"), "w") as handle:
        handle.write("root:x:0:0:root:/root:/bin/sh\n")
    return path


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory):
    """Built once per session, under pytest's 0700 temp dir (which container root cannot walk)."""
    return make_rootfs(str(tmp_path_factory.mktemp("kbt-launch") / "rootfs"))


@pytest.fixture
def scratch_rootfs(tmp_path):
    """A throwaway rootfs a test may damage (symlinked /proc, a fake /dev/null...)."""
    return make_rootfs(str(tmp_path / "rootfs"))


def shell(rootfs: str, script: str, **kwargs) -> S.Spec:
    spec = S.default_spec(rootfs, ["/bin/sh", "-c", script], hostname="kbt-box", **kwargs)
    return spec


def with_python(spec: S.Spec, code: str) -> S.Spec:
    spec.mounts.append(S.Mount("/usr", None, "/usr", ["rbind", "ro", "nosuid", "nodev"]))
    spec.process.args = [HOST_PYTHON, "-I", "-S", "-c", code]
    return spec.validate()


class Run:
    def __init__(self, launched: launch.Launched, status: int, output: str) -> None:
        self.launched = launched
        self.status = status
        self.output = output

    @property
    def exit_code(self) -> int:
        return os.waitstatus_to_exitcode(self.status)


def run(spec: S.Spec, timeout: float = 20.0, **kwargs) -> Run:
    """Start, collect stdout+stderr until the container exits, reap it."""
    read_end, write_end = os.pipe()
    try:
        launched = launch.start(spec, stdout=write_end, stderr=write_end, **kwargs)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as reader:
        while True:
            chunk = reader.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if time.monotonic() > deadline:
                os.kill(launched.pid, signal.SIGKILL)
    _pid, status = os.waitpid(launched.pid, 0)
    return Run(launched, status, b"".join(chunks).decode(errors="replace"))


class Running:
    """A container kept alive (sleep) so the host can inspect it; killed and reaped on exit."""

    def __init__(self, spec: S.Spec, **kwargs) -> None:
        self.spec = spec
        self.kwargs = kwargs

    def __enter__(self) -> launch.Launched:
        self.null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
        try:
            self.launched = launch.start(self.spec, stdout=self.null, stderr=self.null, **self.kwargs)
        except BaseException:
            os.close(self.null)
            raise
        return self.launched

    def __exit__(self, *exc) -> None:
        os.close(self.null)
        try:
            os.kill(self.launched.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.launched.pid, 0)


def sleeper(rootfs: str, **kwargs) -> S.Spec:
    """A container whose PID 1 is busybox sleep itself (no shell that might fork)."""
    return S.default_spec(rootfs, ["/bin/sleep", "30"], hostname="kbt-box", **kwargs)


def host_status(pid: int) -> dict:
    with open("/proc/%d/status" % pid) as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


@pytest.fixture
def test_cgroup():
    """A leaf under the run's test parent, removed afterwards."""
    root = subprocess.run(["findmnt", "-n", "-t", "cgroup2", "-o", "TARGET"], check=True, stdout=subprocess.PIPE,
                          text=True).stdout.split()[0]
    parent = os.path.join(root, os.environ["KB_TEST_CGROUP_PARENT"])
    made_parent = not os.path.isdir(parent)
    leaf = os.path.join(parent, "kbt-launch")
    os.makedirs(leaf)
    yield leaf
    for path in (leaf, parent) if made_parent else (leaf,):
        for _attempt in range(50):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.05)
