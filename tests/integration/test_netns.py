# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""netns module: real named namespaces, checked with iproute2 and /proc."""

import os
import subprocess
import time

import pytest

from harness import snapshot

PREFIX = "kbt-ns"


def ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=check)


def ip_netns_names():
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def is_nsfs_mount(path):
    return any(m[0] == path and m[1] == "nsfs" for m in snapshot.mounts())


@pytest.fixture
def cleanup_netns():
    """Names registered here are deleted after the test, whatever happened."""
    names = []
    yield names.append
    for name in names:
        ip("netns", "delete", name, check=False)
        path = "/run/netns/" + name
        if os.path.lexists(path) and not is_nsfs_mount(path):
            os.unlink(path)


def test_lifecycle_is_idempotent(any_ansible, cleanup_netns):
    name = PREFIX + "-life"
    cleanup_netns(name)
    first = any_ansible.module("netns", {"name": name})
    assert first.changed and not first.failed, first.result
    assert first.actions[0] == "create netns %s (absent)" % name
    assert name in ip_netns_names()
    assert is_nsfs_mount("/run/netns/" + name)
    assert first["inode"] == os.stat("/run/netns/" + name).st_ino
    assert first["path"] == "/run/netns/" + name
    assert "state" not in first.result and "owner" not in first.result  # no file decoration
    # /run/netns is a shared mount, as iproute2 makes it
    run_netns = [line for line in open("/proc/self/mountinfo") if line.split()[4] == "/run/netns"]
    assert run_netns and "shared:" in run_netns[-1]
    # lo came up inside
    assert "UP" in ip("-n", name, "link", "show", "lo").stdout.split(">")[0]

    second = any_ansible.module("netns", {"name": name})
    assert not second.changed and second.actions == [], second.result
    assert second["inode"] == first["inode"]

    gone = any_ansible.module("netns", {"name": name, "state": "absent"})
    assert gone.changed and gone.actions == ["delete netns %s (state=absent)" % name]
    assert name not in ip_netns_names() and not os.path.lexists("/run/netns/" + name)
    again = any_ansible.module("netns", {"name": name, "state": "absent"})
    assert not again.changed and not again.failed and again["exists"] is False


