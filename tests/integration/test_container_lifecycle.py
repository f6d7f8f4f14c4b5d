# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_process lifecycle through Ansible: idempotency, supervision, exit codes, restarts, logs.

Facts are read from /proc, the cgroup filesystem and the files themselves, never through the runtime code.
"""

import json
import os
import subprocess
import threading
import time

from harness.ansible_runner import venv_bin
from harness.containers import busybox_rootfs, containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import (alive, build_busybox_rootfs, cgroup_parent, cgroup_procs, leaf_path, log_text,
                                proc_stat, runtime_state, supervisor_pids, wait_until)

# sh as PID 1 exits 7 on SIGTERM; the loop keeps it responsive (the trap runs between sleeps).
TRAPPING = ["/bin/sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo hello from $$; while :; do sleep 0.1; done"]


def base(name, rootfs, **extra):
    args = {"name": name, "rootfs": rootfs, "command": TRAPPING, "cgroup": {"parent": cgroup_parent()},
            "stop_timeout": 5}
    args.update(extra)
    return args


def test_started_stopped_absent_idempotent_and_outlives_the_module(ansible, busybox_rootfs, containers):
    name = containers("kbt-life")
    args = base(name, busybox_rootfs)

    first = ansible.module("container_process", args)
    assert first.changed and not first.failed, first.result
    assert first.actions == ["create container %s (absent)" % name, "start container %s (state=started)" % name]
    pid, starttime = first["pid"], first["starttime"]
    # The init runs after the module exited, parented by the supervisor, in its own leaf cgroup.
    assert alive(pid, starttime)
    supervisors = supervisor_pids()
    assert len(supervisors) == 1 and int(proc_stat(pid)[1]) == supervisors[0]
    assert first["supervisor"]["pid"] == supervisors[0]
    assert pid in cgroup_procs(leaf_path(name))
    # The supervisor runs from the code copy, never from the module's (deleted) AnsiballZ payload.
    sup = supervisors[0]
    cmdline = open("/proc/%d/cmdline" % sup, "rb").read().split(b"\0")
    assert any(arg.startswith(b"/var/lib/kernelbox/runtime/") for arg in cmdline), cmdline
    held = [os.readlink("/proc/%d/fd/%s" % (sup, fd)) for fd in os.listdir("/proc/%d/fd" % sup)]
    maps = open("/proc/%d/maps" % sup).read()
    assert not [p for p in held if "ansible" in p] and "ansible_" not in maps
    assert "hello from 1" in log_text(name)  # PID 1 of its own PID namespace

    again = ansible.module("container_process", args)
    assert not again.changed and again.actions == [], again.result
    assert (again["pid"], again["starttime"]) == (pid, starttime)

    planned = ansible.module("container_process", dict(args, state="stopped"), check=True)
    assert planned.changed and planned.actions == ["stop container %s (state=stopped)" % name]
    assert alive(pid, starttime)

    stopped = ansible.module("container_process", dict(args, state="stopped"))
    assert stopped.changed and not alive(pid)
    assert stopped["status"] == "exited" and stopped["exit_code"] == 7 and stopped["exited_at"], stopped.result
    assert runtime_state(name)["exit_code"] == 7
    assert "got TERM" in stopped["log_tail"]
    # Nothing supervised any more: the supervisor is gone too.
    assert wait_until(lambda: not supervisor_pids(), 5) is True
    stopped_again = ansible.module("container_process", dict(args, state="stopped"))
    assert not stopped_again.changed and stopped_again["exit_code"] == 7

    restarted = ansible.module("container_process", args)
    assert restarted.changed and restarted.actions == ["start container %s (exited with code 7)" % name]
    assert alive(restarted["pid"]) and restarted["pid"] != pid

    gone = ansible.module("container_process", dict(name=name, state="absent"))
    assert gone.changed and gone.actions[0] == "stop container %s (state=absent)" % name
    assert not alive(restarted["pid"]) and not os.path.exists(leaf_path(name))
    assert not os.path.exists("/run/kernelbox/containers/%s" % name)
    assert not os.path.exists("/var/lib/kernelbox/containers/%s" % name)
    gone_again = ansible.module("container_process", dict(name=name, state="absent"))
    assert not gone_again.changed and gone_again["exists"] is False


def test_check_mode_and_diff_change_nothing(ansible, busybox_rootfs, containers, host_state):
    name = containers("kbt-check")
    before = host_state()
    planned = ansible.module("container_process", base(name, busybox_rootfs), check=True, diff=True)
    assert planned.changed and not planned.failed, planned.result
    assert planned.actions == ["create container %s (absent)" % name, "start container %s (state=started)" % name]
    assert planned.diff["before"] == {"state": "absent"}
    assert planned.diff["after"]["state"] == "running"
    assert planned.diff["after"]["config"]["process"]["args"] == TRAPPING
    assert host_state() == before and not supervisor_pids()


def test_bad_input_fails_early_and_changes_nothing(ansible, busybox_rootfs, containers, host_state, tmp_path):
    name = containers("kbt-bad")
    linked = tmp_path / "linked-proc"  # a rootfs whose /proc is a symlink: the launcher would refuse it
    (linked / "bin").mkdir(parents=True)
    os.symlink("/etc", str(linked / "proc"))
    os.symlink(busybox_rootfs + "/bin/busybox", str(linked / "bin" / "sh"))
    before = host_state()
    cases = [
        (dict(base(name, busybox_rootfs), name="bad/name"), "not a valid container name"),
        (base(name, busybox_rootfs, restart_policy="sometimes"), "restart_policy"),
        (base(name, busybox_rootfs, stop_signal="SIGNOPE"), "stop_signal"),
        (base(name, busybox_rootfs, cap_add=["CAP_FLY"]), "unknown capability"),
        (base(name, busybox_rootfs, wait_for={"port": 1, "file": "/x"}), "exactly one"),
        (base(name, "/nonexistent/rootfs"), "rootfs: /nonexistent/rootfs is not a directory"),
        (base(name, busybox_rootfs, cgroup={"parent": cgroup_parent(), "memory_max": "64M"}), "memory"),
        (dict(name=name, oci_config={"process": {"args": ["x"]}}, command=["y"]), "oci_config"),
        (base(name, busybox_rootfs, hostname="web\n10.6.6.6 evil"), "not a valid host name"),
        (base(name, busybox_rootfs, dns=["1.1.1.1"], dns_options=["ndots:1\nnameserver 10.6.6.6"]), "dns_options"),
        # What once failed only at launch (changed: true, the runtime copy left) now fails before any write:
        (base(name, busybox_rootfs, cwd="/kbt-nowhere"), "process.cwd: /kbt-nowhere cannot be entered in the rootfs"),
        (base(name, busybox_rootfs, command=["kbt-no-such-command"]),
         "process.args[0]: kbt-no-such-command is not found in the rootfs"),
        (base(name, busybox_rootfs, command=["/bin/kbt-missing"]), "process.args[0]: /bin/kbt-missing is not found"),
        (base(name, str(linked)), "/proc in the rootfs %s is a symlink" % linked),
        (base(name, busybox_rootfs, env={"A": "x\u0000y"}), "contains a NUL byte"),
        (base(name, busybox_rootfs, mounts=[{"source": "/kbt/no/such/dir", "destination": "/data"}]),
         "mounts: the source of the bind mount onto /data, /kbt/no/such/dir, does not exist on the host"),
        (base(name, busybox_rootfs, namespaces={"netns": "kbt-no-such-netns"}),
         "the network namespace to join, /run/netns/kbt-no-such-netns, cannot be opened"),
        (base(name, busybox_rootfs, command=["/bin/echo"] + ["x" * 100000] * 25), "execve takes at most"),
        (base(name, busybox_rootfs, command=["/bin/echo", "x" * 200000]), "execve takes at most 131071 per string"),
        (base(name, busybox_rootfs, mounts=[{"type": "tmpfs", "destination": "/scratch", "size": "lots"}]),
         "mounts[0].size: 'lots' is not a tmpfs size"),
    ]
    tasks = [{"name": "case %d" % index, "kernelbox.containers.container_process": args, "ignore_errors": True}
             for index, (args, _message) in enumerate(cases)]
    run = ansible.playbook(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]) + "\n")
    for index, (args, message) in enumerate(cases):
        result = run.named("case %d" % index)
        assert result.failed and message in result.msg, (args, result.result)
        assert not result.changed
    assert host_state() == before and not supervisor_pids()


def test_mount_points_made_in_the_rootfs_go_with_the_last_container_using_it(
        ansible, containers, tmp_path, cgroup_test_parent):
    """A rootfs without /etc/hosts and /etc/hostname gets empty ones as mount points (as runc makes mount
    targets); state=absent takes them back, unless another container still runs from that rootfs."""
    root = build_busybox_rootfs(str(tmp_path / "rootfs"))
    os.chmod(str(tmp_path), 0o755)
    made = [os.path.join(root, "etc", name) for name in ("hosts", "hostname")]
    first, second = containers("kbt-made-a"), containers("kbt-made-b")
    assert ansible.module("container_process", base(first, root))["running"]
    assert all(os.path.getsize(path) == 0 for path in made)  # empty: the content is bound over them
    assert ansible.module("container_process", base(second, root))["running"]
    gone = ansible.module("container_process", {"name": first, "state": "absent"})
    assert gone.changed and "mount point" not in gone.actions[-1], gone.actions  # the second one uses them
    assert all(os.path.exists(path) for path in made)
    last = ansible.module("container_process", {"name": second, "state": "absent"})
    assert last.actions[-1] == ("remove container %s (state, log, cgroup %s, 2 mount points its starts made in the "
                                "rootfs) (state=absent)" % (second, leaf_path(second))), last.actions
    assert not any(os.path.exists(path) for path in made)


def test_exit_code_and_restart_policy(ansible, busybox_rootfs, containers):
    """on-failure:2 restarts a crashing command twice, then records its last exit code."""
    crash = containers("kbt-crash")
    always = containers("kbt-always")
    play = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: crash
      kernelbox.containers.container_process:
        name: %(crash)s
        rootfs: %(rootfs)s
        command: [/bin/sh, -c, "echo run; exit 3"]
        restart_policy: on-failure:2
        cgroup: {parent: %(parent)s}
    - name: always
      kernelbox.containers.container_process:
        name: %(always)s
        rootfs: %(rootfs)s
        command: [/bin/sh, -c, "echo run; sleep 0.3; exit 0"]
        restart_policy: always
        stop_timeout: 2
        cgroup: {parent: %(parent)s}
""" % {"crash": crash, "always": always, "rootfs": busybox_rootfs, "parent": cgroup_parent()}
    run = ansible.playbook(play)
    assert run.rc == 0, run.stdout
    done = wait_until(lambda: (runtime_state(crash) or {}).get("status") == "exited", 15)
    assert done, runtime_state(crash)
    record = runtime_state(crash)
    assert record["exit_code"] == 3 and record["restart_count"] == 2 and record["exited_at"]
    assert log_text(crash).count("run\n") == 3  # the first run and two restarts, no more
    # 'always' restarts even a clean exit ...
    assert wait_until(lambda: (runtime_state(always) or {}).get("restart_count", 0) >= 2, 15)
    # ... and a stop is never undone by it.
    stop = ansible.module("container_process", {"name": always, "state": "stopped"})
    assert stop.changed and not stop.failed, stop.result
    runs = log_text(always).count("run\n")
    time.sleep(1.5)
    assert log_text(always).count("run\n") == runs
    assert runtime_state(always)["status"] == "exited"
    info = ansible.module("container_process", {"name": crash, "state": "stopped"})
    assert not info.changed and info["exit_code"] == 3 and info["restart_count"] == 2
    for name in (crash, always):
        assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


