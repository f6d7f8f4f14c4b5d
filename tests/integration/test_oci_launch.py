# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The launcher's OCI stages on the real kernel: device program, start gate, terminal, hooks, labels.

Library level, like test_launch.py: what happens is read from inside the container
(busybox) and from the host (/proc, the files hooks write), never from the
launcher's return values alone.  The command line that drives these stages is
tested in test_oci_cli.py.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import cgroup_devices
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import resources as R
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import console, launch
from harness.launch_support import (  # noqa: F401  # pylint: disable=unused-import
    Running, rootfs, run, shell, subreaper, test_cgroup)


def read_comm(pid: int) -> str:
    with open("/proc/%d/comm" % pid) as handle:
        return handle.read().strip()


def test_device_program_enforced_in_the_container(rootfs, test_cgroup):
    """Real root inside (no user namespace), so only the device program stands between it and the nodes."""
    spec = shell(rootfs, "head -c 3 /dev/zero | wc -c; (: < /dev/loop-control) 2>&1; echo rc=$?",
                 user_namespace=False)
    spec.linux.devices = [S.Device("/dev/loop-control", "c", 10, 237)]
    spec.linux.resources = S.Resources(devices=[S.DeviceRule(allow=False, access="rwm")])
    spec.validate()
    program = cgroup_devices.attach(test_cgroup, R.device_rules(spec.linux.resources))
    assert cgroup_devices.attached(test_cgroup) == [program]
    denied = run(spec, cgroup_dir=test_cgroup)
    assert denied.output.splitlines()[0] == "3", denied.output          # /dev/zero: a default device
    assert "Operation not permitted" in denied.output and "rc=1" in denied.output, denied.output
    spec.linux.resources.devices.append(S.DeviceRule(allow=True, type="c", major=10, minor=237, access="rw"))
    program2 = cgroup_devices.attach(test_cgroup, R.device_rules(spec.linux.resources))
    assert cgroup_devices.attached(test_cgroup) == [program2]             # replaced, not stacked
    allowed = run(spec, cgroup_dir=test_cgroup)
    assert "rc=0" in allowed.output and "not permitted" not in allowed.output, allowed.output


