# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The container module: one task per container, on the real kernel, through Ansible.

One image (a busybox rootfs tarball) and one bridge serve every test; each test
makes its containers and removes them with state=absent, and the leak check
proves nothing stays.  Facts are read with iproute2, /proc, the cgroup and
state files, and from inside the container with container_exec.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

from harness import net
from harness.containers import build_busybox_rootfs, cgroup_parent, containers  # noqa: F401  pylint: disable=unused-import
from harness.containers import alive, leaf_path

BRIDGE = "kbt-cbr0"
BRIDGE_CIDR = "10.231.0.1/24"


def veth_of(name):
    return "kb" + hashlib.sha1(name.encode()).hexdigest()[:8] + "h"


@pytest.fixture(scope="session")
def image():
    """A busybox rootfs tarball (uids 0), its layer unpacked once for the whole session, and removed after."""
    top = tempfile.mkdtemp(prefix="kbt-cimage-")
    os.chmod(top, 0o755)
    root = build_busybox_rootfs(os.path.join(top, "rootfs"))
    with open(os.path.join(root, "etc", "passwd"), "a") as handle:
        handle.write("app:x:1000:1000:app:/home/app:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "a") as handle:
        handle.write("app:x:1000:\nstaff:x:50:app\n")
    os.makedirs(os.path.join(root, "www"))
    with open(os.path.join(root, "www", "index.html"), "w") as handle:
        handle.write("hello from kbt\n")
    path = os.path.join(top, "busybox.tar")
    with tarfile.open(path, "w") as tar:
        for entry in sorted(os.listdir(root)):
            tar.add(os.path.join(root, entry), arcname=entry,
                    filter=lambda info: (setattr(info, "uid", 0), setattr(info, "gid", 0), info)[-1])
    yield path
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="session")
def warm_image(ansible, image):
    """The image's layers in the store before the first leak check (they are shared, like an image cache)."""
    result = ansible.module("image_layers", {"src": image})
    assert not result.failed, result.result
    yield image
    ansible.module("image_layers", {"src": image, "state": "absent"})


@pytest.fixture(scope="session")
def bridge():
    """The bridge, with a permanent port so its carrier (and the routes that show it) never changes, and no IPv6
    (its link-local address and multicast route would appear late)."""
    net.ip("link", "add", BRIDGE, "type", "bridge")
    net.ip("addr", "add", BRIDGE_CIDR, "dev", BRIDGE)
    net.ip("link", "add", "kbt-cdum0", "type", "veth", "peer", "name", "kbt-cdum1")  # no dummy module here
    for link in (BRIDGE, "kbt-cdum0", "kbt-cdum1"):
        with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % link, "w") as handle:  # the sandbox's netns
            handle.write("1")
    for end in ("kbt-cdum0", "kbt-cdum1"):
        net.ip("link", "set", end, "up")
    net.ip("link", "set", "kbt-cdum0", "master", BRIDGE)
    net.ip("link", "set", BRIDGE, "up")
    yield BRIDGE
    net.ip("link", "delete", "kbt-cdum0", check=False)
    net.ip("link", "delete", BRIDGE, check=False)


@pytest.fixture
def made(ansible, containers, cgroup_test_parent):
    """Container names (and images) a test makes: removed with state=absent afterwards (then by brute force if
    that failed), and the images' layers after them."""
    names, images = [], []

    def register(name):
        names.append(containers(name))
        return name

    register.images = images
    yield register
    for name in names:
        ansible.module("container", {"name": name, "state": "absent", "keep_volumes": False})
        net.ip("link", "delete", veth_of(name), check=False)
    for path in images:
        ansible.module("image_layers", {"src": path, "state": "absent"})


def container(ansible, **args):
    args.setdefault("cgroup_parent", cgroup_parent())
    return ansible.module("container", args)


def inside(ansible, name, script):
    result = ansible.module("container_exec", {"name": name, "command": ["/bin/sh", "-c", script]})
    assert not result.failed, result.result
    return result["stdout"]


