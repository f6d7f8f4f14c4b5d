# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/demo.yml and teardown.yml, exactly as `make demo` runs them, inside the sandbox.

They run from the virtualenv that `tools/install-deps demo` fills (requirements-demo.txt only, no test
tooling), which `make test` prepares at .build/demo-venv: the demo must work with what `make demo` installs.
"""

import os
import subprocess

import pytest

from harness import net, snapshot
from harness.ansible_runner import REPO, Ansible
from harness.containers import python_rootfs_tar

PREFIX = "kbtd"  # the demo's names, moved under the test prefix
PLAYBOOKS = os.path.join(REPO, "playbooks")
INVENTORY = os.path.join(PLAYBOOKS, "inventory.ini")
PING_TASK = "Prove it - each namespace pings the next one across the bridge"
SITE_TASK = "Prove it - the client container fetches the pages the Python container now serves"
SITE_STATUS = "configured by Ansible inside %s-site, at 10.254.77.12" % PREFIX
DEMO_VENV = os.environ.get("KB_DEMO_VENV", os.path.join(REPO, ".build", "demo-venv"))
# What the demo makes beyond its own names, shared by every container on a host: teardown removes them once no
# container is left.
LAYER_STORE = "/var/lib/kernelbox/layers"
SHARED = ("/var/lib/kernelbox/runtime", "/var/lib/kernelbox/containers", LAYER_STORE, "/run/kernelbox")


@pytest.fixture(scope="module")
def demo_ansible():
    """Ansible from the demo's own virtualenv, each host's interpreter the inventory's, as make demo runs it: the
    virtualenv's Python for localhost (playbooks/inventory.ini), /usr/bin/python3 for the Python container the demo
    adds as a host."""
    if not os.path.isfile(os.path.join(DEMO_VENV, ".deps-demo-stamp")):
        raise RuntimeError("no demo virtualenv at %s: make test prepares it (KB_VENV=%s tools/install-deps demo)"
                           % (DEMO_VENV, DEMO_VENV))
    assert not os.path.exists(os.path.join(DEMO_VENV, "bin", "pytest")), "%s holds the test tooling" % DEMO_VENV
    return Ansible(None, venv=DEMO_VENV)


@pytest.fixture(autouse=True)
def clean_network(demo_ansible):
    yield
    made = ["/var/lib/" + PREFIX] + ["/run/kernelbox/containers/%s-%s" % (PREFIX, name) for name in ("web", "site")]
    if any(os.path.exists(path) for path in made):
        # A test that failed half-way: what it made goes as make teardown removes it.
        demo_ansible.playbook(os.path.join(PLAYBOOKS, "teardown.yml"), inventory=INVENTORY, timeout=600,
                              extra_vars={"kbdemo_prefix": PREFIX, "kbdemo_cgroup_parent": demo_parent()})
    net.remove_test_objects(PREFIX)


def layers_in_store():
    """The unpacked layers in the image_layers store (its directory names, by digest)."""
    try:
        return sorted(os.listdir(os.path.join(LAYER_STORE, "sha256")))
    except FileNotFoundError:
        return []


def demo_parent():
    """The containers' parent group, below the run's test parent (the host's kernelbox group stays untouched)."""
    return os.environ["KB_TEST_CGROUP_PARENT"] + "/" + PREFIX


def nft(*args):
    return subprocess.run(["nft"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False).stdout


def run(ansible, playbook, **extra_vars):
    # The internet stand-in only here, inside the sandbox (make demo on a real host makes none).
    result = ansible.playbook(os.path.join(PLAYBOOKS, playbook),
                              extra_vars=dict({"kbdemo_prefix": PREFIX, "kbdemo_cgroup_parent": demo_parent(),
                                               "kbdemo_internet": True}, **extra_vars),
                              inventory=INVENTORY)
    assert result.rc == 0 and not result.failed_tasks, result.stdout + result.stderr
    return result


def test_demo_converges_proves_a_ping_and_tears_down(demo_ansible, cgroup_test_parent):
    ansible = demo_ansible
    python_rootfs_tar()  # the Python container needs it: fail, saying how to build it, rather than skip that part
    kept = set(os.listdir("/var/lib/kernelbox")) - {"runtime", "containers", "layers", "rootfs", "allocations"} \
        if os.path.isdir("/var/lib/kernelbox") else set()
    others_layers = layers_in_store()  # a session fixture's image may hold layers there: teardown must keep them
    sysctls_before = snapshot.host_state(detailed=False)["forwarding_sysctls"]
    first = run(ansible, "demo.yml")
    for task in ("The bridge, with the namespaces' gateway address", "The network namespaces",
                 "A veth pair per namespace, eth0 inside, the host end on the bridge", "The container"):
        assert [name for name in first.changed_tasks if name.endswith(task)], (task, first.changed_tasks)
    started = [task for task in first.tasks if task.task.endswith(": The container")]
    assert len(started) == 3 and all(task["running"] and task["pid"] > 0 for task in started), started
    # One task per container (the container module), and the web one waited for its health check.
    assert started[0]["health"]["status"] == "healthy" and started[0]["ip"] == "10.254.77.10", started[0].result
    check_python_container(first, started[2])
    page = "hello from " + PREFIX
    assert first.named("Prove it - the client container fetches the web container's page across the bridge")[
        "stdout"] == page
    assert first.named("Prove it - a plain namespace fetches the same page")["stdout"] == page
    table = str(first.named("Containers")["msg"])
    assert PREFIX + "-web" in table and PREFIX + "-client" in table
    # NAT (the host role's, and the web container's published port): the host reaches the web container on
    # 127.0.0.1, and the client container reaches "the internet" (a namespace behind the uplink veth, with no route
    # back to the containers' subnet), which sees the host's address, not the container's.
    assert first.named("Prove it - the host fetches the web container's page from 127.0.0.1, through its published "
                       "port")["content"] == page + "\n"
    assert first.named("Prove it - the client container reaches the internet, which sees the host's address, not the "
                       "container's")["stdout"] == "198.51.100.1"
    assert "127.0.0.1:18080->8080/tcp" in table, table
    assert "table inet kernelbox" in nft("list", "tables")
    pings = first.named(PING_TASK)["results"]
    assert len(pings) == 2 and all("1 packets received" in ping["stdout"] for ping in pings), pings
    for side, address in (("a", "10.254.77.2/24"), ("b", "10.254.77.3/24")):
        assert address in net.addresses("eth0", "%s-%s" % (PREFIX, side))
        assert net.link("%s-%s0" % (PREFIX, side))["master"] == PREFIX + "-br0"

    second = run(ansible, "demo.yml")
    assert second.changed_tasks == [], [(t.task, t.actions) for t in second.tasks if t.changed]
    assert all("1 packets received" in ping["stdout"] for ping in second.named(PING_TASK)["results"])
    assert second.named(SITE_TASK)["stdout"].split("\n") == ["<h1>kernelbox demo</h1>", SITE_STATUS]

    parent = os.path.join(snapshot.cgroup2_root(), demo_parent())
    assert os.path.isdir(parent) and all(os.path.exists(path) for path in SHARED)
    run(ansible, "teardown.yml")
    # No table of kernelbox's, and the forwarding sysctls as they were before the demo.
    assert "kernelbox" not in nft("list", "tables")
    assert snapshot.host_state(detailed=False)["forwarding_sysctls"] == sysctls_before
    assert not os.path.exists("/var/lib/%s" % PREFIX)
    assert not [n for n in net.link_names() if n.startswith(PREFIX)]
    assert not [n for n in net.netns_names() if n.startswith(PREFIX)]
    # Everything else the demo made: its containers' parent group, the runtime copy, the state directories and
    # the emptied layer store; /var/lib/kernelbox itself unless it holds what was there before the demo.
    assert not os.path.exists(parent), os.listdir(parent)
    if others_layers:  # the store stays for the other images, with their layers only (the demo's went)
        assert [path for path in SHARED if os.path.exists(path)] == [LAYER_STORE]
        assert layers_in_store() == others_layers
        kept.add("layers")
    else:
        assert [path for path in SHARED if os.path.exists(path)] == []
    if kept:
        assert set(os.listdir("/var/lib/kernelbox")) == kept
    else:
        assert not os.path.exists("/var/lib/kernelbox"), os.listdir("/var/lib/kernelbox")
    again = run(ansible, "teardown.yml")
    assert again.changed_tasks == []


def check_python_container(first, site):
    """The third part: the Python container, configured from inside through the kernelbox connection plugin.  Its
    files as the kernel shows them from inside its root (/proc/PID/root), owned by the container's root."""
    assert site["health"]["status"] == "healthy" and site["ip"] == "10.254.77.12", site.result
    for name in ("A page (ansible.builtin.copy, from the controller into the container)",
                 "A status line (ansible.builtin.lineinfile, edited inside)"):
        task = first.named(name)
        assert task.changed and task.host == PREFIX + "-site@localhost", (task.host, task.result)
    root = "/proc/%d/root" % site["pid"]
    with open("/proc/%d/uid_map" % site["pid"]) as handle:
        container_root = int(handle.read().split()[1])  # the host id of the container's uid 0
    assert container_root != 0
    pages = {"index.html": "<h1>kernelbox demo</h1>\n", "status.txt": SITE_STATUS + "\n"}
    for page, content in pages.items():
        path = os.path.join(root, "srv", "www", page)
        with open(path) as handle:
            assert handle.read() == content, path
        info = os.stat(path)
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (container_root, container_root, 0o644), info
    assert first.named(SITE_TASK)["stdout"].split("\n") == ["<h1>kernelbox demo</h1>", SITE_STATUS]


def test_without_the_python_rootfs_the_python_container_is_skipped_saying_why(demo_ansible, tmp_path):
    """A host where tools/build-python-rootfs could not build the rootfs: the demo's Python part says why (the
    reason the tool wrote) and makes nothing.  Only that part runs (--start-at-task), so no container is made."""
    missing = str(tmp_path / "python3.tar")
    with open(missing + ".unavailable", "w") as handle:
        handle.write("mmdebstrap is not installed (apt-get install mmdebstrap)\n")
    result = demo_ansible.playbook(
        os.path.join(PLAYBOOKS, "demo.yml"), inventory=INVENTORY,
        extra_vars={"kbdemo_prefix": PREFIX, "kbdemo_cgroup_parent": demo_parent(), "kbdemo_python_rootfs": missing},
        start_at_task="Is the Python rootfs there (tools/build-python-rootfs; make demo builds it)?")
    assert result.rc == 0 and not result.failed_tasks, result.stdout + result.stderr
    assert result.changed_tasks == [], result.changed_tasks
    message = result.named("Skip the Python container, and say why")["msg"]
    assert message == "Skipping the Python container: no Python rootfs at %s (mmdebstrap is not installed " \
        "(apt-get install mmdebstrap))." % missing, message
    assert result.named(SITE_TASK).status == "skipped", result.named(SITE_TASK).result
    assert not os.path.exists("/run/kernelbox/containers/%s-site" % PREFIX)
    assert not [n for n in net.link_names() if n.startswith(PREFIX)]


def test_teardown_on_a_host_without_the_demo_changes_and_writes_nothing(demo_ansible):
    """In a fresh mount namespace with empty /run and /var/lib (a host that never ran the demo), teardown reports
    no change and leaves no kernelbox directory behind (a lock directory, say)."""
    check = ('"$@"; rc=$?; for dir in /run/kernelbox /var/lib/kernelbox; do '
             '[ ! -e "$dir" ] || { echo "left behind: $dir" >&2; find "$dir" >&2; exit 99; }; done; exit $rc')
    fresh = Ansible(demo_ansible.python, venv=DEMO_VENV, wrapper=[
        "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
        "mount -t tmpfs kbtd-run /run && mount -t tmpfs kbtd-lib /var/lib && " + check, "kbtd"])
    result = fresh.playbook(os.path.join(PLAYBOOKS, "teardown.yml"),
                            extra_vars={"kbdemo_prefix": PREFIX, "kbdemo_cgroup_parent": demo_parent()},
                            inventory=INVENTORY)
    assert result.rc == 0 and not result.failed_tasks, result.stdout + result.stderr
    assert result.changed_tasks == [], result.changed_tasks