def test_start_gate_holds_the_process_until_start(rootfs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    spec = shell(rootfs, "echo started > /out/done")
    spec.mounts.append(S.Mount("/out", None, str(out), ["rbind", "rw"]))
    spec.validate()
    gate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    gate_path = str(tmp_path / "gate.sock")
    gate.bind(gate_path)
    gate.listen(1)
    null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
    try:
        launched = launch.start(spec, stdout=null, stderr=null, stages=launch.Stages(start_gate=gate.fileno()))
    finally:
        os.close(null)
        gate.close()
    try:
        assert read_comm(launched.pid) == "kernelbox-init"  # created: set up and confined, not yet exec'd
        assert set(launched.namespaces) >= {"pid", "mount", "user"}
        with open("/proc/%d/status" % launched.pid) as handle:
            status = handle.read()
        assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status  # confined before it waits
        time.sleep(0.2)
        assert not (out / "done").exists()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(20)
            client.connect(gate_path)
            client.sendall(b"S")
            reply = b""
            while True:
                chunk = client.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"X "), reply
        _pid, status_code = os.waitpid(launched.pid, 0)
        assert os.waitstatus_to_exitcode(status_code) == 0
        assert (out / "done").read_text() == "started\n"
    finally:
        try:
            os.kill(launched.pid, 9)
            os.waitpid(launched.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_terminal_master_goes_to_the_console_socket(rootfs):
    spec = shell(rootfs, "tty; ls -l /dev/console | cut -c1; stty size; echo typed: $(head -n1)")
    spec.process.terminal = True
    spec.process.console_size = S.ConsoleSize(height=33, width=101)
    spec.validate()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
    try:
        launched = launch.start(spec, stdout=null, stderr=null, stages=launch.Stages(console_socket=theirs.fileno()))
        theirs.close()
        master, name = console.recv_master(ours, timeout=20)
    finally:
        os.close(null)
        ours.close()
    try:
        assert name.startswith("/dev/pts/")
        os.write(master, b"hello\n")
        output = b""
        deadline = time.monotonic() + 20
        while b"typed" not in output and time.monotonic() < deadline:
            try:
                output += os.read(master, 4096)
            except OSError as exc:
                if exc.errno == errno.EIO:
                    break
                raise
        text = output.decode().replace("\r", "")
        assert "/dev/pts/0" in text and "\nc\n" in text and "33 101" in text and "typed: hello" in text, text
    finally:
        os.close(master)
        os.waitpid(launched.pid, 0)


def test_terminal_without_a_console_socket_is_refused(rootfs):
    spec = shell(rootfs, "true")
    spec.process.terminal = True
    with pytest.raises(launch.LaunchError, match="process.terminal: .*nothing receives it"):
        launch.start(spec.validate(), stdout=1, stderr=2)


def test_hooks_run_in_order_with_the_state(rootfs, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    os.chmod(log, 0o777)
    hook = "/bin/sh"
    record = 'cat > %s/$0.json; echo $0 >> %s/order' % (log, log)
    inside = 'cat > /log/$0.json; echo $0 >> /log/order'
    spec = shell(rootfs, "echo main >> /log/order", user_namespace=False)
    spec.mounts.append(S.Mount("/log", None, str(log), ["rbind", "rw"]))
    spec.hooks = S.Hooks(create_runtime=[S.Hook(hook, [hook, "-c", record, "createRuntime"])],
                         create_container=[S.Hook(hook, [hook, "-c", record, "createContainer"])],
                         start_container=[S.Hook("/bin/sh", ["sh", "-c", inside, "startContainer"])])
    spec.validate()
    state = json.dumps({"ociVersion": "1.0.2", "id": "kbt-hooks", "status": "creating", "bundle": "/b"}).encode()
    calls = []

    def runtime_hooks(pid: int) -> None:
        calls.append(pid)
        with open(log / "order", "a") as handle:
            handle.write("runtime-callback\n")

    null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
    try:
        launched = launch.start(spec, stdout=null, stderr=null,
                                stages=launch.Stages(runtime_hooks=runtime_hooks, hook_state=state))
    finally:
        os.close(null)
    _pid, status = os.waitpid(launched.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert calls == [launched.pid]
    assert (log / "order").read_text().split() == ["runtime-callback", "createContainer", "startContainer", "main"]
    created = json.loads((log / "createContainer.json").read_text())
    assert created == {"ociVersion": "1.0.2", "id": "kbt-hooks", "status": "creating", "bundle": "/b", "pid": 1}
    assert json.loads((log / "startContainer.json").read_text())["status"] == "created"


def test_a_failing_create_hook_stops_the_start_and_leaves_nothing(rootfs):
    spec = shell(rootfs, "true")
    spec.hooks = S.Hooks(create_container=[S.Hook("/bin/sh", ["sh", "-c", "echo no way >&2; exit 3"])])
    spec.validate()
    with pytest.raises(launch.LaunchError, match=r"createContainer hooks: createContainer hook #0 \(/bin/sh\) "
                                                 r"exited with code 3: no way"):
        launch.start(spec, stdout=1, stderr=2, stages=launch.Stages(hook_state=b"{}"))


def test_caller_hooks_without_a_runner_are_refused(rootfs):
    spec = shell(rootfs, "true")
    spec.hooks = S.Hooks(poststop=[S.Hook("/bin/true")])
    with pytest.raises(launch.LaunchError, match="hooks.poststop: this caller does not run OCI hooks"):
        launch.start(spec.validate(), stdout=1, stderr=2)


def test_labels_are_refused_without_the_lsm(rootfs):
    spec = shell(rootfs, "true")
    spec.process.apparmor_profile = "kbt-profile"
    assert not os.path.exists("/sys/kernel/security/apparmor")  # this host has no LSM: the refusal is the test
    with pytest.raises(launch.LaunchError, match="process.apparmorProfile: 'kbt-profile' cannot be applied: this host "
                                                 "has no AppArmor"):
        launch.start(spec.validate(), stdout=1, stderr=2)
    spec.process.apparmor_profile = None
    spec.linux.mount_label = "system_u:object_r:container_file_t:s0"
    with pytest.raises(launch.LaunchError, match="linux.mountLabel: .* this host has no SELinux"):
        launch.start(spec.validate(), stdout=1, stderr=2)
