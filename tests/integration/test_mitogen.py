# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection under the mitogen strategy (mitogen_linear): a container built, re-run unchanged, used, removed.

Under mitogen a module is not a fresh ``python AnsiballZ_*.py`` process: the target keeps one interpreter for
the whole play, and a module with module_utils of its own (all of ours) runs in a child forked from a clean
"fork parent" of that interpreter, with mitogen's broker thread running, fds 1 and 2 on mitogen's loggers and
module sources served by mitogen's importer rather than a zip.  What this proves, on the real kernel:

* every module of the container path (bridge, image_layers, overlay_rootfs, netns, veth, container_process,
  then container_exec and container_info) converges, and a second run changes nothing;
* the supervisor's code copy is written from mitogen's importer (materialise reads sources without a zip);
* the container's init is parented by the kernelbox supervisor, a daemon outside mitogen's process tree:
  nothing the runtime needs (the child subreaper that must parent an init) depends on the module process,
  which mitogen keeps alive between tasks of a play;
* nothing of mitogen's survives the play, and removal leaves nothing behind (the leak check).
"""

import os
import shutil
import subprocess
import tempfile

import pytest

from harness.ansible_runner import Ansible, venv_bin
from harness.containers import containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import (build_busybox_rootfs, cgroup_parent, proc_stat, runtime_state, supervisor_pids,
                                wait_until)

NAME = "kbt-mitogen"
BRIDGE = "kbt-mit0"


def mitogen_strategy_env():
    proc = subprocess.run([venv_bin("python"), "-c", "import ansible_mitogen, os; "
                           "print(os.path.dirname(ansible_mitogen.__file__))"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    assert proc.returncode == 0, "mitogen is not installed in the venv (requirements-dev.txt): %s" % proc.stderr
    return {"ANSIBLE_STRATEGY_PLUGINS": os.path.join(proc.stdout.strip(), "plugins", "strategy"),
            "ANSIBLE_STRATEGY": "mitogen_linear"}


@pytest.fixture
def image(cgroup_test_parent):
    top = tempfile.mkdtemp(prefix="kbt-mitogen-")
    os.chmod(top, 0o755)
    try:
        rootfs = build_busybox_rootfs(os.path.join(top, "rootfs"))
        tarball = os.path.join(top, "busybox.tar")
        subprocess.run(["tar", "-C", rootfs, "-cf", tarball, "."], check=True)
        yield tarball
    finally:
        shutil.rmtree(top, ignore_errors=True)


PLAY = """
- hosts: all
  gather_facts: false
  vars:
    up: "{{ kbt_phase != 'down' }}"
    dir: %(work)s/%(name)s
  tasks:
    - name: where modules run
      ansible.builtin.shell: tr '\\0' ' ' < /proc/$PPID/cmdline
      changed_when: false
      when: kbt_phase == 'up'
    - name: the bridge
      kernelbox.containers.bridge:
        name: %(bridge)s
        addresses: [10.78.0.1/24]
      when: up
    - name: the image's layers
      kernelbox.containers.image_layers:
        src: %(image)s
      register: layers
      when: up
    - name: the root filesystem
      kernelbox.containers.overlay_rootfs:
        lower: "{{ layers.lower }}"
        upper: "{{ dir }}/upper"
        work: "{{ dir }}/work"
        merged: "{{ dir }}/merged"
      when: up
    - name: the network namespace
      kernelbox.containers.netns:
        name: %(name)s
      when: up
    - name: eth0 on the bridge
      kernelbox.containers.veth:
        name: kbt-mith
        peer: kbt-mitp
        netns: %(name)s
        peer_name: eth0
        peer_addresses: [10.78.0.10/24]
        gateway: [10.78.0.1]
        bridge: %(bridge)s
      when: up
    - name: the container
      kernelbox.containers.container_process:
        name: %(name)s
        rootfs: "{{ dir }}/merged"
        command: [/bin/httpd, -f, -p, "8080", -h, /etc]
        hostname: %(name)s
        namespaces: {netns: %(name)s}
        cgroup: {parent: %(parent)s}
        wait_for: {port: 8080, timeout: 60}
        stop_timeout: 1
        state: "{{ up | ternary('started', 'absent') }}"
    - name: a command inside
      kernelbox.containers.container_exec:
        name: %(name)s
        command: [wget, -q, -O, -, http://10.78.0.10:8080/hostname]
      when: kbt_phase == 'use'
    - name: info
      kernelbox.containers.container_info:
        name: [%(name)s]
      when: kbt_phase == 'use'
    - name: remove eth0
      kernelbox.containers.veth:
        name: kbt-mith
        state: absent
      when: not up
    - name: remove the network namespace
      kernelbox.containers.netns:
        name: %(name)s
        state: absent
      when: not up
    - name: remove the root filesystem
      kernelbox.containers.overlay_rootfs:
        upper: "{{ dir }}/upper"
        work: "{{ dir }}/work"
        merged: "{{ dir }}/merged"
        state: absent
      when: not up
    - name: remove the image's layers
      kernelbox.containers.image_layers:
        src: %(image)s
        state: absent
      when: not up
    - name: remove the bridge
      kernelbox.containers.bridge:
        name: %(bridge)s
        state: absent
      when: not up
"""


def mitogen_processes():
    """mitogen's interpreters in this sandbox (our mount namespace): argv[0] reads ``python3(mitogen:...)``."""
    ours = os.stat("/proc/self/ns/mnt").st_ino
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    cmdline = handle.read()
                if b"(mitogen:" in cmdline.split(b"\0")[0] and os.stat("/proc/%s/ns/mnt" % entry).st_ino == ours:
                    found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
            except OSError:
                continue
    return found


def test_container_converges_unchanged_and_is_removed_under_mitogen(image, containers):
    containers(NAME)
    runner = Ansible("/usr/bin/python3", extra_env=mitogen_strategy_env())
    play = PLAY % {"name": NAME, "bridge": BRIDGE, "image": image, "parent": cgroup_parent(),
                   "work": os.path.dirname(image)}
    try:
        up = runner.playbook(play, {"kbt_phase": "up"})
        assert up.rc == 0, up.stdout[-4000:]
        # The tasks ran in mitogen's target interpreter, not in AnsiballZ processes.
        assert "(mitogen:" in up.named("where modules run")["stdout"], up.named("where modules run").result
        changed = [task.task for task in up.tasks if task.changed]
        assert changed == ["the bridge", "the image's layers", "the root filesystem", "the network namespace",
                           "eth0 on the bridge", "the container"], changed
        state = runtime_state(NAME)
        assert state["status"] == "running", state
        # The init's parent is the supervisor, which runs from its code copy, outside mitogen's tree.
        supervisors = supervisor_pids()
        assert len(supervisors) == 1 and int(proc_stat(state["pid"])[1]) == supervisors[0]
        with open("/proc/%d/cmdline" % supervisors[0], "rb") as handle:
            cmdline = handle.read().split(b"\0")
        assert any(arg.startswith(b"/var/lib/kernelbox/runtime/") for arg in cmdline), cmdline
        # mitogen's interpreters end with the play; the supervisor and the container outlive them.
        assert wait_until(lambda: not mitogen_processes(), 60) is True, mitogen_processes()

        again = runner.playbook(play, {"kbt_phase": "up"})
        assert again.rc == 0, again.stdout[-4000:]
        assert again.changed_tasks == [], again.changed_tasks
        assert runtime_state(NAME)["pid"] == state["pid"]

        used = runner.playbook(play, {"kbt_phase": "use"})
        assert used.rc == 0, used.stdout[-4000:]
        assert used.named("a command inside")["stdout"].strip() == NAME, used.named("a command inside").result
        [info] = used.named("info")["containers"]
        assert info["state"] == "running" and info["pid"] == state["pid"], info
    finally:
        down = runner.playbook(play, {"kbt_phase": "down"})
    assert down.rc == 0, down.stdout[-4000:]
    assert runtime_state(NAME) is None
    assert wait_until(lambda: not mitogen_processes(), 60) is True, mitogen_processes()