def test_check_mode_changes_nothing(ansible, cleanup_netns, host_state):
    name = PREFIX + "-check"
    cleanup_netns(name)
    before = host_state()
    planned = ansible.module("netns", {"name": name, "sysctls": {"net.ipv4.ip_forward": 1}}, check=True)
    assert planned.changed and not planned.failed
    assert planned.actions == ["create netns %s (absent)" % name,
                               "bring up lo in netns %s (new namespace)" % name,
                               "set net.ipv4.ip_forward=1 in netns %s (new namespace)" % name]
    assert host_state() == before

    ansible.module("netns", {"name": name})
    before = host_state()
    planned = ansible.module("netns", {"name": name, "sysctls": {"net.ipv4.ip_forward": 1}}, check=True)
    assert planned.changed and planned.actions == ["set net.ipv4.ip_forward=1 in netns %s (was 0)" % name]
    assert host_state() == before
    assert ip("netns", "exec", name, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"
    removal = ansible.module("netns", {"name": name, "state": "absent"}, check=True)
    assert removal.changed and host_state() == before
    converged = ansible.module("netns", {"name": name}, check=True)
    assert not converged.changed


def test_diff_shows_before_and_after(ansible, cleanup_netns):
    name = PREFIX + "-diff"
    cleanup_netns(name)
    created = ansible.module("netns", {"name": name}, diff=True)
    assert created.diff["before"] == {}
    assert created.diff["after"]["status"] == "present" and created.diff["after"]["loopback"] is True
    changed = ansible.module("netns", {"name": name, "sysctls": {"net.ipv4.conf.all.forwarding": "1"}}, diff=True)
    assert changed.diff["before"]["sysctls"] == {"net.ipv4.conf.all.forwarding": "0"}
    assert changed.diff["after"]["sysctls"] == {"net.ipv4.conf.all.forwarding": "1"}
    removed = ansible.module("netns", {"name": name, "state": "absent"}, diff=True)
    assert removed.diff["before"]["status"] == "present" and removed.diff["after"] == {}


def test_sysctls_are_set_inside_only(any_ansible, cleanup_netns):
    name = PREFIX + "-sysctl"
    cleanup_netns(name)
    host_value = open("/proc/sys/net/ipv4/ip_forward").read().strip()
    result = any_ansible.module("netns", {"name": name, "sysctls": {
        "net.ipv4.ip_forward": True, "net/ipv4/ip_local_port_range": "20000   30000"}})
    assert result.changed, result.result
    assert result["sysctls"] == {"net.ipv4.ip_forward": "1", "net.ipv4.ip_local_port_range": "20000 30000"}
    assert ip("netns", "exec", name, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == host_value
    again = any_ansible.module("netns", {"name": name, "sysctls": {
        "net.ipv4.ip_forward": "1", "net.ipv4.ip_local_port_range": "20000\t30000"}})
    assert not again.changed, again.actions


@pytest.mark.parametrize("bad, fragment", [
    ("", "non-empty"),
    (".", "not a valid netns name"),
    ("..", "not a valid netns name"),
    ("a/b", "contains '/'"),
    ("../../etc", "contains '/'"),
    ("x" * 256, "longer than 255 bytes"),
    ("nul\0byte", "NUL"),
])
def test_bad_names_fail_early(ansible, host_state, bad, fragment):
    before = host_state()
    result = ansible.module("netns", {"name": bad})
    assert result.failed and fragment in result.msg, result.result
    assert not result.changed
    assert host_state() == before


@pytest.mark.parametrize("sysctls, fragment", [
    ({"kernel.hostname": "x"}, "only net.* keys"),
    ({"net.ipv4.no_such_knob": 1}, "does not exist"),
    ({"net.ipv4/../../kernel/hostname": 1}, "not a valid sysctl key"),
])
def test_bad_sysctls_fail_early(ansible, host_state, sysctls, fragment):
    before = host_state()
    result = ansible.module("netns", {"name": PREFIX + "-badsys", "sysctls": sysctls})
    assert result.failed and fragment in result.msg, result.result
    assert host_state() == before


def test_interoperates_with_ip_netns(any_ansible, cleanup_netns):
    theirs, ours = PREFIX + "-ip", PREFIX + "-mod"
    cleanup_netns(theirs)
    cleanup_netns(ours)
    ip("netns", "add", theirs)
    ip("-n", theirs, "link", "set", "lo", "up")
    found = any_ansible.module("netns", {"name": theirs})
    assert not found.changed and found["inode"] == os.stat("/run/netns/" + theirs).st_ino
    managed = any_ansible.module("netns", {"name": theirs, "sysctls": {"net.ipv4.ip_forward": 1}})
    assert managed.changed
    assert ip("netns", "exec", theirs, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"

    any_ansible.module("netns", {"name": ours})
    assert ours in ip_netns_names()
    assert ip("netns", "exec", ours, "true").returncode == 0
    ip("netns", "delete", ours)
    assert not any_ansible.module("netns", {"name": ours, "state": "absent"}).changed
    removed = any_ansible.module("netns", {"name": theirs, "state": "absent"})
    assert removed.changed and theirs not in ip_netns_names()


def test_names_match_exactly(ansible, cleanup_netns):
    short, longer = PREFIX + "-mario", PREFIX + "-mario2"
    cleanup_netns(short)
    cleanup_netns(longer)
    ip("netns", "add", longer)
    absent = ansible.module("netns", {"name": short, "state": "absent"})
    assert not absent.changed and longer in ip_netns_names()
    created = ansible.module("netns", {"name": short})
    assert created.changed and sorted(n for n in ip_netns_names() if n.startswith(PREFIX)) == [short, longer]
    assert created["inode"] != os.stat("/run/netns/" + longer).st_ino


@pytest.mark.parametrize("kind", ["regular file", "symlink", "unmounted after crash"])
def test_stale_entries_are_repaired_and_removed(ansible, cleanup_netns, kind):
    name = PREFIX + "-stale"
    cleanup_netns(name)
    path = "/run/netns/" + name
    os.makedirs("/run/netns", exist_ok=True)
    if kind == "regular file":
        open(path, "w").close()  # what a SIGKILL between the placeholder and the bind mount leaves
    elif kind == "symlink":
        os.symlink("/proc/1/ns/net", path)
    else:
        ip("netns", "add", name)
        subprocess.run(["umount", path], check=True)
    assert not is_nsfs_mount(path)
    repaired = ansible.module("netns", {"name": name})
    assert repaired.changed and repaired.actions[0].startswith("repair netns %s" % name), repaired.actions
    assert is_nsfs_mount(path) and not os.path.islink(path)
    assert ip("netns", "exec", name, "true").returncode == 0
    # the namespace is a new one, not the host's (the symlink pointed at PID 1's)
    assert os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino
    subprocess.run(["umount", path], check=True)
    removed = ansible.module("netns", {"name": name, "state": "absent"})
    assert removed.changed and removed.actions[0].startswith("remove stale entry " + path)
    assert not os.path.lexists(path)


def test_absent_with_processes_inside_warns(ansible, cleanup_netns):
    name = PREFIX + "-busy"
    cleanup_netns(name)
    ansible.module("netns", {"name": name})
    sleeper = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    try:
        deadline = time.time() + 10
        while time.time() < deadline and os.stat("/proc/%d/ns/net" % sleeper.pid).st_ino != \
                os.stat("/run/netns/" + name).st_ino:
            time.sleep(0.05)
        info = ansible.module("netns", {"name": name})
        assert info["pids"] == [sleeper.pid]
        removed = ansible.module("netns", {"name": name, "state": "absent"})
        assert removed.changed and not removed.failed
        warnings = " ".join(removed.get("warnings", []))
        assert str(sleeper.pid) in warnings and "still live" in warnings
        assert not os.path.lexists("/run/netns/" + name)
        assert sleeper.poll() is None  # the module never kills processes it did not start
    finally:
        sleeper.kill()
        sleeper.wait()
