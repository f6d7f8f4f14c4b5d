# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_process with systemd as the supervisor, against a real systemd running as PID 1.

The VM's PID 1 is not systemd, so the test starts one: Debian's /lib/systemd/systemd as PID 1 of new
PID, mount and cgroup namespaces (the way systemd runs inside a container: container=kbtest), with
private tmpfs on /run, /etc/systemd/system and /var/log.  It runs in the disposable VM, never on the
development host: a PID 1 systemd sets host-wide sysctls (it raises fs.file-max), which no sandbox
can keep from a shared machine.
Ansible then runs inside those namespaces (nsenter), where /run/systemd/system exists: the module picks
the systemd backend by itself.  What this proves: unit files, Type=forking with the PID file, Delegate=yes
with the container in <unit>/container, KillMode=mixed stop semantics, ExecStopPost exit records,
Restart= with StartLimitBurst for on-failure:N, the journal as the log, enable/disable, limits in place.
What it does not: a real reboot (boot start is checked as the enablement symlink).
"""

import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from harness.ansible_runner import Ansible, venv_bin
from harness.containers import busybox_rootfs  # noqa: F401  pylint: disable=unused-import
from harness.containers import cgroup2_mount, proc_stat, supervisor_pids, wait_until

# harness.containers keeps its cgroups under the run's test parent, which tests/sandbox sets on the host.
os.environ.setdefault("KB_TEST_CGROUP_PARENT", "kbvm-systemd")

# systemd sees *only* these units and the ones the module writes: no vendor unit (tmpfiles, udev,
# sysctl, binfmt, fstab mounts ...) can run, so nothing reaches this machine.  An earlier version
# that let systemd load the distribution's units let sysinit.target run systemd-tmpfiles (which
# empties /tmp) and udev (which touched /dev): never again.
UNITS = {
    "kbtest.target": "[Unit]\nDescription=kernelbox test target\nWants=kb-journald.service\n",
    "sysinit.target": "[Unit]\nDescription=empty sysinit for the test\n",
    "basic.target": "[Unit]\nDescription=empty basic for the test\n",
    "multi-user.target": "[Unit]\nDescription=boot target (enable links go here)\n",
    "network.target": "[Unit]\nDescription=empty network target\n",
    "system.slice": "[Unit]\nDescription=System Slice\nDefaultDependencies=no\n",
    "shutdown.target": "[Unit]\nDescription=empty shutdown target\nDefaultDependencies=no\n",
    "kb-journald.socket": ("[Unit]\nDefaultDependencies=no\n[Socket]\nListenDatagram=/run/systemd/journal/socket\n"
                           "ListenStream=/run/systemd/journal/stdout\nPassCredentials=yes\nSocketMode=0666\n"
                           "Service=kb-journald.service\n"),
    "kb-journald.service": ("[Unit]\nDefaultDependencies=no\nRequires=kb-journald.socket\nAfter=kb-journald.socket\n"
                            "[Service]\nType=notify\nExecStart=/lib/systemd/systemd-journald\n"
                            "Sockets=kb-journald.socket\nRuntimeDirectory=systemd/journal\n"
                            "RuntimeDirectoryPreserve=yes\nStandardOutput=null\n"),
}
# Private /run, /etc/systemd/system, /var/log and /dev (with the host's basic nodes bound in).  /proc and
# /sys stay as they are (a read-only overmount would stop containers from mounting their own proc and
# sysfs in a user namespace); the fixture compares every global sysctl before and after instead.
BOOT = r"""
echo $$ > %(cgroup)s/cgroup.procs
exec unshare --pid --fork --mount --cgroup --propagation private sh -c '
  set -e
  mount -t proc proc /proc
  umount -l /sys/fs/cgroup  # the same superblock cannot be mounted on its own root (EBUSY)
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  # The private /run would hide the VM scratch tmpfs (HOME, TMPDIR, unit files, Ansible temp dirs): carry it over.
  mkdir -p /tmp/kbt-keep-scratch && mount --rbind %(scratch)s /tmp/kbt-keep-scratch
  mount -t tmpfs -o mode=755 kbtest-run /run
  mkdir -p %(scratch)s && mount --move /tmp/kbt-keep-scratch %(scratch)s
  mount -t tmpfs -o mode=755 kbtest-units /etc/systemd/system
  mount -t tmpfs -o mode=755 kbtest-log /var/log
  mkdir -p /run/kbdev && mount -t tmpfs -o mode=755 kbtest-dev /run/kbdev
  for node in null zero full random urandom tty; do touch /run/kbdev/$node; mount --bind /dev/$node /run/kbdev/$node; done
  mkdir /run/kbdev/pts /run/kbdev/shm && mount -t devpts -o newinstance,ptmxmode=0666 devpts /run/kbdev/pts
  ln -s pts/ptmx /run/kbdev/ptmx && ln -s /proc/self/fd /run/kbdev/fd
  mount --move /run/kbdev /dev
  exec env container=kbtest SYSTEMD_UNIT_PATH=/etc/systemd/system:%(units)s /lib/systemd/systemd --system \
    --unit=kbtest.target --show-status=0'
