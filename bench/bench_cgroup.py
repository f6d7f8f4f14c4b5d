# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cgroup_v2: the cost of a no-change run, and how it grows with 1, 100 and 1000 sibling groups.

Two measurements, each against a baseline taken in the same run:

* the module's own work (validate, read, plan, stats; ``flow.execute`` of the
  installed collection, without Ansible's process start-up) against reading
  the same interface files with plain ``open().read()``: the floor any tool
  pays;
* a whole Ansible task (``ansible -m cgroup_v2``) against ``ansible -m stat``
  of the same directory: the fixed cost of any Ansible module.

Each is repeated with 1, 100 and 1000 sibling groups next to the measured
one; the module never lists its parent, so the cost must stay flat.

This host's cgroup v2 is hybrid (no memory, cpu, io, pids or cpuset
controller), so here the group carries what the host supports (members and
the freezer).  The run with *every limit set* happens in the pure cgroup v2
VM: this script re-runs itself there through ``tests/vm/run --script``
(in-process measurement only; an Ansible task costs tens of seconds under
TCG, which would measure qemu, not the module).  ``--here`` skips the VM.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, ansible, interleaved, median, table  # noqa: E402
from harness.ansible_runner import collections_path  # noqa: E402

sys.path.insert(0, collections_path())
from ansible_collections.kernelbox.containers.plugins.module_utils._glue import flow  # noqa: E402
from ansible_collections.kernelbox.containers.plugins.module_utils._glue.cgroup_v2 import (  # noqa: E402
    ARGUMENT_SPEC, CgroupResource)
from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup  # noqa: E402

SIBLINGS = (1, 100, 1000)
IN_VM = os.environ.get("KB_VM") == "1"
FULL_CONTROLLERS = {"cpu", "cpuset", "io", "memory", "pids"}


def params(**given):
    values = {name: spec.get("default") for name, spec in ARGUMENT_SPEC.items()}
    values.update(given)
    return values


def loop_device():
    subprocess.run(["modprobe", "loop"], check=False)
    backing = "/run/kb-bench-loop.img"
    with open(backing, "wb") as handle:
        handle.truncate(16 << 20)
    device = subprocess.run(["losetup", "--find", "--show", backing], stdout=subprocess.PIPE, text=True,
                            check=True).stdout.strip()
    return device, backing


def group_args(parent, full, device):
    args = dict(parent=parent, path="measured", freeze=False)
    if full:
        args.update(cpu_max={"cpus": 1.5}, cpu_weight=200, memory_max="512M", memory_high="448M", memory_low="16M",
                    memory_swap_max="0", pids_max="256", io_max=[{"device": device, "wbps": "50M", "riops": 2000}],
                    cpuset_cpus="0-1", cpuset_mems="0", settings={"memory.oom.group": 1, "cpu.idle": 0})
    return args


def raw_reader(group, files):
    names = list(files) + ["cgroup.controllers", "cgroup.freeze", "cgroup.events", "cgroup.procs", "cpu.stat",
                           "memory.current", "memory.peak", "memory.events", "pids.current", "io.stat",
                           "cpu.pressure", "memory.pressure", "io.pressure"]
    paths = [os.path.join(group.path, name) for name in names if os.path.exists(os.path.join(group.path, name))]

    def read_all():
        for path in paths:
            with open(path) as handle:
                handle.read()
    return read_all


def make_siblings(parent_path, count):
    for index in range(count):
        os.makedirs(os.path.join(parent_path, "sib-%04d" % index), exist_ok=True)


def flow_no_change(args):
    outcome = flow.execute(CgroupResource(params(**args)))
    assert not outcome.changed and not outcome.failed, (outcome.actions, outcome.msg)


def ansible_no_change(runner, args):
    outcome = runner.module("cgroup_v2", args)
    assert not outcome.changed and not outcome.failed, outcome.msg


def in_process(parent, args, rounds):
    """Median ms of a no-change flow run and of the raw reads, per sibling count.

    One parent per sibling count (the measured group plus N-1 siblings), all
    measured interleaved, so machine noise hits every count alike.
    """
    candidates = {}
    for count in SIBLINGS:
        count_args = dict(args, parent="%s/n%d" % (parent, count))
        first = flow.execute(CgroupResource(params(**count_args)))
        assert not first.failed, first.msg
        group = cgroup.resolve(count_args["path"], count_args["parent"])
        make_siblings(group.parent().path, count - 1)

        candidates["flow %d" % count] = functools.partial(flow_no_change, count_args)
        candidates["raw %d" % count] = raw_reader(group, first.result["limits"])
    samples = interleaved(candidates, rounds)
    return [(n, median(samples["flow %d" % n]) * 1000, median(samples["raw %d" % n]) * 1000) for n in SIBLINGS]


def through_ansible(parent, args, rounds):
    """Median s of an ad-hoc no-change cgroup_v2 task and of ansible.builtin.stat, for 1 and 1000 siblings
    (the groups in_process() made)."""
    runner = ansible()
    candidates = {}
    for count in (1, 1000):
        count_args = dict(args, parent="%s/n%d" % (parent, count))
        path = cgroup.resolve(count_args["path"], count_args["parent"]).path

        candidates["cgroup_v2 %d" % count] = functools.partial(ansible_no_change, runner, count_args)
        candidates["stat %d" % count] = functools.partial(runner.module, "ansible.builtin.stat", {"path": path})
    samples = interleaved(candidates, rounds)
    return [(n, median(samples["cgroup_v2 %d" % n]), median(samples["stat %d" % n])) for n in (1, 1000)]


def report(where, rows, full):
    what = "every limit set" if full else "members + freezer (no controllers on this host)"
    base = rows[0][1]
    table("cgroup_v2 no-change run in-process, %s: %s (median ms)" % (where, what),
          [(n, module, raw, module / raw, module / base) for n, module, raw in rows],
          ["siblings", "cgroup_v2 flow ms", "raw reads ms", "ratio to raw", "vs 1 sibling"])


def main(argv):
    hierarchy = cgroup.find_hierarchy()
    full = FULL_CONTROLLERS <= hierarchy.controllers
    top = os.environ.get("KB_TEST_CGROUP_PARENT", "") if not IN_VM else ""
    parent = (top + "/kbbench").strip("/")
    device, backing = loop_device() if full else (None, None)
    args = group_args(parent, full, device)
    try:
        where = "pure cgroup v2 VM (qemu TCG)" if IN_VM else "this host (%s)" % hierarchy.layout
        report(where, in_process(parent, args, rounds=60 if IN_VM else 200), full)
        if not IN_VM:
            rows = through_ansible(parent, args, rounds=5)
            table("cgroup_v2 no-change Ansible task, this host (median s)",
                  [(n, module, stat, module / stat) for n, module, stat in rows],
                  ["siblings", "cgroup_v2 s", "ansible.builtin.stat s", "ratio to stat"])
    finally:
        parts = parent.split("/")
        cgroup.kill_and_remove(cgroup.resolve(parts[-1], "/".join(parts[:-1]) or "/"))
        if device:
            subprocess.run(["losetup", "--detach", device], check=False)
            os.unlink(backing)
    if not full and not IN_VM and "--here" not in argv:
        print("\nEvery limit needs pure cgroup v2: measuring again inside the VM (tests/vm/run) ...", flush=True)
        started = time.monotonic()
        status = subprocess.call([os.path.join(REPO, "tests", "vm", "run"), "--script", "bench/bench_cgroup.py"])
        print("(VM run took %.0f s, status %d)" % (time.monotonic() - started, status))
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
