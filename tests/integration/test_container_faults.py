# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Crashes: the module SIGKILLed at each step, the supervisor SIGKILLed or upgraded; every re-run converges.

KERNELBOX_TEST_FAULT=<point> makes the module (or, for supervisor-* points, the supervisor) SIGKILL itself
at that point. The autouse leak check then proves nothing is left: processes, cgroups, mounts, state files.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

from harness.containers import busybox_rootfs, containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import alive, cgroup_parent, leaf_path, log_text, proc_stat, supervisor_pids, wait_until

START_POINTS = ["locked", "persisted", "materialised", "supervisor", "start-sent", "started",
                "supervisor-starting", "supervisor-cgroup", "supervisor-launched"]
STOP_POINTS = [("stopped", "stop-sent"), ("stopped", "stopped"), ("absent", "stop-sent"), ("absent", "removing")]

TASK = """
    - name: %(label)s
      kernelbox.containers.container_process:
        name: %(name)s
        state: %(state)s
        rootfs: %(rootfs)s
        command: [/bin/sleep, "1000"]
        stop_timeout: 0.5
        cgroup: {parent: %(parent)s}
%(extra)s"""

PROCS = """
    - name: %(label)s
      ansible.builtin.command: cat %(leaf)s/cgroup.procs
      changed_when: false
"""


def _task(label, name, rootfs, state="started", fault=None):
    extra = ""
    if fault:
        extra = "      environment: {KERNELBOX_TEST_FAULT: %s}\n      ignore_errors: true\n" % fault
    return TASK % {"label": label, "name": name, "state": state, "rootfs": rootfs, "parent": cgroup_parent(),
                   "extra": extra}


def test_sigkill_of_module_or_supervisor_at_each_start_step_converges(ansible, busybox_rootfs, containers):
    name = containers("kbt-fault")
    tasks = []
    for point in START_POINTS:
        tasks.append(_task("fault %s" % point, name, busybox_rootfs, fault=point))
        tasks.append(_task("converge %s" % point, name, busybox_rootfs))
        tasks.append(PROCS % {"label": "procs %s" % point, "leaf": leaf_path(name)})
        tasks.append(_task("again %s" % point, name, busybox_rootfs))
        tasks.append(_task("absent %s" % point, name, busybox_rootfs, state="absent"))
    run = ansible.playbook("- hosts: localhost\n  gather_facts: false\n  tasks:" + "".join(tasks), timeout=1800)
    assert not run.failed_tasks, run.stdout[-3000:]
    for point in START_POINTS:
        fault = run.named("fault %s" % point)
        if not point.startswith("supervisor-"):  # a supervisor crash may be survived by the module's retry
            assert fault.failed, (point, fault.result)
        converge = run.named("converge %s" % point)
        assert not converge.failed and converge["running"], (point, converge.result)
        # Exactly one process in the leaf: the init; nothing an interrupted start left behind.
        assert run.named("procs %s" % point)["stdout"].split() == [str(converge["pid"])], point
        again = run.named("again %s" % point)
        assert not again.changed and again["pid"] == converge["pid"], (point, again.actions, again.result)
        assert run.named("absent %s" % point).changed
    assert not os.path.exists(leaf_path(name))


def test_sigkill_of_module_while_stopping_or_removing_converges(ansible, busybox_rootfs, containers):
    name = containers("kbt-fault-stop")
    tasks = []
    for state, point in STOP_POINTS:
        label = "%s %s" % (state, point)
        tasks.append(_task("start %s" % label, name, busybox_rootfs))
        tasks.append(_task("fault %s" % label, name, busybox_rootfs, state=state, fault=point))
        tasks.append(_task("converge %s" % label, name, busybox_rootfs, state=state))
        tasks.append(_task("again %s" % label, name, busybox_rootfs, state=state))
    tasks.append(_task("absent at last", name, busybox_rootfs, state="absent"))
    run = ansible.playbook("- hosts: localhost\n  gather_facts: false\n  tasks:" + "".join(tasks), timeout=1800)
    assert not run.failed_tasks, run.stdout[-3000:]
    for state, point in STOP_POINTS:
        label = "%s %s" % (state, point)
        assert run.named("fault %s" % label).failed, label
        assert not run.named("converge %s" % label).failed
        assert not run.named("again %s" % label).changed, label
        pid = run.named("start %s" % label)["pid"]
        assert not alive(pid)
    assert not os.path.exists(leaf_path(name))


