# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kernelbox-runtime driven as an OCI client drives it, on the real kernel.

The command is installed by the oci_runtime module from the built collection and
run as a program.  What happened is read from the kernel (/proc, the cgroup
filesystem) and from inside the container, not from the command's own output
alone; every container a test makes is deleted afterwards, and the autouse
leak check proves nothing is left (state directory, cgroups, processes).
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness.containers import busybox_rootfs, cgroup_parent  # noqa: F401  pylint: disable=unused-import
from harness.oci_runtime import COMMAND, config, leaf, oci, runtime, write_bundle  # noqa: F401  pylint: disable=unused-import

SLEEPER = ["/bin/sh", "-c", "trap 'echo got-usr1 >> /tmp/signals' USR1; echo ready; while :; do sleep 0.1; done"]


def comm(pid: int) -> str:
    with open("/proc/%d/comm" % pid) as handle:
        return handle.read().strip()


def cgroup_of(pid: int) -> str:
    with open("/proc/%d/cgroup" % pid) as handle:
        return [line.split(":", 2)[2].strip() for line in handle if line.startswith("0::")][0]


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_install_module_is_idempotent_and_checks(ansible, runtime):
    again = ansible.module("oci_runtime", {"path": COMMAND})
    assert not again.changed and again["installed"] and again["code"], again.result
    with open(COMMAND) as handle:
        wrapper = handle.read()
    assert wrapper.startswith("#!/bin/sh") and "-I -S /var/lib/kernelbox/runtime/current/kernelbox-runtime.py" in wrapper
    assert os.stat(COMMAND).st_mode & 0o777 == 0o755
    other = os.path.join(os.path.dirname(COMMAND), "kbt-other")
    predicted = ansible.module("oci_runtime", {"path": other}, check=True)
    assert predicted.changed and not os.path.exists(other)
    assert predicted["actions"] == ["write %s (absent)" % other]
    gone = ansible.module("oci_runtime", {"path": COMMAND, "state": "absent"}, check=True)
    assert gone.changed and os.path.exists(COMMAND)
    version = subprocess.run([COMMAND, "--version"], stdout=subprocess.PIPE, text=True, check=True).stdout
    assert version.startswith("kernelbox-runtime version ") and "spec: 1.3.0" in version