def test_concurrent_runs_start_exactly_one_container(ansible, busybox_rootfs, containers):
    name = containers("kbt-race")
    args = base(name, busybox_rootfs)
    results = [None, None]

    def run(index):
        results[index] = ansible.module("container_process", args)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not any(r.failed for r in results), [r.result for r in results]
    assert sorted(r.changed for r in results) == [False, True]
    assert results[0]["pid"] == results[1]["pid"]
    assert results[0]["pid"] in cgroup_procs(leaf_path(name))
    assert log_text(name).count("hello from") == 1
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


def test_log_is_capped_and_rotated(ansible, busybox_rootfs, containers):
    name = containers("kbt-log")
    writer = "i=0; while :; do i=$((i+1)); echo line $i; [ $((i % 200)) = 0 ] && sleep 0.05; done"
    args = base(name, busybox_rootfs, command=["/bin/sh", "-c", writer], log={"max_size": "64K", "tail_lines": 3})
    first = ansible.module("container_process", args)
    assert first.changed, first.result
    log = "/var/lib/kernelbox/containers/%s/container.log" % name
    assert wait_until(lambda: os.path.exists(log + ".1"), 10)
    time.sleep(2)
    # Capped at 64 KiB as the supervisor writes it from the container's pipe: never more than one more chunk.
    for path in (log, log + ".1"):
        assert os.path.getsize(path) <= (64 + 64) * 1024, (path, os.path.getsize(path))
    assert sorted(set(os.listdir(os.path.dirname(log))) - {"rootfs-created.json"}) == [
        "config.json", "container.json", "container.log", "container.log.1"]
    again = ansible.module("container_process", args)
    assert not again.changed and len(again["log_tail"]) == 3 and again["log_tail"][-1].startswith("line ")
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed
    assert not os.path.exists(log + ".1")