def _raw_request(request):
    """The supervisor protocol spoken by hand: one JSON line out, one back."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(30)
    conn.connect("/run/kernelbox/supervisor.sock")
    conn.sendall((json.dumps(request) + "\n").encode())
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.close()
    return json.loads(data)


def _runs_of_numbers(text):
    """The counter lines of the log, one list per run of the container (each run counts from 1)."""
    runs = []
    for line in text.splitlines():
        if line.isdigit():
            if line == "1" or not runs:
                runs.append([])
            runs[-1].append(int(line))
    return runs


def test_supervisor_upgrade_keeps_parenthood_and_death_loses_only_exit_codes(ansible, busybox_rootfs, containers):
    name = containers("kbt-sup")
    counter = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"
    args = {"name": name, "rootfs": busybox_rootfs, "command": ["/bin/sh", "-c", counter], "stop_timeout": 0.5,
            "cgroup": {"parent": cgroup_parent()}}
    first = ansible.module("container_process", args)
    assert first.changed and not first.failed, first.result
    pid, sup = first["pid"], first["supervisor"]["pid"]
    assert int(proc_stat(pid)[1]) == sup

    # Upgrade: the daemon re-executes from another code copy, in place.
    hello = _raw_request({"op": "hello"})
    old_code = hello["code"]
    new_code = old_code.rstrip("/") + "-upgraded"
    shutil.copytree(old_code, new_code)
    try:
        with open(os.path.join(new_code, "kernelbox-supervisor.py"), "a") as handle:
            handle.write("# a newer version\n")
        assert _raw_request({"op": "upgrade", "code": new_code})["ok"]
        assert wait_until(lambda: _raw_request({"op": "hello"})["code"] == new_code, 20)
        after = _raw_request({"op": "hello"})
        assert after["pid"] == sup and after["containers"] == {name: "running"}
        assert int(proc_stat(pid)[1]) == sup and supervisor_pids() == [sup]
        # The module upgrades it back to its own code, and the exit code is still collected by the parent.
        stopped = ansible.module("container_process", dict(args, state="stopped"))
        assert stopped.changed and stopped["exit_code"] == 137 and stopped["exit_signal"] == "SIGKILL"
        assert stopped["exit_note"] is None
    finally:
        shutil.rmtree(new_code, ignore_errors=True)

    # Death: SIGKILL the supervisor; the container keeps running (re-parented), a new supervisor adopts it.
    second = ansible.module("container_process", args)
    pid, sup = second["pid"], second["supervisor"]["pid"]
    os.kill(sup, signal.SIGKILL)
    assert wait_until(lambda: not alive(sup), 5)
    last_before = _runs_of_numbers(log_text(name))[-1][-1]
    time.sleep(1.0)  # the container writes on into its pipe, which nobody reads now
    assert alive(pid, second["starttime"]) and int(proc_stat(pid)[1]) != sup
    adopt = ansible.module("container_process", args)
    assert adopt.changed and adopt.actions == [
        "start a supervisor for container %s (it runs, but the supervisor that started it is gone)" % name]
    assert adopt["pid"] == pid and adopt["supervisor"]["pid"] not in (None, sup)
    assert not ansible.module("container_process", args).changed
    # What it wrote while no supervisor ran waited in the pipe: the new supervisor drains it, nothing is lost.
    assert wait_until(lambda: _runs_of_numbers(log_text(name))[-1][-1] > last_before + 20, 30)
    runs = _runs_of_numbers(log_text(name))
    assert len(runs) == 2 and all(run == list(range(1, len(run) + 1)) for run in runs), [r[-3:] for r in runs]
    # Its exit status now goes to init: the stop works, the exit code is unknown and says why.
    stopped = ansible.module("container_process", dict(args, state="stopped"))
    assert stopped.changed and not alive(pid)
    assert stopped["exit_code"] is None and "init" in stopped["exit_note"]
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


def _sig_caught(pid):
    """The signals a process has caught or has pending, from /proc (an unrelated process must see none)."""
    with open("/proc/%d/status" % pid) as handle:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    return int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)


def test_a_stale_state_file_never_signals_the_process_now_behind_its_pid(ansible, busybox_rootfs, containers):
    """state.json says running, with the PID of an unrelated process (the PID was reused): stop, start and
    absent must see through it (PID and start time are the identity) and never signal that process."""
    name = containers("kbt-stale")
    args = {"name": name, "rootfs": busybox_rootfs, "command": ["/bin/sleep", "1000"], "stop_timeout": 0.5,
            "cgroup": {"parent": cgroup_parent()}}
    assert ansible.module("container_process", args)["running"]
    made = ansible.module("container_process", dict(args, state="stopped"))
    assert made.changed and not made.failed and not made["running"], made.result
    # An unrelated process that ignores nothing: SIGTERM or SIGKILL would end it at once.
    victim = subprocess.Popen(["sleep", "3600"])
    path = "/run/kernelbox/containers/%s/state.json" % name
    try:
        with open(path) as handle:
            runtime = json.load(handle)
        runtime.update(status="running", pid=victim.pid, starttime=int(proc_stat(victim.pid)[19]) + 1,
                       boot_id=runtime.get("boot_id") or open("/proc/sys/kernel/random/boot_id").read().strip())
        with open(path, "w") as handle:
            json.dump(runtime, handle)
        stopped = ansible.module("container_process", dict(args, state="stopped"))
        assert not stopped.failed and stopped["pid"] in (None, victim.pid), stopped.result
        assert alive(victim.pid) and _sig_caught(victim.pid) == 0
        started = ansible.module("container_process", args)
        assert started.changed and started["running"] and started["pid"] != victim.pid, started.result
        assert alive(victim.pid)
        gone = ansible.module("container_process", {"name": name, "state": "absent"})
        assert gone.changed and not alive(started["pid"])
        assert alive(victim.pid) and victim.poll() is None and _sig_caught(victim.pid) == 0
    finally:
        victim.kill()
        victim.wait()