"""


class NsAnsible(Ansible):
    """Ansible run inside the private systemd's namespaces."""

    def __init__(self, python, pid):
        super().__init__(python)
        self.pid = pid

    def _run(self, argv, timeout):
        return super()._run(["nsenter", "-t", str(self.pid), "-m", "-p", "-C", "--"] + argv, timeout)


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat and int(stat[1]) == pid:
                found.append(int(entry))
    return found


@pytest.fixture
def systemd_pid1(busybox_rootfs):
    parent = os.path.join(cgroup2_mount(), os.environ["KB_TEST_CGROUP_PARENT"], "systemd")
    os.makedirs(parent, exist_ok=True)
    units = tempfile.mkdtemp(prefix="kbt-units-")
    for unit_name, text in UNITS.items():
        with open(os.path.join(units, unit_name), "w") as handle:
            handle.write(text)
    log = open(os.path.join(units, "systemd.log"), "w")
    script = BOOT % {"cgroup": parent, "units": units, "scratch": os.environ["KB_VM_SCRATCH"]}
    boot = subprocess.Popen(["sh", "-c", script], stdout=log,
                            stderr=subprocess.STDOUT)
    pid1 = wait_until(lambda: _children(boot.pid) and _children(boot.pid)[0], 600)
    try:
        assert pid1, "systemd did not start: %s" % open(log.name).read()

        def state():
            proc = subprocess.run(["nsenter", "-t", str(pid1), "-m", "-p", "-C", "systemctl", "is-system-running"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False)
            return proc.stdout.strip() in ("running", "degraded")
        assert wait_until(state, 1200), open(log.name).read()
        assert open("/proc/%d/comm" % pid1).read().strip() == "systemd"
        yield pid1
    finally:
        if pid1:
            os.kill(pid1, signal.SIGKILL)  # PID 1 of its namespace: everything inside dies with it
        boot.wait(30)
        log.close()
        for dirpath, _dirs, _files in sorted(os.walk(parent), key=lambda entry: -len(entry[0])):
            for _attempt in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except OSError:
                    time.sleep(0.1)
        subprocess.run(["rm", "-rf", units], check=False)


def _play(*tasks):
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}], indent=1) + "\n"


def _cp(label, **args):
    return {"name": label, "kernelbox.containers.container_process": args, "register": label.replace(" ", "_")}


def _sh(label, command):
    return {"name": label, "ansible.builtin.command": {"argv": ["sh", "-c", command]}, "changed_when": False}


