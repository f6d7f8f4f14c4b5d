# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""cgroup_v2's EXAMPLES, run as written on a pure cgroup v2 kernel (the development host is hybrid, so
tests/integration/test_module_examples.py lists the module in RUN_IN_VM and leaves it to this file).

The tasks are read from the module file of the collection installed from its tarball and run in one playbook,
in the order they are written.  Only the values that name this guest's hardware or processes are mapped:

- every task's group goes below this file's parent group (``module_parent``), not the default ``kernelbox``;
- ``/dev/sda`` is a loop device (the guest has no disk of its own) and cpuset ``0-3`` the guest's CPUs;
- ``web_pid`` is a sleeping process the test starts;
- the systemd Delegate example's parent (``system.slice/kernelbox.service/containers``) is a group the test makes
  below ``module_parent``, as systemd would make it for a unit with Delegate=yes (no systemd runs as PID 1 here).

Between the examples, reader tasks (``cat`` of the cgroup files, independent of the module) record what the kernel
holds, since the last example removes the group.  The test then checks what each example states.
"""

import ast
import os
import subprocess

import pytest
import yaml

from harness.ansible_runner import collections_path

MIB = 1 << 20
MODULE_FILE = os.path.join(collections_path(), "ansible_collections", "kernelbox", "containers", "plugins",
                           "modules", "cgroup_v2.py")
DELEGATED = "system.slice/kernelbox.service/containers"
FILES = ["cpu.max", "cpu.weight", "memory.max", "memory.high", "memory.swap.max", "pids.max", "io.max",
         "cpuset.cpus", "memory.oom.group", "cgroup.procs", "cgroup.freeze", "cgroup.events"]


def _examples():
    with open(MODULE_FILE, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "EXAMPLES":
            return yaml.safe_load(node.value.value)
    raise AssertionError("%s has no EXAMPLES" % MODULE_FILE)


def _devnum(device):
    rdev = os.stat(device).st_rdev
    return "%d:%d" % (os.major(rdev), os.minor(rdev))


def _mapped(tasks, parent, device):
    """The examples with this guest's parent group, block device and CPUs; fails if an expected value moved."""
    cpus = "0-%d" % (os.cpu_count() - 1)
    seen = set()
    for entry in tasks:
        args = entry.get("kernelbox.containers.cgroup_v2")
        if args is None:
            continue
        if args.get("parent") == DELEGATED:
            args["parent"] = "%s/%s" % (parent, DELEGATED)
            seen.add("delegated")
        else:
            assert "parent" not in args, "an example with a parent this runner does not map: %s" % entry["name"]
            args["parent"] = parent
        for limit in args.get("io_max", []):
            assert limit["device"] == "/dev/sda", limit
            limit["device"] = device
            seen.add("device")
        if "cpuset_cpus" in args:
            assert args["cpuset_cpus"] == "0-3", args
            args["cpuset_cpus"] = cpus
            seen.add("cpus")
    assert seen == {"delegated", "device", "cpus"}, "the examples changed; update the mapping (mapped: %s)" % seen
    return tasks


def _reader(name, group, files=None):
    """A task that prints the group's files as the kernel holds them, 'file:line' per line."""
    return {"name": name, "ansible.builtin.command": {
        "argv": ["grep", "-H", "", *(files or FILES)], "chdir": os.path.join("/sys/fs/cgroup", group)}, "changed_when": False}


def _files(result):
    files = {}
    for line in result["stdout"].splitlines():
        name, _sep, value = line.partition(":")
        files.setdefault(name, []).append(value)
    return {name: "\n".join(lines) for name, lines in files.items()}