def status_of(pid):
    with open("/proc/%d/status" % pid) as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def test_one_task_makes_the_whole_container_and_a_second_changes_nothing(ansible, warm_image, bridge, made):
    name = made("kbt-c1")
    args = dict(name=name, image=warm_image, command="sleep 600", network=bridge, env={"GREETING": "hi"},
                stop_timeout=1)
    first = container(ansible, **args)
    assert first.changed and not first.failed, first.result
    pid = first["pid"]
    assert alive(pid) and first["status"] == "running", json.dumps(first.result, indent=1)
    # The command string was split like a shell would: argv is [sleep, 600].
    with open("/proc/%d/cmdline" % pid, "rb") as handle:
        assert handle.read().split(b"\0")[:-1] == [b"sleep", b"600"]
    # Its own id range, allocated: root inside is the range's first host id.
    userns = first["userns"]
    assert userns["mode"] == "auto" and userns["uid_map"][1] >= 0x70000000, userns
    assert status_of(pid)["Uid"].split()[0] == str(userns["uid_map"][1])
    # eth0 on the bridge with the lowest free address, default route via the bridge.
    assert first["ip"] == "10.231.0.2" and first["network"]["gateway"] == "10.231.0.1"
    assert "10.231.0.2/24" in net.addresses("eth0", name)
    assert net.link(veth_of(name))["master"] == bridge
    # lo is up and 127.0.0.1 works; unprivileged ports start at 0 in its namespace only.
    script = "cat /proc/sys/net/ipv4/ip_unprivileged_port_start; echo $GREETING; ip -o link show lo"
    lines = inside(ansible, name, script).split("\n")
    assert lines[0] == "0" and lines[1] == "hi" and "UP" in lines[2], lines

    again = container(ansible, **args)
    assert not again.changed and again.actions == [], again.result
    assert again["pid"] == pid and again["ip"] == "10.231.0.2"

    # Partial update: only env given, everything else keeps its value; the container is recreated for it.
    partial = container(ansible, name=name, env={"GREETING": "hello"})
    assert partial.changed and partial["changed_options"] == ["env"], partial.result
    assert partial["recreate_keys"] == ["process.env"], partial.result
    assert partial["definition"]["command"] == ["sleep", "600"] and partial["definition"]["network"] == bridge
    assert inside(ansible, name, "echo $GREETING") == "hello"
    assert partial["ip"] == "10.231.0.2"
    quiet = container(ansible, name=name, env={"GREETING": "hello"})
    assert not quiet.changed, quiet.result

    # Limits change in place (the same process; a core file here, as this host's cgroup v2 has no controllers),
    # and so does the restart policy; unless-stopped also makes it start at boot.
    leaf = leaf_path(name)
    limited = container(ansible, name=name, cgroup={"settings": {"cgroup.max.descendants": "5"}},
                        restart_policy="unless-stopped")
    assert limited.changed and limited["recreate_keys"] == [] and limited["pid"] == partial["pid"], limited.result
    with open(leaf + "/cgroup.max.descendants") as handle:
        assert handle.read().strip() == "5"
    assert limited["restart_policy"] == "unless-stopped" and limited["enabled"] is True

    gone = container(ansible, name=name, state="absent")
    assert gone.changed and not gone.failed, gone.result
    assert not alive(partial["pid"])
    assert net.link(veth_of(name)) is None and name not in net.netns_names()
    assert not os.path.exists("/var/lib/kernelbox/rootfs/%s" % name)
    assert not os.path.exists("/var/lib/kernelbox/allocations/userns.json")


def fresh_image(made, tmp_path, marker):
    """A tarball whose layer is not in the store yet (its content differs by one file); removed after the test."""
    root = build_busybox_rootfs(str(tmp_path / "rootfs"))
    with open(os.path.join(root, "etc", "marker"), "w") as handle:
        handle.write(marker)
    os.chmod(str(tmp_path), 0o755)
    path = str(tmp_path / "image.tar")
    subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", path, "."], check=True)
    made.images.append(path)
    return path


