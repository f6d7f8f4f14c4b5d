# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_exec and container_info on a pure cgroup v2 kernel, where every controller is there.

One playbook starts a busybox container with memory and pids limits, runs a command through container_exec
that allocates past the memory limit (the kernel must OOM-kill it: the exec'd command is bound by the
container's limits), leaves a sleeper running, and reads container_info.  The tests compare what
container_info returned with the cgroup files read right after, and with the host facts of this kernel.
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from harness.containers import build_busybox_rootfs

NAME = "kbt-vm-info"
LIB = "/var/lib/kernelbox"
INIT = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]  # a stable process count: sh and sleep
MIB = 1 << 20


@pytest.fixture(scope="module")
def state_dirs():
    """The host filesystem is read-only in the VM: container state goes to a tmpfs on /var/lib (nothing else
    in the VM uses it), removed afterwards.  /run is the VM's own tmpfs already."""
    target = LIB if os.path.isdir(LIB) else os.path.dirname(LIB)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "kb-vm-lib", target], check=False)
    assert mounted.returncode == 0, "cannot mount a tmpfs on %s" % target
    try:
        yield LIB
    finally:
        subprocess.run(["umount", "-l", target], check=False)


@pytest.fixture(scope="module")
def scenario(playbook, module_parent, state_dirs):
    # Not under pytest's tmp_path: its 0700 directories keep root-inside-the-container (uid 100000) out.
    top = tempfile.mkdtemp(prefix="kbt-rootfs-", dir=os.environ.get("KB_VM_SCRATCH", "/run"))
    os.chmod(top, 0o755)
    rootfs = build_busybox_rootfs(os.path.join(top, "rootfs"))
    leaf = os.path.join("/sys/fs/cgroup", module_parent, NAME)
    run = playbook([
        {"name": "start", "kernelbox.containers.container_process": {
            "name": NAME, "rootfs": rootfs, "command": INIT, "stop_timeout": 5,
            "cgroup": {"parent": module_parent, "memory_max": "64M", "pids_max": 32}}},
        {"name": "hog", "ignore_errors": True, "kernelbox.containers.container_exec": {
            "name": NAME, "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"]}},
        {"name": "sleeper", "kernelbox.containers.container_exec": {
            "name": NAME, "command": ["sh", "-c", "sleep 600 >/dev/null 2>&1 &"]}},
        {"name": "info", "kernelbox.containers.container_info": {"name": NAME, "cpu_sample": 0.5}},
    ])
    failed = [(item.task, item.result.get("msg"), item.result) for item in run.tasks if item.status == "failed"]
    assert not failed and len(run.tasks) == 4, (failed, run.rc, run.stderr[-3000:])
    files = {}
    for name in ("memory.current", "memory.peak", "memory.max", "memory.events", "pids.current", "pids.max",
                 "cpu.stat", "io.stat", "cgroup.procs"):
        try:
            with open(os.path.join(leaf, name)) as handle:
                files[name] = handle.read()
        except FileNotFoundError:  # io.stat: the io controller is enabled only for groups with io limits
            files[name] = None
    try:
        yield run, files, leaf
    finally:
        playbook([{"name": "remove", "kernelbox.containers.container_process": {"name": NAME, "state": "absent"}}])
        shutil.rmtree(top, ignore_errors=True)


def keyed(text):
    return {key: int(value) for key, value in (line.split() for line in text.splitlines() if line.strip())}


def test_the_exec_is_bound_by_the_containers_memory_limit(scenario):
    run, files, _leaf = scenario
    assert run.named("start").status == "ok", run.named("start").result
    hog = run.named("hog")
    assert hog.status == "ignored" and hog["rc"] == -9, hog.result  # SIGKILL from the OOM killer
    assert keyed(files["memory.events"])["oom_kill"] >= 1
    assert run.named("sleeper")["left_running"] == 1


def test_stats_match_the_cgroup_files(scenario):
    run, files, leaf = scenario
    item = run.named("info")["containers"][0]
    group = item["cgroup"]
    stats = group["stats"]
    assert item["state"] == "running" and group["path"] == leaf
    assert group["limits"]["memory.max"] == files["memory.max"].strip() == str(64 * MIB)
    assert group["limits"]["pids.max"] == files["pids.max"].strip() == "32"
    assert stats["memory"]["events"] == keyed(files["memory.events"])
    assert stats["memory"]["events"]["oom_kill"] >= 1
    assert stats["memory"]["current"] <= stats["memory"]["peak"] <= int(files["memory.peak"])
    assert 60 * MIB <= stats["memory"]["peak"] <= 64 * MIB  # the hog reached the limit
    # sh, its sleep, and the sleeper the exec left: single-threaded processes, all directly in the leaf
    assert stats["pids"]["current"] == int(files["pids.current"]) == len(files["cgroup.procs"].split()) == 3
    assert stats["processes"] == 3
    assert set(stats["cpu"]) == set(keyed(files["cpu.stat"]))
    assert stats["cpu"]["usage_usec"] <= keyed(files["cpu.stat"])["usage_usec"]
    assert 0 <= stats["cpu_percent"] < 200
    if files["io.stat"] is None:
        assert stats["io"] is None
    else:
        assert set(stats["io"]) <= {line.split()[0] for line in files["io.stat"].splitlines() if line.strip()}
    assert set(stats["pressure"]) == {"cpu", "memory", "io"}
    assert sorted(p["name"] for p in item["processes"]) == ["sh", "sleep", "sleep"]


def test_features_on_a_pure_cgroup_v2_kernel(scenario):
    run, _files, _leaf = scenario
    features = run.named("info")["features"]
    with open("/sys/fs/cgroup/cgroup.controllers") as handle:
        controllers = sorted(handle.read().split())
    assert features["cgroup"]["mode"] == "pure" and features["cgroup"]["mount"] == "/sys/fs/cgroup"
    assert features["cgroup"]["controllers"] == controllers and features["cgroup"]["v1_controllers"] == []
    assert features["cgroup"]["kill"] and features["cgroup"]["freeze"] and features["cgroup"]["memory_peak"]
    assert not [name for name in features["missing"] if name.startswith("cgroup")], features["missing"]
    assert features["kernel"]["release"] == os.uname().release
    assert features["time_namespace"] is True and features["namespaces"]["time"] is True
    with open("/proc/sys/kernel/seccomp/actions_avail") as handle:
        assert features["seccomp"]["actions"] == handle.read().split()
