# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers for container tests: a busybox-static rootfs, /proc readers, cleanup by name.

Import the fixtures into a test module (``from harness.containers import busybox_rootfs, containers``).
Readers here use /proc, cgroupfs and plain JSON parsing, never the runtime code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import typing as t

import pytest

BUSYBOX = "/bin/busybox"
RUN_ROOT = "/run/kernelbox"
LIB_ROOT = "/var/lib/kernelbox"
PREFIX = "kbt-"


def build_busybox_rootfs(path: str) -> str:
    """A root filesystem of busybox-static plus one symlink per applet, and the usual directories."""
    if not os.path.exists(BUSYBOX):
        raise RuntimeError("%s is missing: apt-get install busybox-static" % BUSYBOX)
    for name in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "run", "var", "usr/bin", "mnt"):
        os.makedirs(os.path.join(path, name), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], stdout=subprocess.PIPE, text=True, check=True).stdout.split()
    for applet in applets:
        link = os.path.join(path, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as handle:
        handle.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(path, "etc", "group"), "w") as handle:
        handle.write("root:x:0:\nnogroup:x:65534:\n")
    return path


@pytest.fixture(scope="session")
def busybox_rootfs():
    """The rootfs, built once; also makes the run's cgroup parent, so that no test is blamed for it."""
    os.makedirs(os.path.join(cgroup2_mount(), cgroup_parent()), exist_ok=True)
    top = tempfile.mkdtemp(prefix="kbt-rootfs-")
    os.chmod(top, 0o755)
    try:
        yield build_busybox_rootfs(os.path.join(top, "rootfs"))
    finally:
        shutil.rmtree(top, ignore_errors=True)


def cgroup2_mount() -> str:
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                return fields[4]
    raise RuntimeError("no cgroup2 mount")


def cgroup_parent() -> str:
    """The cgroup parent every test container lives under (relative to the cgroup2 mount)."""
    return os.environ["KB_TEST_CGROUP_PARENT"]


def leaf_path(name: str) -> str:
    return os.path.join(cgroup2_mount(), cgroup_parent(), name)


def read_json(path: str) -> t.Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def runtime_state(name: str) -> t.Optional[t.Dict[str, t.Any]]:
    return read_json(os.path.join(RUN_ROOT, "containers", name, "state.json"))


def log_text(name: str) -> str:
    try:
        with open(os.path.join(LIB_ROOT, "containers", name, "container.log"), errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def proc_stat(pid: int) -> t.Optional[t.List[str]]:
    """Fields after the comm of /proc/PID/stat (index 0 = state, 1 = ppid, 19 = starttime)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            text = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2:].split()


def alive(pid: t.Optional[int], starttime: t.Optional[int] = None) -> bool:
    if not pid:
        return False
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return starttime is None or int(stat[19]) == starttime


def status_fields(pid: int) -> t.Dict[str, str]:
    with open("/proc/%d/status" % pid) as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def cgroup_procs(path: str) -> t.List[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as handle:
            return [int(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def supervisor_pids() -> t.List[int]:
    """The kernelbox supervisors of this sandbox: comm kb-supervisor, in our mount namespace.

    /proc shows the whole machine; supervisors of other test runs live in other sandboxes.
    """
    ours = os.stat("/proc/self/ns/mnt").st_ino
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/comm" % entry) as handle:
                    if handle.read().strip() != "kb-supervisor":
                        continue
                if os.stat("/proc/%s/ns/mnt" % entry).st_ino == ours:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def wait_until(predicate: t.Callable[[], t.Any], timeout: float = 10.0, interval: float = 0.05) -> t.Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Registry:
    """Container names a test makes; removed afterwards whatever happened."""

    def __init__(self) -> None:
        self.names: t.List[str] = []

    def __call__(self, name: str) -> str:
        assert name.startswith(PREFIX)
        self.names.append(name)
        return name

    def cleanup(self) -> None:
        """Brute force, for tests that failed before their own state=absent: supervisors first (they
        would otherwise record the kills below), then every process in the leaves, then the files."""
        if not self.names:
            return
        for pid in supervisor_pids():
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda pid=pid: not alive(pid), 5)
        for name in self.names:
            state = runtime_state(name) or {}
            pid = state.get("pid")
            leaf = leaf_path(name)
            if os.path.isdir(leaf):
                try:
                    with open(os.path.join(leaf, "cgroup.kill"), "w") as handle:
                        handle.write("1")
                except OSError:
                    pass
            elif pid and alive(pid, state.get("starttime")):
                os.kill(pid, signal.SIGKILL)
            for top in (os.path.join(RUN_ROOT, "containers"), os.path.join(LIB_ROOT, "containers")):
                shutil.rmtree(os.path.join(top, name), ignore_errors=True)
            try:
                os.unlink(os.path.join(RUN_ROOT, "containers", name + ".lock"))
            except FileNotFoundError:
                pass
            wait_until(lambda leaf=leaf: not cgroup_procs(leaf), 5)
            for path in sorted((d for d, _s, _f in os.walk(leaf)), key=len, reverse=True):
                try:
                    os.rmdir(path)
                except OSError:
                    pass


@pytest.fixture
def containers():
    registry = Registry()
    try:
        yield registry
    finally:
        registry.cleanup()


# --- a Debian root filesystem with Python (tools/build-python-rootfs), for the connection plugin -----------

PYTHON_ROOTFS_TAR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                 ".build", "rootfs", "python3.tar")
ID_SHIFT = 100000  # the default user namespace maps container ids 0-65535 to host ids 100000-165535


def python_rootfs_tar() -> str:
    """The tarball tools/build-python-rootfs made; a clear failure (never a skip) when it is missing."""
    path = os.environ.get("KB_PYTHON_ROOTFS", PYTHON_ROOTFS_TAR)
    if not os.path.isfile(path):
        why = ""
        if os.path.isfile(path + ".unavailable"):
            with open(path + ".unavailable") as handle:
                why = " (it could not be built: %s)" % handle.read().strip()
        pytest.fail("the Python rootfs %s is missing%s: run tools/build-python-rootfs (make integration does, "
                    "outside the sandbox, where the Debian mirror is reachable)" % (path, why))
    return path


def unpack_shifted(tar: str, root: str, shift: int = ID_SHIFT) -> str:
    """Unpack ``tar`` into ``root`` with every owner moved up by ``shift``, as the container's mapped ids:
    its root can then write its own files (files of host root look like nobody's inside, read-only)."""
    os.makedirs(root)
    subprocess.run(["tar", "--numeric-owner", "-xpf", tar, "-C", root], check=True)
    for directory, _dirs, files in os.walk(root):
        for path in [directory] + [os.path.join(directory, name) for name in files]:
            info = os.lstat(path)
            os.lchown(path, info.st_uid + shift, info.st_gid + shift)
            if not os.path.islink(path):
                os.chmod(path, info.st_mode & 0o7777)  # chown clears set-uid bits (sudo's)
    return root


@pytest.fixture(scope="session")
def python_rootfs():
    """A Debian rootfs with python3, su and sudo, unpacked once per run, owned by the container's mapped ids."""
    os.makedirs(os.path.join(cgroup2_mount(), cgroup_parent()), exist_ok=True)
    top = tempfile.mkdtemp(prefix="kbt-pyroot-")
    os.chmod(top, 0o755)
    try:
        yield unpack_shifted(python_rootfs_tar(), os.path.join(top, "rootfs"))
    finally:
        shutil.rmtree(top, ignore_errors=True)