def test_boot_starts_enabled_containers(ansible, busybox_rootfs, containers):
    """Without systemd, `kernelbox-supervisor.py boot` (from the host's boot scripts) starts enabled containers."""
    enabled, disabled = containers("kbt-boot-on"), containers("kbt-boot-off")
    tasks = [{"name": name,
              "kernelbox.containers.container_process": dict(base(name, busybox_rootfs), enabled=on, state="stopped")}
             for name, on in ((enabled, True), (disabled, False))]
    run = ansible.playbook(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]) + "\n")
    assert run.rc == 0 and all(task.changed for task in run.tasks), run.stdout[-2000:]
    assert (runtime_state(enabled) or {}).get("status") in (None, "created")
    boot = subprocess.run([venv_bin("python"), "-I", "-S",
                           "/var/lib/kernelbox/runtime/current/kernelbox-supervisor.py", "boot"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
    assert boot.returncode == 0, boot.stdout
    record = runtime_state(enabled)
    assert record["status"] == "running" and alive(record["pid"], record["starttime"]), boot.stdout
    assert (runtime_state(disabled) or {}).get("status") in (None, "created")
    gone = ansible.playbook(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "absent %s" % name, "kernelbox.containers.container_process": {"name": name, "state": "absent"}}
        for name in (enabled, disabled)]}]) + "\n")
    assert gone.rc == 0, gone.stdout[-2000:]