@pytest.fixture(scope="module")
def examples(ansible, module_parent, module_spawn, loop_device):
    # The group systemd would make for a unit with Delegate=yes; controllers are left for the module to enable.
    os.makedirs(os.path.join("/sys/fs/cgroup", module_parent, DELEGATED))
    web = module_spawn("import time\ntime.sleep(3600)\n")
    tasks = _mapped(_examples(), module_parent, loop_device)
    names = [entry["name"] for entry in tasks]
    web_group = module_parent + "/web"
    # Readers after the first example (its limits), and after the freeze (the raised limit, the moved pid).
    tasks.insert(names.index("A group for a web container, with limits") + 1, _reader("read: created", web_group))
    tasks.insert(names.index("Freeze everything inside") + 2, _reader("read: frozen", web_group))
    tasks.insert(names.index("Inside a systemd service with Delegate=yes") + 3,
                 _reader("read: delegated", "%s/%s/web" % (module_parent, DELEGATED), ["memory.max"]))
    play = yaml.safe_dump([{"name": "cgroup_v2 EXAMPLES", "hosts": "localhost", "gather_facts": False,
                            "vars": {"web_pid": web.pid}, "tasks": tasks}], sort_keys=False)
    run = ansible.playbook(play)
    after = {"web exists": os.path.exists(os.path.join("/sys/fs/cgroup", web_group)),
             "delegated web exists": os.path.exists(os.path.join("/sys/fs/cgroup", module_parent, DELEGATED, "web"))}
    try:
        web.proc.wait(timeout=600)  # the absent example kills it; returns as soon as it is gone
    except subprocess.TimeoutExpired:  # reported by the absent test below
        pass
    return {"run": run, "names": names, "web": web, "after": after, "device": loop_device, "parent": module_parent}


def test_every_example_runs_and_succeeds(examples):
    run = examples["run"]
    failed = [(t.task, t.msg) for t in run.tasks if t.failed]
    assert run.rc == 0 and not failed, "failed examples: %s\n%s" % (failed, run.stdout[-4000:])
    ran = {t.task for t in run.tasks}
    assert set(examples["names"]) <= ran, "examples that did not run: %s" % (set(examples["names"]) - ran)
    for name in examples["names"]:
        if name != "Show the memory use":
            assert run.named(name).changed, "%s reported no change: %s" % (name, run.named(name).result)


def test_the_first_example_sets_its_limits(examples):
    files = _files(examples["run"].named("read: created"))
    assert files["cpu.max"] == "150000 100000"
    assert files["cpu.weight"] == "200"
    assert files["memory.max"] == str(512 * MIB)
    assert files["memory.high"] == str(448 * MIB)
    assert files["memory.swap.max"] == "0"
    assert files["pids.max"] == "256"
    assert files["io.max"] == "%s rbps=max wbps=%d riops=2000 wiops=max" % (_devnum(examples["device"]), 50 * MIB)
    assert files["cpuset.cpus"] == "0-%d" % (os.cpu_count() - 1)
    assert files["memory.oom.group"] == "1"
    assert files.get("cgroup.procs", "") == "", files


def test_the_debug_example_shows_the_memory_stats(examples):
    msg = examples["run"].named("Show the memory use")["msg"]
    assert msg.endswith(" bytes, OOM kills 0") and msg.split()[0].isdigit(), msg


def test_the_limit_is_raised_in_place_the_pid_moved_and_the_group_frozen(examples):
    files = _files(examples["run"].named("read: frozen"))
    assert files["memory.max"] == str(1 << 30)
    assert files["memory.high"] == str(448 * MIB) and files["pids.max"] == "256"  # the others are kept
    assert files["cgroup.procs"].split() == [str(examples["web"].pid)]
    assert files["cgroup.freeze"] == "1"
    assert "frozen 1" in files["cgroup.events"].splitlines(), files["cgroup.events"]


def test_the_delegated_example_goes_below_the_given_parent(examples):
    files = _files(examples["run"].named("read: delegated"))
    assert files["memory.max"] == str(512 * MIB)


def test_the_absent_example_kills_and_removes_the_group(examples):
    assert not examples["after"]["web exists"], "the absent example left %s/web" % examples["parent"]
    assert examples["web"].proc.poll() is not None, "web_pid %d survived the absent example" % examples["web"].pid
    # The absent example names web below the default parent only: the delegated group stays (the parent group's
    # cleanup removes it), as the module's documentation says of state=absent.
    assert examples["after"]["delegated web exists"]