def test_systemd_units_supervise_containers(systemd_pid1, busybox_rootfs):
    ansible = NsAnsible(venv_bin("python"), systemd_pid1)
    web, crash, instant = "kbt-sd-web", "kbt-sd-crash", "kbt-sd-instant"
    trapping = ["/bin/sh", "-c", "echo hello from $$; trap 'echo bye; exit 3' TERM; while :; do sleep 0.1; done"]
    # A stop returns as soon as the container exits: a long stop_timeout costs nothing, and a busy host never turns
    # the trap's clean exit 3 into a SIGKILL.
    common = {"rootfs": busybox_rootfs, "stop_timeout": 120}
    unit = "kernelbox-%s.service" % web
    run = ansible.playbook(_play(
        _cp("start", name=web, command=trapping, restart_policy="on-failure:2", enabled=True,
            cgroup={"settings": {"cgroup.max.descendants": 5}}, **common),
        _sh("show", "systemctl show %s -p MainPID,ActiveState,SubState,ControlGroup,Delegate,KillMode,Type" % unit),
        _sh("enabled", "systemctl is-enabled %s; ls /etc/systemd/system/multi-user.target.wants/" % unit),
        _cp("again", name=web, command=trapping, restart_policy="on-failure:2", enabled=True,
            cgroup={"settings": {"cgroup.max.descendants": 5}}, **common),
        _cp("limit", name=web, command=trapping, restart_policy="on-failure:2", enabled=True,
            cgroup={"settings": {"cgroup.max.descendants": 2}}, **common),
        _sh("journal", "for i in $(seq 6000); do journalctl -u %s -o cat --no-pager | grep -q 'hello from' && break; "
                       "sleep 0.1; done; journalctl -u %s -o cat --no-pager" % (unit, unit)),
        _cp("stop", name=web, state="stopped"),
        _sh("after stop", "systemctl show %s -p ActiveState,ExecMainStatus" % unit),
        _cp("crash", name=crash, command=["/bin/sh", "-c", "echo crashing; sleep 0.5; exit 4"], restart_policy="on-failure:2",
            **common),
        _sh("crash loop", "for i in $(seq 6000); do s=$(systemctl show kernelbox-%s.service -p ActiveState --value); "
                          "[ \"$s\" = failed ] && break; sleep 0.1; done; "
                          "systemctl show kernelbox-%s.service -p NRestarts,ActiveState,Result" % (crash, crash)),
        _cp("crash status", name=crash, state="stopped"),
        # An init that ends at once is gone before systemd reads the PID file ("protocol" to systemd): the
        # container did start, and its restart policy applies as with an init that ends later.
        _cp("instant", name=instant, command=["/bin/sh", "-c", "echo at once; exit 5"], restart_policy="on-failure:2",
            **common),
        _sh("instant loop", "for i in $(seq 6000); do s=$(systemctl show kernelbox-%s.service -p ActiveState --value); "
                            "[ \"$s\" = failed ] && break; sleep 0.1; done; "
                            "systemctl show kernelbox-%s.service -p NRestarts,ActiveState" % (instant, instant)),
        _cp("instant status", name=instant, state="stopped"),
        _cp("absent instant", name=instant, state="absent"),
        _cp("absent web", name=web, state="absent"),
        _cp("absent crash", name=crash, state="absent"),
        _sh("units gone", "ls /etc/systemd/system; systemctl list-units --all --no-legend 'kernelbox-*'"),
        _sh("loaded", "systemctl list-units --all --no-legend --plain | awk '$2 == \"loaded\" {print $1}'"),
    ))
    assert not run.failed_tasks, run.stdout[-4000:]
    start = run.named("start")
    assert start.changed and start["supervisor"]["kind"] == "systemd" and start["running"], start.result
    show = dict(line.split("=", 1) for line in run.named("show")["stdout"].splitlines())
    assert show["ActiveState"] == "active" and show["Type"] == "forking" and show["Delegate"] == "yes"
    assert show["KillMode"] == "mixed"
    # The container's init is the unit's main process, parented by systemd itself (PID 1 inside).
    inner_pid = int(show["MainPID"])
    assert start["namespaces"] and start["cgroup"].endswith("/system.slice/%s/container" % unit)
    host_pid = start["pid"]  # the module reports the PID as it sees it: inside systemd's PID namespace
    assert host_pid == inner_pid
    assert supervisor_pids() == []  # no kernelbox supervisor process: systemd supervises
    assert run.named("enabled")["stdout"].splitlines()[0] == "enabled"
    assert unit in run.named("enabled")["stdout"]
    again = run.named("again")
    assert not again.changed and again["pid"] == start["pid"], again.result
    limit = run.named("limit")
    assert limit.changed and limit.actions[0].startswith("apply cgroup limits in place: cgroup.max.descendants 5 -> 2")
    assert limit["pid"] == start["pid"]
    assert "hello from 1" in run.named("journal")["stdout"]
    stop = run.named("stop")
    assert stop.changed and stop["exit_code"] == 3 and not stop["running"], stop.result
    assert "bye" in run.named("journal")["stdout"] or "bye" in "\n".join(stop["log_tail"])
    crash_loop = dict(line.split("=", 1) for line in run.named("crash loop")["stdout"].splitlines())
    assert crash_loop["NRestarts"] == "2" and crash_loop["ActiveState"] == "failed", crash_loop
    status = run.named("crash status")
    assert status["restart_count"] == 2, status.result
    # The last start's init ended after the launcher looked and before systemd adopted it (a few ms, wider on a
    # busy host): nobody saw its status, and the result says so instead of guessing (docs/runtime.md).
    assert status["exit_code"] == 4 or (status["exit_code"] is None and status["exit_note"].startswith(
        "systemd reported no exit status")), status.result
    assert run.named("instant").changed, run.named("instant").result
    instant_loop = dict(line.split("=", 1) for line in run.named("instant loop")["stdout"].splitlines())
    assert instant_loop["NRestarts"] == "2" and instant_loop["ActiveState"] == "failed", instant_loop
    instant_status = run.named("instant status")
    assert instant_status["restart_count"] == 2, instant_status.result
    assert instant_status["exit_code"] == 5 or (instant_status["exit_code"] is None and instant_status[
        "exit_note"].startswith("systemd reported no exit status")), instant_status.result
    assert run.named("absent instant").changed
    assert run.named("absent web").changed and run.named("absent crash").changed
    assert "kernelbox" not in run.named("units gone")["stdout"]
    # Only the test's own unit files loaded (units merely referenced show as not-found and never run):
    # no tmpfiles, udev, sysctl or swap unit of the distribution.
    allowed = set(UNITS) | {"init.scope", "-.slice", "-.mount", "kernelbox-%s.service" % web,
                            "kernelbox-%s.service" % crash, "kernelbox-%s.service" % instant}
    loaded = set(run.named("loaded")["stdout"].split())
    foreign = sorted(u for u in loaded - allowed if not u.endswith((".mount", ".device", ".swap")))
    assert not foreign, foreign