def test_create_start_state_kill_delete(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("life")
    bundle = write_bundle(str(tmp_path / "b"), config(busybox_rootfs, SLEEPER, cid))
    pid_file = str(tmp_path / "pid")
    out = open(tmp_path / "out", "w")
    oci.ok("create", "--bundle", bundle, "--pid-file", pid_file, cid, stdout=out)
    state = oci.state(cid)
    pid = int(open(pid_file).read())
    assert state["status"] == "created" and state["pid"] == pid and state["bundle"] == bundle
    assert state["ociVersion"] == "1.1.0" and state["id"] == cid
    assert comm(pid) == "kernelbox-init"                      # set up and waiting: the command has not run
    assert cgroup_of(pid) == "/%s/%s" % (cgroup_parent(), cid)
    assert not (tmp_path / "out").read_text()
    oci.ok("start", cid)
    assert oci.state(cid)["status"] == "running"
    assert wait_for(lambda: (tmp_path / "out").read_text() == "ready\n")
    assert comm(pid) == "sh"
    again = oci("start", cid)
    assert again.returncode == 1 and "cannot start an already running container" in again.stderr
    oci.ok("kill", cid, "USR1")
    assert wait_for(lambda: "got-usr1" in oci.ok("exec", cid, "cat", "/tmp/signals").stdout)
    assert oci.state(cid)["status"] == "running"
    oci.ok("kill", cid, "9")
    assert wait_for(lambda: oci.state(cid)["status"] == "stopped")
    assert oci.state(cid)["pid"] == 0
    killed = oci("kill", cid, "TERM")
    assert killed.returncode == 1 and "container not running" in killed.stderr
    oci.ok("delete", cid)
    assert not os.path.exists(leaf(cid))
    gone = oci("state", cid)
    assert gone.returncode == 1 and "does not exist" in gone.stderr
    assert oci("delete", "--force", cid).returncode == 0     # runc: --force on a missing container succeeds


def test_delete_refuses_a_running_container_without_force(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("del")
    bundle = write_bundle(str(tmp_path / "b"), config(busybox_rootfs, ["/bin/sleep", "1000"], cid))
    oci.ok("create", "--bundle", bundle, cid)
    created = oci.state(cid)["pid"]
    oci.ok("delete", cid)                                     # a created container goes without --force
    assert wait_for(lambda: not os.path.exists("/proc/%d/stat" % created) or comm(created) == "")
    oci.ok("create", "--bundle", bundle, cid)
    oci.ok("start", cid)
    pid = oci.state(cid)["pid"]
    refused = oci("delete", cid)
    assert refused.returncode == 1
    assert "cannot delete container %s that is not stopped: running" % cid in refused.stderr, refused.stderr
    assert oci.state(cid)["status"] == "running" and os.path.exists("/proc/%d" % pid)
    oci.ok("delete", "--force", cid)
    assert not os.path.exists(leaf(cid)) and oci("state", cid).returncode == 1


def test_exec_with_a_process_json_foreground_and_detached(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("exec")
    bundle = write_bundle(str(tmp_path / "b"), config(busybox_rootfs, ["/bin/sleep", "1000"], cid))
    oci.ok("create", "--bundle", bundle, cid)
    oci.ok("start", cid)
    process = {"args": ["/bin/sh", "-c", "id -u; id -G; echo $FOO; pwd; exit 7"],
               "env": ["PATH=/bin", "FOO=bar"], "cwd": "/tmp", "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    result = oci("exec", "--process", str(tmp_path / "process.json"), cid)
    assert result.returncode == 7, result.stderr
    assert result.stdout.split("\n")[:4] == ["1000", "1000 10", "bar", "/tmp"]
    # The container's bounding set has no CAP_SYS_ADMIN: an exec asking for it gets only what the init has.
    greedy = {"args": ["/bin/sh", "-c", "grep -E '^Cap(Eff|Bnd)' /proc/self/status"], "env": ["PATH=/bin"], "cwd": "/",
              "user": {"uid": 0, "gid": 0}, "capabilities": {name: ["CAP_KILL", "CAP_SYS_ADMIN"] for name in (
                  "bounding", "effective", "permitted")}}
    (tmp_path / "greedy.json").write_text(json.dumps(greedy))
    caps = dict(line.split(":\t") for line in oci.ok("exec", "-p", str(tmp_path / "greedy.json"), cid).stdout.split("\n")
                if line)
    assert int(caps["CapEff"], 16) == 1 << 5 and not int(caps["CapBnd"], 16) & (1 << 21)
    pid_file = str(tmp_path / "exec.pid")
    oci.ok("exec", "--detach", "--pid-file", pid_file, cid, "/bin/sleep", "300")
    exec_pid = int(open(pid_file).read())
    assert comm(exec_pid) == "sleep" and cgroup_of(exec_pid) == "/%s/%s" % (cgroup_parent(), cid)
    with open("/proc/%d/status" % exec_pid) as handle:
        nspid = [line.split()[1:] for line in handle if line.startswith("NSpid:")][0]
    assert nspid[0] == str(exec_pid) and nspid[1] != "1"          # in the container's PID namespace
    assert exec_pid in json.loads(oci.ok("ps", "--format", "json", cid).stdout)
    missing = oci("exec", cid, "/no/such/thing")
    assert missing.returncode == 1 and "exec" in missing.stderr and "ENOENT" in missing.stderr


def test_console_socket_gets_the_pty_master(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("tty")
    data = config(busybox_rootfs, ["/bin/sh", "-c", "tty; ls -l /dev/console | cut -c1; read line; echo got:$line"],
                  cid)
    data["process"]["terminal"] = True
    data["process"]["consoleSize"] = {"height": 40, "width": 120}
    bundle = write_bundle(str(tmp_path / "b"), data)
    refused = oci("create", "--bundle", bundle, cid)
    assert refused.returncode == 1 and "no --console-socket" in refused.stderr
    sock_path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    oci.ok("create", "--bundle", bundle, "--console-socket", sock_path, cid)
    listener.settimeout(30)
    connection, _addr = listener.accept()
    fds = socket.recv_fds(connection, 1024, 1)
    connection.close()
    listener.close()
    message, received = fds[0], fds[1]
    assert message.startswith(b"/dev/pts/") and len(received) == 1
    master = received[0]
    try:
        size = os.get_terminal_size(master)
        assert (size.lines, size.columns) == (40, 120)
        oci.ok("start", cid)
        os.write(master, b"hello\n")
        output = b""
        while b"got:" not in output:
            assert select.select([master], [], [], 30)[0], output
            output += os.read(master, 4096)
        text = output.decode().replace("\r", "")
        assert "/dev/pts/0\nc\n" in text and "got:hello" in text, text
    finally:
        os.close(master)


def test_preserved_fds_reach_the_container(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("fds")
    bundle = write_bundle(str(tmp_path / "b"), config(busybox_rootfs, ["/bin/sh", "-c", "echo via-fd3 >&3"], cid))
    read_end, write_end = os.pipe()
    try:  # the pipe's write end becomes the runtime's fd 3, as a client passes it
        run = subprocess.run(["/bin/bash", "-c", 'exec "$0" "$@" 3>&%d' % write_end, COMMAND, "run", "--bundle",
                              bundle, "--preserve-fds", "1", cid], pass_fds=(write_end,), timeout=120,
                             stderr=subprocess.PIPE, text=True, check=False)
    finally:
        os.close(write_end)
    assert run.returncode == 0, run.stderr
    assert os.read(read_end, 100) == b"via-fd3\n"
    os.close(read_end)
    assert oci("state", cid).returncode == 1                  # run deletes it when it exits


def test_hooks_run_in_order_with_the_state_on_stdin(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("hooks")
    log = tmp_path / "log"
    log.mkdir()
    os.chmod(log, 0o777)
    record = "cat > %s/$0.json; echo $0 >> %s/order" % (log, log)
    inside = "cat > /log/$0.json; echo $0 >> /log/order"
    data = config(busybox_rootfs, ["/bin/sh", "-c", "echo process >> /log/order"], cid, user_namespace=False)
    data["mounts"].append({"destination": "/log", "type": "bind", "source": str(log), "options": ["rbind", "rw"]})
    data["hooks"] = {name: [{"path": "/bin/sh", "args": ["sh", "-c", inside if name == "startContainer" else record,
                                                         name]}]
                     for name in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                                  "poststop")}
    bundle = write_bundle(str(tmp_path / "b"), data)
    oci.ok("create", "--bundle", bundle, cid)
    pid = oci.state(cid)["pid"]
    assert (log / "order").read_text().split() == ["prestart", "createRuntime", "createContainer"]
    oci.ok("start", cid)
    assert wait_for(lambda: oci.state(cid)["status"] == "stopped")
    oci.ok("delete", cid)
    order = (log / "order").read_text().split()
    # poststart runs once the process has exec'd, beside it: either may write first
    assert order in (["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "process",
                      "poststop"],
                     ["prestart", "createRuntime", "createContainer", "startContainer", "process", "poststart",
                      "poststop"]), order
    seen = {name: json.loads((log / ("%s.json" % name)).read_text())
            for name in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")}
    for name, state in seen.items():
        assert state["id"] == cid and state["bundle"] == str(tmp_path / "b"), (name, state)
    assert [seen[n]["status"] for n in ("prestart", "createRuntime", "createContainer", "startContainer",
                                        "poststart", "poststop")] == ["creating", "creating", "creating", "created",
                                                                      "running", "stopped"]
    assert seen["prestart"]["pid"] == seen["createRuntime"]["pid"] == seen["poststart"]["pid"] == pid
    assert seen["createContainer"]["pid"] == seen["startContainer"]["pid"] == 1   # as the container sees itself
    assert "pid" not in seen["poststop"]


def test_a_failing_hook_fails_create_and_leaves_nothing(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("badhook")
    data = config(busybox_rootfs, ["/bin/true"], cid)
    data["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo not today >&2; exit 4"]}]}
    failed = oci("create", "--bundle", write_bundle(str(tmp_path / "b"), data), cid)
    assert failed.returncode == 1
    assert "createRuntime hook #0 (/bin/sh) exited with code 4: not today" in failed.stderr, failed.stderr
    assert oci("state", cid).returncode == 1 and not os.path.exists(leaf(cid))


@pytest.mark.parametrize("case", ["missing config", "wrong JSON", "ociVersion", "rootfs symlink", "namespace"])
def test_bad_bundles_give_a_clear_error_and_leave_nothing(oci, busybox_rootfs, tmp_path, case):
    cid = oci.new_id("bad")
    bundle = tmp_path / "b"
    bundle.mkdir()
    data = config(busybox_rootfs, ["/bin/true"], cid)
    expected = {"missing config": "config.json not found", "wrong JSON": "config.json is not valid JSON",
                "ociVersion": "ociVersion: '2.0.0' is not a runtime-spec version this runtime reads",
                "rootfs symlink": "root.path: 'rootfs' leads outside the bundle through a symlink",
                "namespace": "linux.namespaces[7].type: unknown namespace type 'ufo'"}[case]
    if case == "wrong JSON":
        (bundle / "config.json").write_text(json.dumps(data)[:-5])
    elif case != "missing config":
        if case == "ociVersion":
            data["ociVersion"] = "2.0.0"
        elif case == "rootfs symlink":
            os.symlink(busybox_rootfs, str(bundle / "rootfs"))
            data["root"]["path"] = "rootfs"
        else:
            data["linux"]["namespaces"].append({"type": "ufo"})
        write_bundle(str(bundle), data)
    failed = oci("create", "--bundle", str(bundle), cid)
    assert failed.returncode == 1 and expected in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    assert oci("state", cid).returncode == 1 and not os.path.exists(leaf(cid))


def test_run_runcs_own_default_spec_unchanged(oci, busybox_rootfs, tmp_path):
    """`runc spec` output (runc 1.1.5 here), rootfs filled in, run in the foreground on a terminal: its `sh`
    reads what we type.  No cgroupsPath, so the group goes where the runtime puts it by default; the run
    happens in a cgroup namespace rooted below the test parent, so that is inside it too."""
    from harness.cgroup_view import in_confined_cgroup_view
    cid = oci.new_id("runc-spec")
    bundle = tmp_path / "runc"
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    shutil.copytree(busybox_rootfs, str(bundle / "rootfs"), symlinks=True)
    original = (bundle / "config.json").read_text()

    def run_it():
        master, slave = pty.openpty()
        proc = subprocess.Popen([COMMAND, "run", "--bundle", str(bundle), cid], stdin=slave, stdout=slave,
                                stderr=subprocess.PIPE, start_new_session=True)
        os.close(slave)
        output = b""
        typed = False
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    output += os.read(master, 4096)
                except OSError:
                    break
            if not typed and b"# " in output:  # the prompt: busybox's line editing reads the terminal from here on
                time.sleep(0.5)
                os.write(master, b"echo hello-$((6*7)); hostname; exit 3\n")
                typed = True
        rc = proc.wait(timeout=30)
        os.close(master)
        return {"rc": rc, "output": output.decode(errors="replace"), "stderr": proc.stderr.read().decode()}

    outcome = in_confined_cgroup_view(cgroup_parent(), run_it)
    assert outcome["rc"] == 3, outcome
    assert "hello-42" in outcome["output"] and "runc" in outcome["output"], outcome
    assert "ambient: CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE not kept" in outcome["stderr"]
    assert (bundle / "config.json").read_text() == original   # unchanged, as given
    assert oci("state", cid).returncode == 1


def test_pause_resume_ps_and_list(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("pause")
    bundle = write_bundle(str(tmp_path / "b"), config(busybox_rootfs, ["/bin/sleep", "1000"], cid))
    oci.ok("run", "--detach", "--bundle", bundle, cid)
    pid = oci.state(cid)["pid"]
    assert json.loads(oci.ok("ps", "--format", "json", cid).stdout) == [pid]
    oci.ok("pause", cid)
    assert oci.state(cid)["status"] == "paused"
    with open(os.path.join(leaf(cid), "cgroup.events")) as handle:
        assert "frozen 1" in handle.read()
    with open("/proc/%d/stat" % pid) as handle:
        assert handle.read().rsplit(")", 1)[1].split()[0] in ("S", "D", "t", "T")
    assert oci("exec", cid, "true").returncode == 1
    oci.ok("resume", cid)
    assert oci.state(cid)["status"] == "running"
    listed = json.loads(oci.ok("list", "--format", "json").stdout)
    assert [(s["id"], s["status"]) for s in listed if s["id"] == cid] == [(cid, "running")]
    assert cid in oci.ok("list", "-q").stdout.split()


def test_update_changes_limits_in_place(oci, busybox_rootfs, tmp_path):
    """On this hybrid host only core cgroup files can be limited: cgroup.max.descendants, proven by enforcement.
    A controller limit fails naming the controller; the VM stage proves memory and pids limits."""
    cid = oci.new_id("update")
    bundle = write_bundle(str(tmp_path / "b"), config(busybox_rootfs, ["/bin/sleep", "1000"], cid))
    oci.ok("run", "--detach", "--bundle", bundle, cid)
    pid = oci.state(cid)["pid"]
    (tmp_path / "r.json").write_text(json.dumps({"unified": {"cgroup.max.descendants": "1"}}))
    oci.ok("update", "--resources", str(tmp_path / "r.json"), cid)
    with open(os.path.join(leaf(cid), "cgroup.max.descendants")) as handle:
        assert handle.read().strip() == "1"
    os.mkdir(os.path.join(leaf(cid), "kbt-a"))
    try:
        with pytest.raises(OSError) as refused:
            os.mkdir(os.path.join(leaf(cid), "kbt-b"))
        assert refused.value.errno == 11  # EAGAIN: the limit holds
    finally:
        os.rmdir(os.path.join(leaf(cid), "kbt-a"))
    assert oci.state(cid)["pid"] == pid                       # in place: the same process
    failed = oci("update", "--pids-limit", "10", cid)
    assert failed.returncode == 1 and "lacks the controller pids" in failed.stderr, failed.stderr


def test_device_program_from_the_config(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("dev")
    data = config(busybox_rootfs, ["/bin/sleep", "1000"], cid, user_namespace=False)
    data["linux"]["devices"] = [{"path": "/dev/loop-control", "type": "c", "major": 10, "minor": 237}]
    data["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    oci.ok("run", "--detach", "--bundle", write_bundle(str(tmp_path / "b"), data), cid)
    denied = oci("exec", cid, "/bin/sh", "-c", ": < /dev/loop-control")
    assert denied.returncode == 1 and "Operation not permitted" in denied.stderr + denied.stdout
    assert oci.ok("exec", cid, "/bin/sh", "-c", "head -c 2 /dev/urandom | wc -c").stdout.strip() == "2"


def test_run_foreground_status_detach_and_kill_all(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("run")
    bundle = write_bundle(str(tmp_path / "b"), config(busybox_rootfs, ["/bin/sh", "-c", "exit 5"], cid))
    assert oci("run", "--bundle", bundle, cid).returncode == 5
    assert oci("state", cid).returncode == 1
    data = config(busybox_rootfs, ["/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"], cid)
    oci.ok("run", "-d", "--bundle", write_bundle(str(tmp_path / "c"), data), cid)
    assert wait_for(lambda: len(json.loads(oci.ok("ps", "--format", "json", cid).stdout)) == 3)
    oci.ok("kill", "--all", cid, "KILL")
    assert wait_for(lambda: oci.state(cid)["status"] == "stopped")
    assert json.loads(oci.ok("ps", "--format", "json", cid).stdout) == []


def test_features_spec_log_and_refusals(oci, busybox_rootfs, tmp_path):
    features = json.loads(oci.ok("features").stdout)
    assert features["ociVersionMin"] == "1.0.0" and features["ociVersionMax"] == "1.3.0"
    assert features["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                                 "poststop"]
    assert "time" in features["linux"]["namespaces"] and "CAP_SYS_ADMIN" in features["linux"]["capabilities"]
    assert features["linux"]["cgroup"] == {"v1": False, "v2": True, "systemd": False, "systemdUser": False,
                                           "rdma": False}
    assert "SCMP_ACT_ERRNO" in features["linux"]["seccomp"]["actions"]
    assert "SECCOMP_FILTER_FLAG_LOG" in features["linux"]["seccomp"]["supportedFlags"]
    bundle = tmp_path / "spec"
    bundle.mkdir()
    oci.ok("spec", "--bundle", str(bundle))
    assert oci("spec", "--bundle", str(bundle)).returncode == 1  # never overwritten
    data = json.loads((bundle / "config.json").read_text())
    assert data["process"]["terminal"] is True and data["root"]["path"] == "rootfs"
    cid = oci.new_id("spec")
    data["process"].update(terminal=False, args=["/bin/true"])
    data["root"]["path"] = busybox_rootfs
    data["linux"]["cgroupsPath"] = "/%s/%s" % (cgroup_parent(), cid)
    write_bundle(str(bundle), data)
    assert oci("run", "--bundle", str(bundle), cid).returncode == 0
    log = tmp_path / "oci.log"
    failed = oci("--log", str(log), "--log-format", "json", "state", "kbt-oci-nothing-here")
    assert failed.returncode == 1 and failed.stderr.strip() == "container does not exist: kbt-oci-nothing-here"
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["level"] == "error" and line["msg"] == "container does not exist: kbt-oci-nothing-here"
    refused = oci("--systemd-cgroup", "create", "--bundle", str(bundle), cid)
    assert refused.returncode == 1 and "--systemd-cgroup" in refused.stderr and "cgroupfs" in refused.stderr
    bad_id = oci("create", "--bundle", str(bundle), "../escape")
    assert bad_id.returncode == 1 and "invalid container id" in bad_id.stderr
    usage = oci("kill")
    assert usage.returncode == 2


def test_namespace_joined_by_path(oci, busybox_rootfs, tmp_path):
    """linux.namespaces[].path: the container joins a network namespace the test made (with a dummy link)."""
    cid = oci.new_id("netns")
    netns = "kbt-oci-ns"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "add", "kbt-dummy0", "type", "veth", "peer", "name", "kbt-dummy1"],
                       check=True)
        data = config(busybox_rootfs, ["/bin/sh", "-c", "cat /proc/net/dev"], cid, user_namespace=False)
        data["linux"]["namespaces"] = [n for n in data["linux"]["namespaces"] if n["type"] != "network"] + [
            {"type": "network", "path": "/run/netns/" + netns}]
        result = oci.ok("run", "--bundle", write_bundle(str(tmp_path / "b"), data), cid)
        assert "kbt-dummy0" in result.stdout
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=True)


def test_signal_names_and_numbers(oci, busybox_rootfs, tmp_path):
    cid = oci.new_id("sig")
    bundle = write_bundle(str(tmp_path / "b"), config(busybox_rootfs, ["/bin/sleep", "1000"], cid))
    oci.ok("run", "-d", "--bundle", bundle, cid)
    bad = oci("kill", cid, "SIGNOPE")
    assert bad.returncode == 1 and "invalid signal" in bad.stderr
    oci.ok("kill", cid, "SIGKILL")
    assert wait_for(lambda: oci.state(cid)["status"] == "stopped")
    assert signal.SIGKILL == 9