def test_check_mode_on_a_fresh_host_predicts_and_changes_nothing(ansible, bridge, made, host_state, tmp_path):
    name = made("kbt-c2")
    image = fresh_image(made, tmp_path, "check")
    args = dict(name=name, image=image, command=["/bin/sleep", "600"], network=bridge, stop_timeout=1)
    before = host_state()
    planned = ansible.module("container", dict(args, cgroup_parent=cgroup_parent()), check=True, diff=True)
    assert planned.changed and not planned.failed, planned.result
    assert host_state() == before
    actions = planned.actions
    assert actions[0].startswith("unpack layer 1/1 sha256:"), actions
    expected = ["allocate host ids 1879048192-1879113727 to container " + name,
                "allocate address 10.231.0.2 on bridge %s to container %s" % (bridge, name),
                "mount overlay at /var/lib/kernelbox/rootfs/%s/merged" % name,
                "create netns " + name, "create veth pair %s <-> eth0 in netns %s" % (veth_of(name), name),
                "create container " + name, "start container " + name, "record the definition of container " + name]
    for text in expected:
        assert [a for a in actions if a.startswith(text)], (text, actions)
    # The diff is the definition, a few lines, not the OCI spec with its seccomp list.
    diff = planned.diff
    assert diff["before"] == {"status": "absent", "definition": {}}, diff
    assert diff["after"]["definition"]["command"] == ["/bin/sleep", "600"] and len(json.dumps(diff)) < 1000, diff

    made_now = ansible.module("container", dict(args, cgroup_parent=cgroup_parent()))
    assert made_now.changed and made_now["running"], made_now.result
    assert made_now.actions == actions  # exactly what check mode said it would do
    # Its veth ends' IPv6 routes come after DAD, a moment later: wait for that event before the snapshot, or a busy
    # machine sees them appear during the check-mode runs (seen in a full-suite run).
    from harness.containers import wait_until
    assert wait_until(lambda: ipv6_settled(name), 120, 0.1), [
        net.ip_json("-6", "addr", "show", "dev", dev, netns=where) for where, dev in veth_ends(name)]

    # A change to a running container, in check mode: the recreate is predicted, with the diff of what changed.
    before = host_state()
    change = ansible.module("container", {"name": name, "env": {"NEW": "1"}}, check=True, diff=True)
    assert change.changed and change["changed_options"] == ["env"], change.result
    assert change.actions[0] == "stop container %s (recreate: process.env changed)" % name, change.actions
    assert change.diff["before"]["definition"].get("env") is None and change.diff["after"]["definition"]["env"] == {
        "NEW": "1"}
    assert host_state() == before and alive(made_now["pid"])

    # Removal of a running container, in check mode: predicted in full, nothing touched.
    removal = ansible.module("container", {"name": name, "state": "absent"}, check=True)
    assert removal.changed and not removal.failed, removal.result
    assert host_state() == before and alive(made_now["pid"])
    for text in ("stop container " + name, "remove container " + name, "delete veth pair " + veth_of(name),
                 "delete netns " + name, "unmount overlay at /var/lib/kernelbox/rootfs/%s/merged" % name,
                 "remove upper directory", "remove directory /var/lib/kernelbox/rootfs/" + name,
                 "release address 10.231.0.2", "release userns slot 0"):
        assert [a for a in removal.actions if a.startswith(text)], (text, removal.actions)

    # A new image recreates it: stop, mount the overlay again with the new layer, start.
    newer = fresh_image(made, tmp_path / "newer", "newer")
    moved = ansible.module("container", {"name": name, "image": newer})
    assert moved.changed and moved["changed_options"] == ["image"], moved.result
    assert "annotations['io.kernelbox.image']" in moved["recreate_keys"], moved.result
    assert moved["running"] and moved["pid"] != made_now["pid"]
    assert inside(ansible, name, "cat /etc/marker") == "newer"

    gone = ansible.module("container", {"name": name, "state": "absent"})
    assert gone.changed and not gone.failed, gone.result
    assert gone.actions == removal.actions  # exactly what check mode said it would do


