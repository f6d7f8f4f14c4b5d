# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cgroup_v2 limits proven by enforcement on a pure cgroup v2 kernel, each set through Ansible.

Every workload starts blocked; one playbook (Ansible is slow under TCG) sets
each scenario's limits and moves its workload in with the module's ``pids``
option; then each test releases its workload and measures what the kernel did.
"""

import json
import os
import time

import pytest

MIB = 1 << 20
HOG = "chunks = []\nfor _ in range(256):\n    chunks.append(b'x' * (1 << 20))\nprint('survived')\n"
FORKER = (
    "import errno, json, os\n"
    "r, w = os.pipe()\n"
    "children, failure = [], None\n"
    "for _ in range(10):\n"
    "    try:\n"
    "        pid = os.fork()\n"
    "    except OSError as exc:\n"
    "        failure = exc.errno\n"
    "        break\n"
    "    if pid == 0:\n"
    "        os.close(w)\n"
    "        os.read(r, 1)\n"
    "        os._exit(0)\n"
    "    children.append(pid)\n"
    "print(json.dumps({'forked': len(children), 'errno': failure, 'eagain': errno.EAGAIN}), flush=True)\n"
    "os.close(w)\n"
    "for pid in children:\n"
    "    os.waitpid(pid, 0)\n")
SPINNER = "while True:\n    pass\n"
SLEEPER = "import time\ntime.sleep(600)\n"
WRITER = (
    "import json, mmap, os, time\n"
    "fd = os.open(%r, os.O_WRONLY | os.O_DIRECT)\n"
    "block = mmap.mmap(-1, 65536)\n"
    "block.write(b'k' * 65536)\n"
    "start, written = time.monotonic(), 0\n"
    "while written < %d:\n"
    "    written += os.write(fd, block)\n"
    "print(json.dumps({'seconds': time.monotonic() - start, 'bytes': written}))\n")
IO_SIZE = 4 * MIB
INPLACE_INITIAL = dict(cpu_max={"cpus": 0.5}, memory_max="128M", pids_max=50)
INPLACE_CHANGED = dict(cpu_max={"quota": 150000, "period": 100000}, memory_max="256M", pids_max=100, cpu_weight=300)


def group_task(name, parent, path, **options):
    args = dict(parent=parent, path=path)
    args.update(options)
    return {"name": name, "kernelbox.containers.cgroup_v2": args}


class Scenarios:
    """The workloads, the playbook run that placed them, and where each one lives."""

    def __init__(self, parent, run, helpers):
        self.parent, self.run, self.helpers = parent, run, helpers

    def group(self, name):
        return "%s/%s" % (self.parent, name)


@pytest.fixture(scope="module")
def scenarios(playbook, module_parent, module_spawn, loop_device):
    helpers = {"hog": module_spawn(HOG), "forker": module_spawn(FORKER), "spinner": module_spawn(SPINNER),
               "writer": module_spawn(WRITER % (loop_device, IO_SIZE)),
               "baseline_writer": module_spawn(WRITER % (loop_device, IO_SIZE)),
               "sleeper": module_spawn(SLEEPER)}
    parent = module_parent
    run = playbook([
        group_task("memory", parent, "hog", memory_max="64M", memory_swap_max=0, pids=[helpers["hog"].pid]),
        group_task("pids", parent, "forker", pids_max=5, pids=[helpers["forker"].pid]),
        group_task("cpu", parent, "spin", cpu_max={"cpus": 0.2}, pids=[helpers["spinner"].pid]),
        group_task("io", parent, "io", io_max=[{"device": loop_device, "wbps": "1M"}], pids=[helpers["writer"].pid]),
        group_task("in place: create", parent, "app", pids=[helpers["sleeper"].pid], **INPLACE_INITIAL),
        group_task("in place: change", parent, "app", **INPLACE_CHANGED),
        group_task("in place: again", parent, "app", **INPLACE_CHANGED),
    ], diff=True)
    assert run.failed_tasks == [], [(t.task, t.msg) for t in run.tasks if t.failed]
    return Scenarios(parent, run, helpers)


def test_memory_max_oom_kills_the_allocating_process(scenarios, cgroup_file, flat_keyed):
    hog, group = scenarios.helpers["hog"], scenarios.group("hog")
    assert scenarios.run.named("memory")["limits"] == {"memory.max": str(64 * MIB), "memory.swap.max": "0"}
    assert hog.cgroup() == group
    # Touch every page (b"x" * n writes it): 256 MiB against a 64 MiB limit and no swap.
    hog.release()
    returncode, out, _err = hog.finish()
    assert returncode == -9 and "survived" not in out, (returncode, out)
    events = flat_keyed(cgroup_file(group, "memory.events"))
    assert events["oom_kill"] >= 1 and events["max"] >= 1, events
    assert int(cgroup_file(group, "memory.peak")) <= 64 * MIB


def test_pids_max_makes_fork_fail_with_eagain(scenarios, cgroup_file, flat_keyed):
    forker = scenarios.helpers["forker"]
    assert forker.cgroup() == scenarios.group("forker")
    forker.release()
    returncode, out, err = forker.finish()
    assert returncode == 0, err
    report = json.loads(out)
    # The forker itself is one task: four children fit under pids.max 5, the fifth fork fails.
    assert report["forked"] == 4 and report["errno"] == report["eagain"], report
    assert flat_keyed(cgroup_file(scenarios.group("forker"), "pids.events"))["max"] >= 1


def test_cpu_max_holds_a_busy_loop_near_its_share(scenarios, cgroup_file, flat_keyed):
    spinner, group = scenarios.helpers["spinner"], scenarios.group("spin")
    assert scenarios.run.named("cpu")["limits"]["cpu.max"] == "20000 100000"
    spinner.release()
    time.sleep(0.5)  # let the loop start and the bandwidth timer settle
    before, start = flat_keyed(cgroup_file(group, "cpu.stat")), time.monotonic()
    time.sleep(2.0)
    after, wall = flat_keyed(cgroup_file(group, "cpu.stat")), time.monotonic() - start
    share = (after["usage_usec"] - before["usage_usec"]) / (wall * 1e6)
    # 0.2 CPU over ~2 s; TCG timing is coarse, so allow 0.1..0.3, and demand throttling actually happened.
    assert 0.10 <= share <= 0.30, "busy loop used %.2f CPUs under cpu_max 0.2" % share
    assert after["nr_throttled"] > before["nr_throttled"] and after["throttled_usec"] > before["throttled_usec"]
    assert spinner.alive()
    spinner.kill()  # do not disturb the measurements of the next tests


def test_io_max_throttles_direct_writes_to_a_loop_device(scenarios, loop_device, cgroup_file):
    writer, group = scenarios.helpers["writer"], scenarios.group("io")
    devnum = "%d:%d" % (os.major(os.stat(loop_device).st_rdev), os.minor(os.stat(loop_device).st_rdev))
    assert scenarios.run.named("io")["limits"]["io.max"] == "%s rbps=max wbps=%d riops=max wiops=max" % (devnum, MIB)
    baseline = scenarios.helpers["baseline_writer"]  # stays where it was started: no limit
    baseline.release()
    unlimited = json.loads(baseline.finish()[1])
    writer.release()
    throttled = json.loads(writer.finish()[1])
    rate = throttled["bytes"] / throttled["seconds"] / MIB
    # 4 MiB at 1 MiB/s: about 4 s (the first throttle slice lets a little through early).
    assert 0.5 <= rate <= 1.5, "wrote at %.2f MiB/s under wbps=1M (unthrottled: %.2f s)" % (rate, unlimited["seconds"])
    assert unlimited["seconds"] * 2 < throttled["seconds"], (unlimited, throttled)
    stat = cgroup_file(group, "io.stat")
    wbytes = [int(f.split("=")[1]) for line in stat.splitlines() if line.startswith(devnum + " ")
              for f in line.split() if f.startswith("wbytes=")]
    assert wbytes and wbytes[0] >= IO_SIZE, stat


def test_limits_change_in_place_without_restarting_or_moving_processes(scenarios, cgroup_file):
    sleeper, group = scenarios.helpers["sleeper"], scenarios.group("app")
    run = scenarios.run
    assert run.named("in place: create").changed
    change = run.named("in place: change")
    assert change.changed and change.actions == [
        "set cpu.weight to 300 (was 100)",
        "set cpu.max to 150000 100000 (was 50000 100000)",
        "set memory.max to 268435456 (was 134217728)",
        "set pids.max to 100 (was 50)",
    ], change.actions
    assert change.diff["before"]["limits"]["memory.max"] == "134217728"
    assert change.diff["after"]["limits"]["memory.max"] == "268435456"
    again = run.named("in place: again")
    assert not again.changed and again.actions == []
    # Same process (PID and start time), still running, still in the same group, alone there.
    assert sleeper.alive() and sleeper.stat_starttime() == sleeper.starttime
    assert sleeper.cgroup() == group
    assert cgroup_file(group, "cgroup.procs").split() == [str(sleeper.pid)]
    assert cgroup_file(group, "memory.max").strip() == "268435456"
    assert cgroup_file(group, "cpu.max").strip() == "150000 100000"
