# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_process limits on a pure cgroup v2 kernel, proven by enforcement.

memory_max OOM-kills the container (exit 137, memory.events oom_kill), pids_max stops a fork bomb
(pids.events max), and raising pids_max in place lets the same init fork further without a restart.
"""

import json
import os
import shutil
import tempfile
import time

import pytest

from harness.containers import build_busybox_rootfs

# awk's system() returns -1 when fork fails and the loop goes on, so PID 1 survives the limit (a shell would
# exit on "can't fork", and with it the container) and keeps pushing against pids.max.
BOMB = 'exec awk \'BEGIN { while (1) { system("sleep 1000 &"); system("sleep 0.05") } }\''
HOG = "echo start; x=0123456789; while :; do x=$x$x; done"
# Waits are for events; this bound only stops a wait that will never end (TCG on a busy host is very slow).
EVENT_WAIT = 1200


def _state(name):
    try:
        with open("/run/kernelbox/containers/%s/state.json" % name) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def _until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


@pytest.fixture(scope="module")
def rootfs():
    top = tempfile.mkdtemp(prefix="kbvm-rootfs-")
    os.chmod(top, 0o755)
    try:
        yield build_busybox_rootfs(os.path.join(top, "rootfs"))
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _container(label, name, rootfs, parent, command, **cgroup):
    return {"name": label, "kernelbox.containers.container_process": {
        "name": name, "rootfs": rootfs, "command": ["/bin/sh", "-c", command], "stop_timeout": 1,
        "cgroup": dict(cgroup, parent=parent)}}


def test_memory_max_oom_kills_and_pids_max_stops_a_fork_bomb_raised_in_place(
        playbook, module_parent, rootfs, cgroup_file, flat_keyed):
    oom, bomb = "kbvm-oom", "kbvm-bomb"
    try:
        run = playbook([_container("oom", oom, rootfs, module_parent, HOG, memory_max="32M", memory_swap_max=0),
                        _container("bomb", bomb, rootfs, module_parent, BOMB, pids_max=16)])
        assert not run.failed_tasks, run.stdout[-3000:]
        # memory.max: the kernel's OOM killer ends the container; its exit is recorded as SIGKILL.
        record = _until(lambda: _state(oom).get("status") == "exited" and _state(oom), EVENT_WAIT)
        assert record and record["exit_code"] == 137 and record["exit_signal"] == "SIGKILL", _state(oom)
        events = flat_keyed(cgroup_file("%s/%s" % (module_parent, oom), "memory.events"))
        assert events["oom_kill"] >= 1, events
        # pids.max: the bomb is held at 16 tasks and the kernel counts the refused forks.
        leaf = "%s/%s" % (module_parent, bomb)
        assert _until(lambda: flat_keyed(cgroup_file(leaf, "pids.events"))["max"] > 0, EVENT_WAIT)
        # The bomb's short-lived shells come and go, so the count reaches 16 again and again rather than stays there
        # (reading it once raced them): wait for it to be full, and it never goes past the limit.
        counts = []
        assert _until(lambda: counts.append(int(cgroup_file(leaf, "pids.current"))) or counts[-1] == 16, EVENT_WAIT)
        assert max(counts) == 16, counts
        first = run.named("bomb")
        # Raised in place: the same init forks further, no restart.
        raised = playbook([_container("raise", bomb, rootfs, module_parent, BOMB, pids_max=40)])
        result = raised.named("raise")
        assert result.changed and result.actions == [
            "apply cgroup limits in place: pids.max 16 -> 40 (only linux.resources changed: no restart)"]
        assert (result["pid"], result["starttime"]) == (first["pid"], first["starttime"])
        assert _until(lambda: int(cgroup_file(leaf, "pids.current")) > 16, EVENT_WAIT)
        assert int(cgroup_file(leaf, "pids.current")) <= 40
    finally:
        gone = playbook([{"name": "absent %s" % name, "kernelbox.containers.container_process":
                          {"name": name, "state": "absent"}} for name in (oom, bomb)])
        assert not gone.failed_tasks, gone.stdout[-2000:]
    assert not os.path.exists("/sys/fs/cgroup/%s/%s" % (module_parent, bomb))