def test_user_by_name_volumes_env_file_and_port_80_without_root(ansible, warm_image, made, tmp_path):
    name = made("kbt-c3")
    os.chmod(str(tmp_path), 0o755)
    data = tmp_path / "data"
    data.mkdir()
    (data / "seed").write_text("seed\n")  # root-owned, as a host directory usually is
    env_file = tmp_path / "env"
    env_file.write_text("# from the file\nFROM_FILE=yes\nGREETING=file\n")
    volume = "kbt-vol-%d" % os.getpid()
    args = dict(name=name, image=warm_image, user="app", env_file=str(env_file), env={"GREETING": "task"},
                command="/bin/httpd -f -p 80 -h /www", volumes=[str(data) + ":/data:U", volume + ":/cache"],
                stop_timeout=1)
    first = container(ansible, **args)
    assert first.changed and first.get("running"), json.dumps(first.result, indent=1)[:3000]
    base = first["userns"]["uid_map"][1]
    status = status_of(first["pid"])
    # 'app' (uid 1000, member of staff, gid 50) from the image's own /etc/passwd and /etc/group.
    assert status["Uid"].split()[0] == str(base + 1000) and status["Gid"].split()[0] == str(base + 1000)
    assert str(base + 50) in status["Groups"].split(), status["Groups"]
    # :U gave the bind source to the container's user; the named volume belongs to the container's root.
    assert (os.stat(str(data)).st_uid, os.stat(str(data / "seed")).st_uid) == (base + 1000, base + 1000)
    assert os.stat("/var/lib/kernelbox/volumes/%s/_data" % volume).st_uid == base
    script = ("id -u; echo $FROM_FILE $GREETING; cat /data/seed; echo new > /data/new && echo wrote; "
              "stat -c %u /cache; wget -qO- http://127.0.0.1:80/")
    lines = inside(ansible, name, script).split("\n")
    # httpd as uid 1000 bound port 80 (ip_unprivileged_port_start=0 in its own namespace) and answers on lo.
    assert lines == ["1000", "yes task", "seed", "wrote", "0", "hello from kbt"], lines
    assert (data / "new").read_text() == "new\n"

    again = container(ansible, **args)
    assert not again.changed, again.result
    env_file.write_text("FROM_FILE=changed\n")  # the file's content is part of the definition
    changed = container(ansible, **args)
    assert changed.changed and "process.env" in changed["recreate_keys"], changed.result
    assert inside(ansible, name, "echo $FROM_FILE") == "changed"

    gone = container(ansible, name=name, state="absent", keep_volumes=False)
    assert gone.changed and "remove volume %s (keep_volumes=false; no other container uses it)" % volume \
        in gone.actions, gone.actions
    assert not os.path.exists("/var/lib/kernelbox/volumes")


def veth_ends(name):
    return ((None, veth_of(name)), (name, "eth0"))


def ipv6_settled(name):
    """Both ends of the container's veth have their IPv6 link-local address, past duplicate address detection."""
    for where, dev in veth_ends(name):
        found = [entry for link in net.ip_json("-6", "addr", "show", "dev", dev, netns=where)
                 for entry in link.get("addr_info", [])]
        if not found or any(entry.get("tentative") for entry in found):
            return False
    return True


def test_bad_input_fails_early_naming_the_option_and_changes_nothing(ansible, warm_image, bridge, made, host_state):
    holder = made("kbt-c4")
    held = container(ansible, name=holder, image=warm_image, command="sleep 600", network=bridge, ip="10.231.0.50",
                     stop_timeout=1)
    assert held.changed and held["ip"] == "10.231.0.50", held.result
    # The veth ends' IPv6 link-local addresses finish DAD a moment later, and their routes come then: wait for
    # that event before the snapshot, or a busy machine sees routes appear during the cases.
    from harness.containers import wait_until
    assert wait_until(lambda: ipv6_settled(holder), 120, 0.1), [
        net.ip_json("-6", "addr", "show", "dev", dev, netns=where) for where, dev in veth_ends(holder)]
    other = made("kbt-c5")
    base = dict(name=other, image=warm_image, command="sleep 600", cgroup_parent=cgroup_parent())
    cases = [
        (dict(user="nosuchuser"), "user: there is no user 'nosuchuser' in the container's /etc/passwd"),
        (dict(user="app:nogroup2"), "user: there is no group 'nogroup2' in the container's /etc/group"),
        (dict(volumes=["/nonexistent/kbt:/data"]), "volumes[0]: the source /nonexistent/kbt does not exist"),
        (dict(volumes=["relative:dir:/data"]), "volumes[0]:"),
        (dict(network=bridge, ip="10.99.0.5"), "ip: 10.99.0.5 is outside the subnet 10.231.0.0/24 of bridge"),
        (dict(network=bridge, ip="10.231.0.50"), "10.231.0.50 is already taken in ipv4-10.231.0.0_24, by kbt-c4"),
        (dict(network=bridge, ip="10.231.0.1"), "10.231.0.1 is reserved"),
        (dict(network="kbt-nobridge"), "network: bridge kbt-nobridge does not exist"),
        (dict(ports=["80:80:80"]), "ports:"),
        (dict(command="sleep 'unterminated"), "command: \"sleep 'unterminated\" cannot be split"),
        (dict(hostname="bad\nname"), "hostname:"),
        (dict(memory="lots"), "memory:"),
    ]
    before = host_state()
    tasks = [{"name": "case %d" % index, "kernelbox.containers.container": dict(base, **extra),
              "ignore_errors": True} for index, (extra, _text) in enumerate(cases)]
    run = ansible.playbook(net.play(*tasks))  # one play: a task costs a fraction of an ad-hoc call
    assert host_state() == before
    for index, (extra, text) in enumerate(cases):
        result = run.named("case %d" % index)
        assert result.failed and not result.changed, (extra, result.result)
        assert text in result.msg, (extra, result.msg)
    assert not os.path.exists("/var/lib/kernelbox/containers/" + other)


