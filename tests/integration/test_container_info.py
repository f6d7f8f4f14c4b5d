# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_info through Ansible, on containers in every state, checked against the kernel's own files.

Every value is compared with an independent reader: /proc (namespace inodes, PID namespace members),
cgroupfs (cgroup.procs, cpu.stat, pressure files), ``nsenter ... ip -j addr`` and the log file itself.
"""

import json
import os
import subprocess

from harness.containers import busybox_rootfs, containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import alive, cgroup_parent, cgroup_procs, leaf_path, log_text, runtime_state, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNING = ["/bin/sh", "-c", "trap 'exit 0' TERM; echo line-one; echo line-two; sleep 1000 & wait"]


def task(name, module, args, **keywords):
    item = {"name": name, "kernelbox.containers." + module: args}
    item.update(keywords)
    return item


def play(ansible, tasks, **kwargs):
    run = ansible.playbook(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}], indent=1),
                           **kwargs)
    assert run.tasks, "the playbook did not run (rc %d): %s" % (run.rc, run.stderr)
    for item in run.tasks:
        if item.status == "failed":
            raise AssertionError("task %r failed: %s" % (item.task, item.result))
    return run


def container(name, rootfs, command, **extra):
    args = {"name": name, "rootfs": rootfs, "command": command, "hostname": name, "stop_timeout": 5,
            "cgroup": {"parent": cgroup_parent()}}
    args.update(extra)
    return args


def pid_namespace_members(pid):
    """Every process in the PID namespace of ``pid``, from a scan of /proc of our own."""
    inode = os.stat("/proc/%d/ns/pid" % pid).st_ino
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat("/proc/%s/ns/pid" % entry).st_ino == inode:
                    members.append(int(entry))
            except OSError:
                continue
    return sorted(members)


def flat_keyed(path):
    with open(path) as handle:
        return {key: int(value) for key, value in (line.split() for line in handle if line.strip())}


def test_info_on_containers_in_every_state(any_ansible, busybox_rootfs, containers, host_state):
    """Once with each target Python: PyPI psutil 7 and Debian's psutil 5.9."""
    ansible = any_ansible
    running = containers("kbt-info-run")
    exited = containers("kbt-info-exit")
    crashing = containers("kbt-info-crash")
    play(ansible, [
        task("running", "container_process", container(running, busybox_rootfs, RUNNING)),
        task("exits", "container_process", container(exited, busybox_rootfs, ["/bin/sh", "-c", "echo bye; exit 3"])),
        task("crashes", "container_process", container(crashing, busybox_rootfs, ["/bin/sh", "-c", "exit 1"],
                                                       restart_policy="always")),
    ])
    assert wait_until(lambda: (runtime_state(exited) or {}).get("exit_code") == 3, 10)
    assert wait_until(lambda: (runtime_state(crashing) or {}).get("restart_count", 0) >= 1, 15)
    assert wait_until(lambda: len(cgroup_procs(leaf_path(running))) == 2, 10)  # sh and its sleep

    before = host_state()
    names = [running, exited, crashing, "kbt-info-none"]
    info = ansible.module("container_info", {"name": names, "log_lines": 5, "cpu_sample": 0.2})
    checked = ansible.module("container_info", {"name": [running]}, check=True)
    assert host_state() == before  # read-only, in check mode or not
    assert not info.changed and not info.failed and info.actions == [], info.result
    assert not checked.changed and not checked.failed and checked["containers"][0]["state"] == "running"
    found = {item["name"]: item for item in info["containers"]}
    assert [item["name"] for item in info["containers"]] == sorted(names)

    # --- running ------------------------------------------------------------------------
    item = found[running]
    leaf = leaf_path(running)
    pid = item["pid"]
    assert item["state"] == "running" and item["running"] and alive(pid)
    assert pid in cgroup_procs(leaf)
    with open("/proc/%d/status" % pid) as handle:
        assert "NSpid:\t%d\t1\n" % pid in handle.read()  # PID 1 inside
    assert item["exit_code"] is None and item["restart_count"] == 0 and item["started_at"]
    assert item["ports"] == []  # nothing published (there is not even a nat table)
    assert item["namespaces"] == {kind: os.stat("/proc/%d/ns/%s" % (pid, kind)).st_ino
                                  for kind in os.listdir("/proc/%d/ns" % pid)}
    assert item["namespaces_shared_with_host"] == ["time"]  # every namespace but time is its own (the default)
    assert sorted(p["pid"] for p in item["processes"]) == pid_namespace_members(pid)
    assert sorted(p["ns_pid"] for p in item["processes"])[0] == 1
    assert {p["name"] for p in item["processes"]} == {"sh", "sleep"}
    assert all(p["uid"] == 100000 for p in item["processes"])  # root inside, unprivileged outside

    group = item["cgroup"]
    assert group["path"] == leaf and group["exists"] and group["exec_groups"] == []
    stats = group["stats"]
    assert stats["populated"] is True and stats["processes"] == len(cgroup_procs(leaf)) == 2
    later = flat_keyed(os.path.join(leaf, "cpu.stat"))
    assert set(stats["cpu"]) == set(later) and 0 < stats["cpu"]["usage_usec"] <= later["usage_usec"]
    assert 0 <= stats["cpu_percent"] < 100
    limit_files = [name for name in ("memory.max", "cpu.max", "pids.max", "io.max") if
                   os.path.exists(os.path.join(leaf, name))]
    assert sorted(n for n in group["limits"] if n in ("memory.max", "cpu.max", "pids.max", "io.max")) == limit_files
    for resource in ("cpu", "memory", "io"):
        pressure = os.path.join(leaf, "%s.pressure" % resource)
        if os.path.exists(pressure):
            with open(pressure) as handle:
                totals = {line.split()[0]: int(line.split("total=")[1]) for line in handle if line.strip()}
            for kind, total in totals.items():
                assert stats["pressure"][resource][kind]["total"] <= total
    if not os.path.exists(os.path.join(leaf, "memory.current")):  # this host: memory is a cgroup v1 controller
        assert stats["memory"] is None and stats["pids"] is None

    shown = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "addr"], stdout=subprocess.PIPE,
                           text=True, check=True).stdout
    expected = {link["ifname"]: sorted("%s/%s" % (a["local"], a["prefixlen"]) for a in link.get("addr_info", []))
                for link in json.loads(shown)}
    assert {link["name"]: sorted(link["addresses"]) for link in item["network"]} == expected

    assert item["log"]["path"] == "/var/lib/kernelbox/containers/%s/container.log" % running
    assert item["log"]["tail"] == log_text(running).splitlines()[-5:] and "line-two" in item["log"]["tail"]
    assert item["log"]["size"] == len(log_text(running).encode())
    spec = item["spec"]
    assert spec["command"] == RUNNING and spec["hostname"] == running and spec["rootfs"] == busybox_rootfs
    assert spec["env_names"] == ["PATH"] and spec["no_new_privileges"] is True
    assert spec["seccomp"]["default_action"] == "SCMP_ACT_ERRNO" and spec["uid_map"] == [[0, 100000, 65536]]
    assert item["rootfs"]["path"] == busybox_rootfs

    # --- exited, crash-looping, absent ----------------------------------------------------------
    gone = found[exited]
    assert gone["state"] == "exited" and not gone["running"] and gone["pid"] is None
    assert gone["exit_code"] == 3 and gone["exited_at"] and gone["processes"] == [] and gone["network"] is None
    assert "bye" in gone["log"]["tail"]
    crash = found[crashing]
    assert crash["restart_policy"] == "always" and crash["restart_count"] >= 1
    assert crash["state"] in ("restarting", "running", "starting", "exited")
    assert found["kbt-info-none"] == {"name": "kbt-info-none", "state": "absent", "running": False}

    # --- features, on this hybrid host ---------------------------------------------------------
    features = info["features"]
    assert features["cgroup"]["mode"] == "hybrid"
    with open(os.path.join(features["cgroup"]["mount"], "cgroup.controllers")) as handle:
        assert features["cgroup"]["controllers"] == sorted(handle.read().split())
    assert "cgroup-controller:memory" in features["missing"]
    assert features["namespaces"] == {kind: os.path.exists("/proc/self/ns/" + kind)
                                      for kind in ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")}
    with open("/proc/sys/kernel/seccomp/actions_avail") as handle:
        assert features["seccomp"]["actions"] == handle.read().split()
    with open("/proc/sys/user/max_user_namespaces") as handle:
        assert features["user_namespaces"]["max_user_namespaces"] == int(handle.read())
    assert features["pidfd"]["available"] is True and features["time_namespace"] is True

    # --- the readable view -------------------------------------------------------------------------
    status = ansible.playbook(os.path.join(REPO, "playbooks", "status.yml"),
                              extra_vars={"kb_status_hosts": "localhost", "kb_status_cpu_sample": 0})
    assert status.rc == 0, status.stderr
    table = status.named("Containers")["msg"].splitlines()
    assert table[0].split() == ["NAME", "STATUS", "PID", "IP", "MEM", "USAGE", "/", "LIMIT", "CPU", "PIDS", "PORTS"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {running, exited, crashing}
    assert rows[running].split()[1:4] == ["Up", rows[running].split()[2], str(pid)]
    assert rows[running].split()[-1] == "2" and rows[running].split()[-2].endswith("s")
    assert "Exited (3)" in rows[exited]

    play(ansible, [task("remove", "container_process", {"name": name, "state": "absent"})
                   for name in (running, exited, crashing)])
    assert not alive(pid)
