# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared fixtures of the pure cgroup v2 VM suite.

``tests/vm/run`` boots Debian's kernel under qemu (TCG) with virtme-ng and runs
pytest on this directory inside the VM, as root, on a pure cgroup v2 hierarchy
at /sys/fs/cgroup with every controller.  The host filesystem is read-only in
there: HOME, TMPDIR and Ansible's temp dirs live on a tmpfs (tests/vm/guest.sh).
Under TCG each playbook run costs a minute or more (Ansible builds every
module's AnsiballZ payload once per run, parsing each module_util it needs),
while further tasks of a module already used in the run cost seconds: put a
file's scenarios into one playbook (a module-scoped fixture), and prove limits
by enforcement, never by reading them back.

Waits are for events, never for a time that assumes a fast CPU: on a busy host,
TCG runs ten times slower still (one playbook's first task took over 600 s under
a load of 13).  Playbooks have no timeout of their own; each test's timeout
(tests/conftest.py) bounds it, and the host side (tests/vm/run) streams the
output and each failure's traceback as they come.

To add tests, drop a ``tests/vm/test_*.py`` here; these fixtures are all it needs.
Function-scoped fixtures have a module-scoped twin (``module_parent``,
``module_spawn``) so that a file can set up all its scenarios in one
playbook from a module fixture, then let each test measure its own:

``ansible``        harness.ansible_runner.Ansible with the virtualenv's Python as target (session).
``playbook``       ``playbook(tasks, check=False, diff=False)`` runs a list of task dicts as one play on
                   localhost; returns a PlaybookRun (``run.named("task")`` is one task's TaskResult) (session).
``cgroup_root``    "/sys/fs/cgroup", checked to be pure cgroup v2 with cpu, cpuset, io, memory and pids.
``parent``         a fresh parent group, "kbvm/<test>" (``module_parent``: "kbvm/<module>"), relative to the
                   root.  Afterwards everything in it is killed and removed by an independent reader
                   (cgroup.kill + rmdir bottom-up), never by the code under test.
``cgroup_file``    ``cgroup_file("kbvm/t/web", "memory.events")`` -> the file's text (independent reader).
``spawn``          ``spawn(code)`` starts ``python -c code`` blocked until ``helper.release()``, so the test can
                   move it into a group first; ``helper.finish()`` -> (returncode, stdout, stderr); also
                   ``helper.pid``, ``helper.starttime``, ``helper.cgroup()``, ``helper.alive()``.  Helpers
                   still running afterwards are killed (``module_spawn``: after the module).
``loop_device``    a 64 MiB loop device backed by a tmpfs file, such as "/dev/loop0" (session).
``flat_keyed``     parse "key value" files (memory.events, cpu.stat, pids.events) into {key: int}.

Prerequisites missing (not root, not in the VM, not pure cgroup v2) fail the run; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from harness.ansible_runner import Ansible, venv_bin

CGROUP_ROOT = "/sys/fs/cgroup"
VM_PARENT = "kbvm"
REQUIRED_CONTROLLERS = {"cpu", "cpuset", "io", "memory", "pids"}


_CONFIG = []  # the pytest config, for the terminal reporter
_SHOWN = {}  # traceback text -> the test that showed it first


def pytest_configure(config):
    _CONFIG.append(config)
    if os.geteuid() != 0 or os.environ.get("KB_VM") != "1":
        raise pytest.UsageError("tests/vm runs inside the VM as root: use tests/vm/run (make test does)")
    fstype = None
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if fields[4] == CGROUP_ROOT:
                fstype = fields[fields.index("-") + 1]
    if fstype != "cgroup2":
        raise pytest.UsageError("%s is %s, not cgroup2: the VM is not pure cgroup v2" % (CGROUP_ROOT, fstype))
    with open(os.path.join(CGROUP_ROOT, "cgroup.controllers")) as handle:
        missing = REQUIRED_CONTROLLERS - set(handle.read().split())
    if missing:
        raise pytest.UsageError("the VM kernel lacks cgroup v2 controllers %s" % sorted(missing))


def pytest_runtest_logreport(report):
    """Write each failure's traceback the moment it happens, into the output the host streams and into
    failures.log of the results directory: a VM killed later (a stage timeout) still shows what failed."""
    if not report.failed:
        return
    kind = "FAILED" if report.when == "call" else "ERROR"
    if report.longreprtext in _SHOWN:  # a module fixture's error, raised again for each of its tests
        text = "%s %s (%s): the same error as %s\n" % (kind, report.nodeid, report.when, _SHOWN[report.longreprtext])
    else:
        _SHOWN[report.longreprtext] = report.nodeid
        text = "%s %s (%s):\n%s\n" % (kind, report.nodeid, report.when, report.longreprtext)
    terminal = _CONFIG[0].pluginmanager.get_plugin("terminalreporter") if _CONFIG else None
    if terminal is not None:
        terminal.write_line("")
        terminal.write_line(text)
        terminal.flush()
    results = os.environ.get("KB_VM_RESULTS")
    if results:
        with open(os.path.join(results, "failures.log"), "a") as handle:
            handle.write(text + "\n")


@pytest.fixture(scope="session")
def ansible():
    return Ansible(venv_bin("python"))


@pytest.fixture(scope="session")
def playbook(ansible):
    def run(tasks, check=False, diff=False, timeout=None):
        play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
        return ansible.playbook(json.dumps(play, indent=1), check=check, diff=diff, timeout=timeout)
    return run


@pytest.fixture(scope="session")
def cgroup_root():
    return CGROUP_ROOT


def _read(rel, name):
    with open(os.path.join(CGROUP_ROOT, rel, name)) as handle:
        return handle.read()


@pytest.fixture(scope="session")
def cgroup_file():
    return _read


def _flat_keyed(text):
    return {key: int(value) for key, value in (line.split() for line in text.splitlines() if line.strip())}


@pytest.fixture(scope="session")
def flat_keyed():
    return _flat_keyed


def _remove_tree(rel):
    """Independent cleanup: cgroup.kill, wait for 'populated 0', rmdir deepest first."""
    top = os.path.join(CGROUP_ROOT, rel)
    if not os.path.isdir(top):
        return
    try:
        with open(os.path.join(top, "cgroup.kill"), "w") as handle:
            handle.write("1")
    except OSError:
        pass
    deadline = time.monotonic() + 300  # a wait for the event: it returns as soon as the group is empty
    while "populated 1" in _read(rel, "cgroup.events") and time.monotonic() < deadline:
        time.sleep(0.05)
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        for _attempt in range(100):
            try:
                os.rmdir(dirpath)
                break
            except OSError:
                time.sleep(0.05)


def _fresh_parent(node_name):
    name = re.sub(r"[^a-z0-9]+", "-", node_name.lower()).strip("-")[:60]
    rel = "%s/%s" % (VM_PARENT, name)
    _remove_tree(rel)
    return rel


@pytest.fixture
def parent(request):
    rel = _fresh_parent(request.node.name)
    yield rel
    _remove_tree(rel)
    assert not os.path.exists(os.path.join(CGROUP_ROOT, rel)), "could not remove %s" % rel


@pytest.fixture(scope="module")
def module_parent(request):
    rel = _fresh_parent(request.module.__name__.rsplit(".", 1)[-1])
    yield rel
    _remove_tree(rel)
    assert not os.path.exists(os.path.join(CGROUP_ROOT, rel)), "could not remove %s" % rel


@pytest.fixture(scope="session", autouse=True)
def _vm_parent_removed():
    yield
    _remove_tree(VM_PARENT)


class Helper:
    """A Python child that waits on stdin before running ``code``."""

    def __init__(self, code):
        script = "import sys\nsys.stdin.readline()\n" + code
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        # Identity that survives PID reuse: the start time in clock ticks since boot.
        self.starttime = self.stat_starttime()

    def stat_starttime(self):
        with open("/proc/%d/stat" % self.pid) as handle:
            text = handle.read()
        return int(text[text.rindex(")") + 2:].split()[19])

    def cgroup(self):
        with open("/proc/%d/cgroup" % self.pid) as handle:
            return handle.read().strip().split("::", 1)[1].lstrip("/")

    def alive(self):
        return self.proc.poll() is None

    def release(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout=1200):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        try:
            self.proc.communicate(timeout=10)
        except (ValueError, OSError):
            self.proc.wait(timeout=10)


def _spawner():
    helpers = []

    def start(code):
        helper = Helper(code)
        helpers.append(helper)
        return helper
    return start, helpers


@pytest.fixture
def spawn():
    start, helpers = _spawner()
    yield start
    for helper in helpers:
        helper.kill()


@pytest.fixture(scope="module")
def module_spawn():
    start, helpers = _spawner()
    yield start
    for helper in helpers:
        helper.kill()


@pytest.fixture(scope="session")
def loop_device():
    subprocess.run(["modprobe", "loop"], check=False)  # Debian builds loop as a module
    backing = os.path.join(os.environ.get("KB_VM_SCRATCH", "/run"), "kb-loop.img")
    with open(backing, "wb") as handle:
        handle.truncate(64 << 20)
    made = subprocess.run(["losetup", "--find", "--show", backing], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    assert made.returncode == 0, "losetup failed: %s" % made.stderr
    device = made.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
        os.unlink(backing)
