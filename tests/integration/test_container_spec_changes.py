# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""container_process: recreate vs in-place limits, wait_for, isolation, a joined netns, oci_config, launch errors.

Isolation in depth is launch's; here it is checked through the module, from /proc and from inside.
"""

import errno
import http.server
import json
import os
import socket
import threading

from harness.containers import busybox_rootfs, containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import alive, cgroup_parent, leaf_path, log_text, status_fields, supervisor_pids, wait_until

SLEEPER = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


def play(*tasks):
    """A playbook as JSON (which is YAML): no quoting or indentation to get wrong."""
    return json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}], indent=1) + "\n"


def task(label, args, **extra):
    entry = {"name": label, "kernelbox.containers.container_process": args}
    entry.update(extra)
    return entry


def test_spec_change_recreates_naming_keys_and_limit_change_applies_in_place(ansible, busybox_rootfs, containers):
    name = containers("kbt-change")
    leaf = leaf_path(name)
    base = {"name": name, "rootfs": busybox_rootfs, "command": SLEEPER, "stop_timeout": 2,
            "env": {"COLOR": "blue"}}
    run = ansible.playbook(play(
        task("start", dict(base, cgroup={"parent": cgroup_parent(), "settings": {"cgroup.max.descendants": 5}})),
        task("limit only", dict(base, cgroup={"parent": cgroup_parent(),
                                              "settings": {"cgroup.max.descendants": 1}}))), diff=True)
    assert run.rc == 0, run.stdout[-2000:]
    start, limited = run.named("start"), run.named("limit only")
    assert limited.changed and limited.actions == [
        "apply cgroup limits in place: cgroup.max.descendants 5 -> 1 (only linux.resources changed: no restart)"]
    assert (limited["pid"], limited["starttime"]) == (start["pid"], start["starttime"]) and limited["recreate_keys"] == []
    assert limited.diff["before"]["limits"] == {"cgroup.max.descendants": "5"}
    assert limited.diff["after"]["limits"] == {"cgroup.max.descendants": "1"}
    # Enforced by the kernel, in the running container's leaf: one descendant, not two.
    os.mkdir(os.path.join(leaf, "a"))
    try:
        try:
            os.mkdir(os.path.join(leaf, "b"))
            raise AssertionError("cgroup.max.descendants=1 did not stop a second child group")
        except OSError as exc:
            assert exc.errno == errno.EAGAIN
    finally:
        os.rmdir(os.path.join(leaf, "a"))

    changed = ansible.module("container_process", {"name": name, "rootfs": busybox_rootfs, "command": SLEEPER,
                                                   "stop_timeout": 2, "env": {"COLOR": "red"},
                                                   "cgroup": {"parent": cgroup_parent(),
                                                              "settings": {"cgroup.max.descendants": 1}}},
                             diff=True)
    assert changed.changed and changed["recreate_keys"] == ["process.env"]
    why = "(recreate: process.env changed)"
    assert changed.actions == ["stop container %s %s" % (name, why), "replace the spec of container %s %s" % (name, why),
                               "start container %s %s" % (name, why)]
    assert changed["pid"] != start["pid"] and alive(changed["pid"]) and not alive(start["pid"], start["starttime"])
    assert "COLOR=red" in changed.diff["after"]["config"]["process"]["env"]
    assert "COLOR=blue" in changed.diff["before"]["config"]["process"]["env"]
    with open("/proc/%d/environ" % changed["pid"], "rb") as handle:
        assert b"COLOR=red" in handle.read().split(b"\0")
    # Dropping the limit resets it (a recreate keeps the leaf's value otherwise).
    reset = ansible.module("container_process", {"name": name, "rootfs": busybox_rootfs, "command": SLEEPER,
                                                 "stop_timeout": 2, "env": {"COLOR": "red"},
                                                 "cgroup": {"parent": cgroup_parent()}})
    assert reset.changed and reset["pid"] == changed["pid"], reset.result
    assert open(os.path.join(leaf, "cgroup.max.descendants")).read().strip() == "max"
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


def test_wait_for_port_file_command_and_timeout(ansible, busybox_rootfs, containers, tmp_path):
    web, slow, probe, never = (containers("kbt-wait-web"), containers("kbt-wait-file"), containers("kbt-wait-cmd"),
                               containers("kbt-wait-never"))
    hidden, magic = containers("kbt-wait-hidden"), containers("kbt-wait-magic")
    # A host directory bound in, with a part only host root may enter: wait_for.file looks as the container's
    # root would (it once looked as host root, and answered for files the container cannot see).
    volume = tmp_path / "volume"
    (volume / "private").mkdir(parents=True)
    (volume / "private" / "secret").write_text("host only\n")
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(volume), 0o755)
    os.chmod(str(volume / "private"), 0o700)

    def args(name, command, wait_for, **extra):
        options = {"name": name, "rootfs": busybox_rootfs, "command": ["/bin/sh", "-c", command], "stop_timeout": 1,
                   "cgroup": {"parent": cgroup_parent()}, "wait_for": wait_for}
        options.update(extra)
        return options

    run = ansible.playbook(play(
        task("port", args(web, "sleep 0.5; exec httpd -f -p 8080", {"port": 8080, "timeout": 20})),
        task("file", args(slow, "sleep 0.5; touch /tmp/ready; exec sleep 1000", {"file": "/tmp/ready", "timeout": 20})),
        task("command", args(probe, "sleep 0.5; echo ok > /tmp/state; exec sleep 1000",
                             {"command": ["grep", "-q", "ok", "/tmp/state"], "timeout": 20})),
        task("timeout", args(never, "echo starting up; echo still not ready; exec sleep 1000",
                             {"file": "/never", "timeout": 1.5}), ignore_errors=True),
        task("hidden", args(hidden, "ls /data/private/secret; exec sleep 1000",
                            {"file": "/data/private/secret", "timeout": 1.5},
                            mounts=[{"source": str(volume), "destination": "/data", "readonly": True}]),
             ignore_errors=True),
        task("magic link", args(magic, "ln -s /proc/1/root/etc/passwd /tmp/ready; exec sleep 1000",
                                {"file": "/tmp/ready", "timeout": 1.5}), ignore_errors=True)))
    for label in ("port", "file", "command"):
        result = run.named(label)
        assert not result.failed and result["wait_for"]["ready"] is True, (label, result.result)
    timeout = run.named("timeout")
    assert timeout.failed and "wait_for: file /never was not ready within 1.5s" in timeout.msg
    assert "last log lines:\nstarting up\nstill not ready" in timeout.msg
    assert timeout["log_tail"] == ["starting up", "still not ready"]
    hidden_result = run.named("hidden")
    assert hidden_result.failed and "file /data/private/secret was not ready within 1.5s" in hidden_result.msg
    assert "Permission denied" in hidden_result.msg  # the container's own ls, in the log tail, agrees
    magic_result = run.named("magic link")
    assert magic_result.failed and "file /tmp/ready was not ready within 1.5s" in magic_result.msg
    for name in (web, slow, probe, never, hidden, magic):
        assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


def test_isolation_through_the_module(ansible, busybox_rootfs, containers):
    name = containers("kbt-iso")
    report = ("echo pid=$$; hostname; grep -E '^(CapInh|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; "
              "ls /proc | grep -cE '^[0-9]+$'; exec sleep 1000")
    first = ansible.module("container_process", {
        "name": name, "rootfs": busybox_rootfs, "command": ["/bin/sh", "-c", report], "hostname": "inside",
        "stop_timeout": 0.2, "cgroup": {"parent": cgroup_parent()},
        "uid_map": [{"container_id": 0, "host_id": 200000, "size": 65536}],
        "gid_map": [{"container_id": 0, "host_id": 200000, "size": 65536}]})
    assert first.changed and not first.failed, first.result
    pid = first["pid"]
    assert wait_until(lambda: "Seccomp:" in log_text(name), 10)
    inside = log_text(name).splitlines()
    assert inside[0] == "pid=1" and inside[1] == "inside"
    fields = dict(line.split(":\t") for line in inside[2:6])
    assert fields["CapInh"] == "0000000000000000" and fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"
    assert int(fields["CapEff"], 16) == 0xa80425fb  # Docker's 14
    assert inside[6] in ("1", "2", "3")  # only the container's own processes are visible
    host = status_fields(pid)
    assert host["NoNewPrivs"] == "1" and host["Seccomp"] == "2" and host["NSpid"].split()[-1] == "1"
    assert open("/proc/%d/uid_map" % pid).read().split() == ["0", "200000", "65536"]
    assert os.stat("/proc/%d" % pid).st_uid == 200000  # root inside is 200000 outside
    assert os.readlink("/proc/%d/ns/uts" % pid) != os.readlink("/proc/self/ns/uts")
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed


def test_joined_netns_with_veth_and_bridge_connects_both_ways(ansible, busybox_rootfs, containers):
    """netns + veth + bridge from the network modules; the container joins the netns and talks across."""
    name = containers("kbt-netjoin")
    netns, bridge, host_end = "kbt-ns-join", "kbt-br-join", "kbt-vh-join"
    network = play(
        {"name": "bridge", "kernelbox.containers.bridge": {"name": bridge, "addresses": ["10.77.0.1/24"]}},
        {"name": "netns", "kernelbox.containers.netns": {"name": netns}},
        {"name": "veth", "kernelbox.containers.veth": {
            "name": host_end, "peer": "kbt-vp-join", "netns": netns, "peer_name": "eth0",
            "peer_addresses": ["10.77.0.2/24"], "gateway": ["10.77.0.1"], "bridge": bridge}})
    server = None
    try:
        run = ansible.playbook(network)
        assert run.rc == 0, run.stdout[-2000:]
        # A web server on the host side of the bridge, for the container to reach.
        server = http.server.HTTPServer(("10.77.0.1", 18081), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        run = ansible.playbook(play(task("container", {
            "name": name, "rootfs": busybox_rootfs, "command": ["/bin/httpd", "-f", "-p", "8080", "-h", "/etc"],
            "namespaces": {"netns": netns}, "stop_timeout": 0.5, "cgroup": {"parent": cgroup_parent()},
            "wait_for": {"command": ["/bin/sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
                                                      "nc -w 2 10.77.0.1 18081 | grep -q '^HTTP/1.0 200'"],
                         "timeout": 20}})))
        container = run.named("container")
        assert not container.failed and container["wait_for"]["ready"], (container.msg, container.result)
        pid = container["pid"]
        assert os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat("/run/netns/%s" % netns).st_ino
        assert container["namespaces"]["network"] == os.stat("/run/netns/%s" % netns).st_ino
        # ... and the host reaches the container's server across the bridge.
        with socket.create_connection(("10.77.0.2", 8080), timeout=10) as conn:
            conn.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
            reply = b""
            while True:  # headers and body may come in separate segments: read to the end (HTTP/1.0)
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.") and reply.rstrip().endswith(name.encode()), reply
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        cleanup = ansible.playbook(play(
            task("container absent", {"name": name, "state": "absent"}),
            {"name": "veth absent", "kernelbox.containers.veth": {
                "name": host_end, "peer": "kbt-vp-join", "peer_name": "eth0", "netns": netns, "state": "absent"}},
            {"name": "netns absent", "kernelbox.containers.netns": {"name": netns, "state": "absent"}},
            {"name": "bridge absent", "kernelbox.containers.bridge": {"name": bridge, "state": "absent"}}))
        assert cleanup.rc == 0, cleanup.stdout[-2000:]


def test_oci_config_file_and_launch_error(ansible, busybox_rootfs, containers, tmp_path, host_state):
    name = containers("kbt-oci")
    first = ansible.module("container_process", {"name": name, "rootfs": busybox_rootfs,
                                                 "command": ["/bin/sleep", "1000"], "stop_timeout": 0.2,
                                                 "cgroup": {"parent": cgroup_parent()}}, check=True)
    config = first["config"] if first["config"] else None
    assert config is None  # check mode on a new container reports, stores nothing
    made = ansible.module("container_process", {"name": name, "rootfs": busybox_rootfs,
                                                "command": ["/bin/sleep", "1000"], "stop_timeout": 0.2,
                                                "cgroup": {"parent": cgroup_parent()}})
    config = made["config"]
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed
    # The same config.json, as a bundle with a relative root: same container, then idempotent.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.symlink(busybox_rootfs, str(bundle / "rootfs"))
    config["root"]["path"] = "rootfs"
    (bundle / "config.json").write_text(json.dumps(config))
    args = {"name": name, "oci_config": str(bundle / "config.json"), "stop_timeout": 0.2,
            "cgroup": {"parent": cgroup_parent()}}
    oci = ansible.module("container_process", args)
    assert oci.changed and oci["running"], oci.result
    assert oci["config"]["root"]["path"] == str(bundle / "rootfs")
    assert not ansible.module("container_process", args).changed
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed

    # A failure at exec (a file that is not a program: found, so only the launch can tell) names the step and the
    # errno, leaves nothing of the container behind, and says what stays (shared by every container).
    before = host_state()
    broken = ansible.module("container_process", {"name": name, "rootfs": busybox_rootfs,
                                                  "command": ["/etc/passwd"], "cgroup": {"parent": cgroup_parent()}})
    assert broken.failed and "step 'exec'" in broken.msg and "EACCES" in broken.msg, broken.result
    assert broken["step"] == "exec" and broken["errno"] == errno.EACCES
    assert "the new container was removed again (what stays is shared by every container: the supervisor's code " \
           "copy in /var/lib/kernelbox/runtime" in broken.msg, broken.msg
    assert host_state() == before and not os.path.exists(leaf_path(name))
    assert wait_until(lambda: not supervisor_pids(), 5) is True


def test_oci_config_devices_and_cgroups_path(ansible, busybox_rootfs, containers):
    """linux.cgroupsPath places the container; linux.resources.devices becomes a device program on its leaf,
    proven from inside (real root: no user namespace, so only the program denies the node)."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
    name = containers("kbt-ocidev")
    config = specs.default_spec(busybox_rootfs, ["/bin/sleep", "1000"], hostname=name, user_namespace=False).to_oci()
    config["linux"]["devices"] = [{"path": "/dev/loop-control", "type": "c", "major": 10, "minor": 237}]
    config["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}], "pids": {"limit": 0}}
    config["linux"]["cgroupsPath"] = "/%s/%s" % (cgroup_parent(), name)
    args = {"name": name, "oci_config": config, "stop_timeout": 0.2}
    made = ansible.module("container_process", args)
    assert made.changed and made["running"] and made["cgroup"] == leaf_path(name), made.result
    assert not ansible.module("container_process", args).changed
    probe = {"name": name, "command": ["/bin/sh", "-c", ": < /dev/loop-control"]}
    denied = ansible.module("container_exec", probe)
    assert denied.failed and denied["rc"] == 1 and "Operation not permitted" in denied["stderr"], denied.result
    assert ansible.module("container_exec", {"name": name, "command": ["/bin/sh", "-c", "head -c 1 /dev/zero"]})["rc"] == 0
    config["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 10, "minor": 237,
                                                    "access": "rw"})
    again = ansible.module("container_process", args)
    assert again.changed and again["recreate_keys"] == ["linux.resources.devices"], again.result
    assert ansible.module("container_exec", probe)["rc"] == 0
    refused = dict(config, process=dict(config["process"], terminal=True))
    result = ansible.module("container_process", dict(args, oci_config=refused))
    assert result.failed and "process.terminal: container_process has no terminal" in result.msg
    result = ansible.module("container_process", dict(args, oci_config=dict(config, hooks={"poststop": [
        {"path": "/bin/true"}]})))
    assert result.failed and "hooks: container_process does not run OCI hooks" in result.msg
    result = ansible.module("container_process", dict(args, cgroup={"parent": cgroup_parent()}))
    assert result.failed and "linux.cgroupsPath" in result.msg and "cgroup.parent" in result.msg, result.msg
    assert ansible.module("container_process", {"name": name, "state": "absent"}).changed
    assert not os.path.exists(leaf_path(name))