def test_a_job_runs_to_completion_once_and_returns_its_output(ansible, warm_image, made):
    name = made("kbt-c6")
    args = dict(name=name, image=warm_image, detach=False,
                command=["/bin/sh", "-c", "echo out; echo err >&2; hostname"])
    first = container(ansible, **args)
    assert first.changed and not first.failed, first.result
    assert (first["rc"], first["stdout"], first["stderr"]) == (0, "out\n%s\n" % name, "err\n"), first.result
    assert first["status"] == "exited" and first["exit_code"] == 0 and not first["running"]
    # It ran once for this definition: the same task, or one with the name alone, reports it and does not run it.
    for again in (container(ansible, **args), container(ansible, name=name)):
        assert not again.changed and again.actions == [] and again["stdout_lines"] == ["out", name], again.result
    rerun = container(ansible, name=name, restart=True)
    assert rerun.changed and rerun["rc"] == 0 and rerun["start"] != first["start"], rerun.result

    # A failing job fails the task like command does, and runs again on the next task.
    failing = container(ansible, name=name, command="sh -c 'echo boom; exit 3'")
    assert failing.failed and failing.msg == "non-zero return code" and failing["rc"] == 3, failing.result
    assert failing["stdout"] == "boom\n" and failing.changed
    retried = container(ansible, name=name)
    assert retried.failed and retried.changed and retried["rc"] == 3, retried.result

    # Output is bounded (1 MiB kept, the rest counted), and so is the wait.
    flood = container(ansible, name=name, wait_timeout=3,
                      command="sh -c 'head -c 3000000 /dev/zero | tr \"\\\\0\" x; sleep 600'")
    assert flood.failed and "killed after wait_timeout" in flood.msg and flood["rc"] == -9, flood.result
    assert len(flood["stdout"]) == 1 << 20 and flood["stdout_dropped"] == 3000000 - (1 << 20)

    # Detached, a container that exited is started again by a task with the name alone, as docker_container
    # and podman_container do with state=started.
    detached = container(ansible, name=name, detach=True, command="true", wait_timeout=300)
    assert detached.changed and not detached.failed, detached.result
    exited = container(ansible, name=name, state="stopped")
    assert exited["status"] == "exited" and exited["exit_code"] == 0, exited.result
    started = container(ansible, name=name)
    assert started.changed and started.actions == ["start container %s (exited with code 0)" % name], started.result


def health_record(name):
    try:
        with open("/run/kernelbox/containers/%s/health.json" % name) as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return {}


def test_the_supervisor_runs_the_healthcheck_and_state_healthy_waits_for_it(ansible, warm_image, made):
    name = made("kbt-c7")
    # Healthy once /tmp/ready exists, which the container makes a moment after it starts.
    args = dict(name=name, image=warm_image, stop_timeout=1, state="healthy", wait_timeout=120,
                command="sh -c 'sleep 1; touch /tmp/ready; exec sleep 600'",
                healthcheck={"test": "test -f /tmp/ready", "interval": "0.5s", "retries": 2, "timeout": "10s"})
    first = container(ansible, **args)
    assert first.changed and not first.failed, first.result
    assert first["health"]["status"] == "healthy" and first["health"]["last"]["exit_code"] == 0, first.result
    assert health_record(name)["status"] == "healthy"
    again = container(ansible, **args)
    assert not again.changed and again["health"]["status"] == "healthy", again.result

    # The checks go on: two failures in a row make it unhealthy, and state=healthy then fails, saying why.
    inside(ansible, name, "rm /tmp/ready")
    from harness.containers import wait_until
    assert wait_until(lambda: health_record(name).get("status") == "unhealthy", 120, 0.2), health_record(name)
    failing = container(ansible, name=name, state="healthy", wait_timeout=1)
    assert failing.failed and "was not healthy within 1s" in failing.msg and "exit code 1" in failing.msg, \
        failing.result
