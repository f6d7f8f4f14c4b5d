# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The container's log as a weapon, and as a flood: stdout and stderr are a pipe the supervisor drains.

Checked against what the kernel says: the init's fd 1 (a pipe, not a file), the blocks the log files hold
(st_blocks), the supervisor's resident memory (/proc/PID/status), and what reached the log file.
"""

import json
import os
import stat
import time

import pytest

from harness.containers import build_busybox_rootfs, containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import LIB_ROOT, cgroup_parent, log_text, supervisor_pids, wait_until

# Run by the host's Python (bound read-only from /usr): every trick on fd 1 that made the old log file (the
# container's stdout, opened O_APPEND) sparse and huge, then a report, then more output.
ATTACK = r"""
import errno, fcntl, json, os, stat, sys, time
HOLE = 256 << 20
def attempt(func):
    try:
        func()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def clear_append():
    fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) & ~os.O_APPEND)
report = {
    "ftruncate": attempt(lambda: os.ftruncate(1, HOLE)),
    "clear_append": attempt(clear_append),
    "pwrite": attempt(lambda: os.pwrite(1, b"far out\n", HOLE)),
    "lseek": attempt(lambda: os.lseek(1, HOLE, os.SEEK_SET)),
    "fallocate": attempt(lambda: os.posix_fallocate(1, 0, HOLE)),
    "reopen": attempt(lambda: os.close(os.open("/proc/self/fd/1", os.O_WRONLY))),
    "fd1_is_a_fifo": stat.S_ISFIFO(os.fstat(1).st_mode),
}
os.write(1, (json.dumps(report) + "\n").encode())
for i in range(2000):
    os.write(1, b"after the attack %d\n" % i)
os.write(1, b"attack done\n")
time.sleep(1000)
"""


@pytest.fixture(scope="module")
def python_rootfs(tmp_path_factory, cgroup_test_parent):
    root = build_busybox_rootfs(str(tmp_path_factory.mktemp("kbt-logs") / "rootfs"))
    os.chmod(os.path.dirname(root), 0o755)
    os.makedirs(os.path.join(root, "usr"), exist_ok=True)
    for name in ("lib", "lib64"):  # merged /usr: /lib -> usr/lib, as on the host
        if os.path.islink("/" + name):
            os.symlink(os.readlink("/" + name), os.path.join(root, name))
    with open(os.path.join(root, "attack.py"), "w") as handle:
        handle.write(ATTACK)
    return root


def _blocks(name):
    """Bytes the log files really hold on disk (a hole holds none; a copied hole holds all)."""
    total = 0
    for suffix in ("", ".1", ".1.tmp"):
        try:
            total += os.stat(os.path.join(LIB_ROOT, "containers", name, "container.log" + suffix)).st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def _size_between_rotations(path):
    """The file's size; the current log is missing for an instant while the supervisor rotates it (renamed to .1, a
    new one opened), so that instant counts as empty: the rotation test above proves what the new one holds."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def _container(name, rootfs, command, **extra):
    args = {"name": name, "rootfs": rootfs, "command": command, "stop_timeout": 1, "supervisor": "kernelbox",
            "cgroup": {"parent": cgroup_parent()}, "log": {"max_size": "64K"}}
    args.update(extra)
    return args


def test_the_log_cannot_be_made_sparse_or_huge(ansible, python_rootfs, containers):
    name = containers("kbt-log-attack")
    started = ansible.module("container_process", _container(
        name, python_rootfs, ["/usr/bin/python3", "-I", "-S", "/attack.py"],
        mounts=[{"source": "/usr", "destination": "/usr", "readonly": True}]))
    assert started.changed and started["running"], started.result
    init = started["pid"]
    fifo = "/run/kernelbox/containers/%s/log.fifo" % name
    assert stat.S_ISFIFO(os.stat("/proc/%d/fd/1" % init).st_mode)  # not a file the container could grow
    assert os.readlink("/proc/%d/fd/1" % init) == os.readlink("/proc/%d/fd/2" % init) == fifo
    assert wait_until(lambda: "attack done" in log_text(name), 180), log_text(name)[-2000:]
    time.sleep(1.5)  # a rotation check of the old design ran every second: give it its chance
    text = log_text(name)  # 2000 short lines after the report: under the 64 KiB cap, nothing rotated away
    report = json.loads(next(line for line in text.splitlines() if line.startswith("{")))
    assert report["fd1_is_a_fifo"] is True, report
    assert (report["ftruncate"], report["pwrite"], report["lseek"]) == ("EINVAL", "ESPIPE", "ESPIPE"), report
    assert report["fallocate"] in ("ESPIPE", "ENODEV"), report
    assert report["reopen"] == "EACCES", report  # the FIFO belongs to host root: /proc/self/fd/1 cannot reopen it
    assert "far out" not in text
    assert _blocks(name) <= 256 * 1024, _blocks(name)  # two capped files of 64 KiB, plus a chunk
    size = os.path.getsize(os.path.join(LIB_ROOT, "containers", name, "container.log"))
    assert size <= 64 * 1024, size
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


def test_a_flood_neither_starves_others_nor_grows_the_supervisor(ansible, python_rootfs, containers):
    flood, quiet = containers("kbt-log-flood"), containers("kbt-log-quiet")
    ticker = "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done"
    run_flood = _container(flood, python_rootfs, ["/bin/sh", "-c", "exec yes 'a line from the flood'"])
    run_quiet = _container(quiet, python_rootfs, ["/bin/sh", "-c", ticker])
    assert ansible.module("container_process", run_quiet)["running"]
    assert wait_until(lambda: "tick 3" in log_text(quiet), 30)
    supervisor = supervisor_pids()
    assert len(supervisor) == 1, supervisor
    before = _rss_kib(supervisor[0])
    assert ansible.module("container_process", run_flood)["running"]
    log = os.path.join(LIB_ROOT, "containers", flood, "container.log")
    assert wait_until(lambda: os.path.exists(log + ".1"), 30)  # the flood reaches the log, and rotates

    def ticks():
        return [int(line.split()[1]) for line in log_text(quiet).splitlines() if line.startswith("tick ")]
    seen = ticks()[-1]
    # Under the flood the quiet container's lines keep arriving: 20 more (2 s of its output) within a deadline
    # sized for a loaded machine; a starved one would block on its full pipe and show none.
    assert wait_until(lambda: ticks()[-1] >= seen + 20, 90), (seen, ticks()[-3:])
    assert ticks() == list(range(1, ticks()[-1] + 1))  # nothing lost on the way
    rotated = os.stat(log + ".1").st_ino
    assert wait_until(lambda: os.stat(log + ".1").st_ino != rotated, 60)  # still flowing, still rotating
    after = _rss_kib(supervisor[0])
    assert after - before < 8 * 1024, (before, after)  # KiB: one chunk at a time, nothing accumulates
    for path in (log, log + ".1"):
        size = _size_between_rotations(path)
        assert size <= 64 * 1024 + 65536, (path, size)
    print("supervisor VmRSS before the flood %d KiB, during it %d KiB" % (before, after))
    for name in (flood, quiet):
        assert ansible.module("container_process", {"name": name, "state": "absent"}).changed
