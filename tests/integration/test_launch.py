# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The launcher on the real kernel: _runtime.process.launch.start() with a busybox-static rootfs.

Library level (no Ansible): each container costs tens of milliseconds.  What the
container sees is read from inside it (busybox, or the host's Python through a
read-only bind of /usr), and what the host sees through /proc; never through
the launcher's own return values alone.  The autouse leak check (processes,
mounts, cgroups, netns) runs after each test.  Refusals and failing steps are
in test_launch_refusals.py.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import netns as netns_lib
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import launch
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from harness.launch_support import (  # noqa: F401  # pylint: disable=unused-import
    DOCKER_CAPS_MASK, HOST_PYTHON, Running, host_status, rootfs, run, scratch_rootfs, shell, sleeper, subreaper,
    test_cgroup, with_python)


# --- isolation, seen from inside and from the host ------------------------------------

def test_pid1_and_host_pids_invisible(rootfs):
    result = run(shell(rootfs, "echo pid=$$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '"))
    assert result.exit_code == 0, result.output
    lines = result.output.split("\n")
    assert lines[0] == "pid=1"
    visible = [int(p) for p in lines[1].split()]
    # Only the shell (1) and the processes of its pipeline exist; no host PID is visible.
    assert visible[0] == 1 and visible == list(range(1, len(visible) + 1)) and len(visible) <= 5, visible


def test_host_sees_pid_namespace_and_uid_map(rootfs):
    with Running(sleeper(rootfs)) as launched:
        status = host_status(launched.pid)
        assert status["NSpid"].split() == [str(launched.pid), "1"]
        assert status["Uid"].split() == ["100000"] * 4  # root inside, 100000 outside
        assert status["Gid"].split() == ["100000"] * 4
        with open("/proc/%d/uid_map" % launched.pid) as handle:
            assert handle.read().split() == ["0", "100000", "65536"]
        for kind, (_flag, name) in launch.NAMESPACES.items():
            inode = os.stat("/proc/%d/ns/%s" % (launched.pid, name)).st_ino
            assert launched.namespaces[kind] == inode
            if kind != "time":
                assert inode != os.stat("/proc/self/ns/%s" % name).st_ino, kind
        with open("/proc/%d/stat" % launched.pid) as handle:
            text = handle.read()
        assert int(text[text.rindex(")") + 2:].split()[19]) == launched.starttime


def test_hostname_is_its_own(rootfs):
    result = run(shell(rootfs, "hostname"))
    assert result.output.strip() == "kbt-box"
    assert os.uname().nodename != "kbt-box"


def test_ipc_namespace_is_empty(rootfs):
    shm = ctypes.CDLL(None, use_errno=True)
    segment = shm.shmget(0, 4096, 0o600 | 0o1000)  # IPC_PRIVATE | IPC_CREAT, in the host's IPC namespace
    assert segment >= 0
    try:
        with open("/proc/sysvipc/shm") as handle:
            assert len(handle.read().splitlines()) >= 2  # the host sees it
        result = run(shell(rootfs, "ipcs -m; echo ---; cat /proc/sysvipc/shm | wc -l"))
    finally:
        shm.shmctl(segment, 0, None)  # IPC_RMID
    listing, _sep, count = result.output.partition("---")
    assert str(segment) not in listing
    assert count.strip() == "1"  # only the header line


def test_mount_table_shows_no_host_mounts(rootfs):
    result = run(shell(rootfs, "cat /proc/self/mountinfo"))
    assert result.exit_code == 0, result.output
    points = set()
    for line in result.output.splitlines():
        fields = line.split()
        points.add(fields[4])
    expected = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/tmp",
                "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}
    # Masked and read-only paths are mounts too, for those this kernel has.
    expected |= {p for p in S.DEFAULT_MASKED_PATHS + S.DEFAULT_READONLY_PATHS if os.path.exists(p)}
    assert points == expected
    # The sandbox's own mounts (/run, /var/lib tmpfs) and the host's are not there.
    assert not points & {"/run", "/var/lib", "/boot", "/sys/fs/cgroup/unified"}


def test_capabilities_no_new_privs_and_seccomp(rootfs):
    inside = run(shell(rootfs, "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/1/status"))
    values = dict(line.split(":\t") for line in inside.output.splitlines())
    with Running(sleeper(rootfs)) as launched:
        host = host_status(launched.pid)
    for view in (values, host):
        assert int(view["CapBnd"], 16) == DOCKER_CAPS_MASK
        assert int(view["CapEff"], 16) == DOCKER_CAPS_MASK
        assert int(view["CapPrm"], 16) == DOCKER_CAPS_MASK
        assert int(view["CapInh"], 16) == 0
        assert int(view["CapAmb"], 16) == 0
        assert view["NoNewPrivs"].strip() == "1"
        assert view["Seccomp"].strip() == "2"


def test_configured_capabilities_and_non_root_user(rootfs):
    spec = shell(rootfs, "grep -E '^(Cap|Uid|Groups)' /proc/self/status")
    spec.process.user = S.User(uid=1000, gid=1000, additional_gids=[10, 20])
    spec.process.capabilities = S.Capabilities(
        bounding=["CAP_NET_BIND_SERVICE", "CAP_KILL"], effective=["CAP_NET_BIND_SERVICE"],
        permitted=["CAP_NET_BIND_SERVICE"], inheritable=["CAP_NET_BIND_SERVICE"],
        ambient=["CAP_NET_BIND_SERVICE"])
    spec.linux.seccomp = S.default_seccomp(spec)
    result = run(spec.validate())
    values = {k: v.strip() for k, v in (line.split(":\t") for line in result.output.splitlines())}
    assert values["Uid"].split() == ["1000"] * 4
    assert values["Groups"].split() == ["10", "20"]
    assert int(values["CapBnd"], 16) == (1 << 10) | (1 << 5)
    # A non-root exec keeps only the ambient set (capabilities(7)); the inheritable set is as configured.
    assert int(values["CapAmb"], 16) == 1 << 10
    assert int(values["CapEff"], 16) == 1 << 10 and int(values["CapPrm"], 16) == 1 << 10
    assert int(values["CapInh"], 16) == 1 << 10


def test_masked_and_readonly_paths(rootfs):
    masked_files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
                    if os.path.isfile(p)]
    assert masked_files, "no masked /proc file exists on this kernel to test with"
    script = "; ".join("echo %s=$(wc -c < %s)" % (p, p) for p in masked_files)
    script += "; echo firmware=$(ls -A /sys/firmware | wc -l)"
    readonly_files = [p for p in ("/proc/sys/kernel/ns_last_pid", "/proc/sysrq-trigger") if os.path.exists(p)]
    script += "".join("; echo 1 > %s" % p for p in readonly_files)
    result = run(shell(rootfs, script))
    for path in masked_files:
        assert "%s=0" % path in result.output  # /proc/kcore reads empty (this kernel has no kcore)
    assert "firmware=0" in result.output
    for path in readonly_files:
        assert "can't create %s: Read-only file system" % path in result.output


def python_check(rootfs, code, **kwargs):
    return run(with_python(shell(rootfs, "true", **kwargs), code))


SYSCALL_PROBE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def probe(name, call):
    ret = call()
    print(name, ret, os.strerror(ctypes.get_errno()) if ret == -1 else "ok", ctypes.get_errno() if ret == -1 else 0)
probe("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
probe("unshare", lambda: libc.unshare(0x00020000))
probe("keyctl", lambda: libc.syscall(250, 0, -3, 0))   # keyctl(KEYCTL_GET_KEYRING_ID, session)
probe("add_key", lambda: libc.syscall(248, b"user", b"kbt", b"x", 1, -3))
"""


def test_mount_unshare_keyctl_fail_with_eperm(rootfs):
    result = python_check(rootfs, SYSCALL_PROBE)
    assert result.exit_code == 0, result.output
    for name in ("mount", "unshare", "keyctl", "add_key"):
        line = [entry for entry in result.output.splitlines() if entry.startswith(name + " ")][0]
        assert line.endswith(" %d" % errno.EPERM), line


def test_only_stdio_is_open_even_with_a_leaked_caller_fd(rootfs):
    leaked = os.open("/", os.O_RDONLY)  # inheritable: the CVE-2024-21626 situation
    os.set_inheritable(leaked, True)
    try:
        with Running(sleeper(rootfs)) as launched:
            fds = sorted(os.listdir("/proc/%d/fd" % launched.pid))
    finally:
        os.close(leaked)
    assert fds == ["0", "1", "2"]


def test_extra_files_become_fd_3(rootfs):
    read_end, write_end = os.pipe()
    try:
        result = run(shell(rootfs, "ls /proc/self/fd | tr '\\n' ' '; echo hello >&3"), extra_files=[write_end])
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert reader.read() == b"hello\n"
    assert result.output.split()[:4] == ["0", "1", "2", "3"]


def test_time_namespace_offset_shows_in_uptime(rootfs):
    spec = shell(rootfs, "cat /proc/uptime")
    spec.linux.namespaces.append(S.Namespace("time"))
    spec.linux.time_offsets = S.TimeOffsets(boottime=S.TimeOffset(secs=86400 * 10),
                                            monotonic=S.TimeOffset(secs=3600))
    with open("/proc/uptime") as handle:
        host_uptime = float(handle.read().split()[0])
    result = run(spec.validate())
    inside = float(result.output.split()[0])
    assert 86400 * 10 <= inside - host_uptime < 86400 * 10 + 60
    assert result.launched.namespaces["time"] != os.stat("/proc/self/ns/time").st_ino


def test_joins_a_named_netns_by_path(rootfs):
    name = "kbt-launch-net"
    created = netns_lib.create(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "kbt-lv0", "type", "veth", "peer", "name", "kbt-lv1"],
                       check=True)
        spec = shell(rootfs, "cat /proc/net/dev; echo ---; ls -1 /sys/class/net")
        spec.linux.namespaces = [S.Namespace(n.type, created.path if n.type == "network" else None)
                                 for n in spec.linux.namespaces]
        with Running(sleeper(rootfs)) as plain:
            assert os.stat("/proc/%d/ns/net" % plain.pid).st_ino != created.inode
        result = run(spec.validate())
        assert result.launched.namespaces["network"] == created.inode
        # /proc/net and sysfs both show the joined namespace's links, not the host's.
        proc_net, _sep, sys_class_net = result.output.partition("---\n")
        assert sorted(line.split(":")[0].strip() for line in proc_net.splitlines()[2:]) == \
            ["kbt-lv0", "kbt-lv1", "lo"]
        assert sorted(sys_class_net.split()) == ["kbt-lv0", "kbt-lv1", "lo"]
    finally:
        netns_lib.delete(name)


def test_joins_the_cgroup_before_its_cgroup_namespace(rootfs, test_cgroup):
    with Running(sleeper(rootfs), cgroup_dir=test_cgroup) as launched:
        with open(os.path.join(test_cgroup, "cgroup.procs")) as handle:
            assert handle.read().split() == [str(launched.pid)]
        with open("/proc/%d/cgroup" % launched.pid) as handle:
            host_view = handle.read()
        assert "0::/%s/kbt-launch" % os.environ["KB_TEST_CGROUP_PARENT"] in host_view
    result = run(shell(rootfs, "grep '^0::' /proc/self/cgroup"), cgroup_dir=test_cgroup)
    assert result.output.strip() == "0::/"  # the cgroup namespace is rooted at the leaf


def test_clone3_puts_the_child_into_the_cgroup_at_birth(subreaper, test_cgroup):
    """The syscall layer's clone3 + CLONE_INTO_CGROUP: the child's first look at /proc/self/cgroup is the leaf."""
    from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
    leaf_fd = os.open(test_cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pid = libc.clone_process(0, cgroup_fd=leaf_fd)
        if pid == 0:
            with open("/proc/self/cgroup") as handle:
                os._exit(0 if handle.read().strip().endswith("/kbt-launch") else 3)
    finally:
        os.close(leaf_fd)
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_relaunch_into_a_leaf_that_cgroup_kill_emptied(rootfs, test_cgroup):
    """A stopped container's leaf was emptied with cgroup.kill; the next start must still run there.

    Kernels with the 6.14 cgroup.kill fork-race fix SIGKILL a child cloned into a cgroup whose kill
    sequence differs from the caller's own cgroup's: the launcher notices its init never ran and
    starts it the classic way (clone, then cgroup.procs).
    """
    with Running(sleeper(rootfs), cgroup_dir=test_cgroup) as first:
        with open(os.path.join(test_cgroup, "cgroup.kill"), "w") as handle:
            handle.write("1")
        killed = os.waitid(os.P_PID, first.pid, os.WEXITED | os.WNOWAIT)  # Running reaps it
        assert killed.si_status == 9  # SIGKILL, through cgroup.kill
    result = run(shell(rootfs, "grep '^0::' /proc/self/cgroup; echo ran"), cgroup_dir=test_cgroup)
    assert result.output.split() == ["0::/", "ran"]
    with Running(sleeper(rootfs), cgroup_dir=test_cgroup) as again:
        with open(os.path.join(test_cgroup, "cgroup.procs")) as handle:
            assert handle.read().split() == [str(again.pid)]


# --- the rest of the spec, applied ------------------------------------------------------

def test_process_settings_apply(rootfs):
    spec = shell(rootfs, "echo env=$KBT_VAR; pwd; umask; ulimit -n; ulimit -Hn; "
                         "cat /proc/sys/kernel/domainname; "
                         "cat /proc/sys/net/ipv4/ip_forward")
    spec.process.env.append("KBT_VAR=hello world")
    spec.process.cwd = "/tmp"
    spec.process.user.umask = 0o027
    spec.process.rlimits = [S.Rlimit("RLIMIT_NOFILE", 512, 768)]
    spec.domainname = "kbt.example"
    spec.linux.sysctl = {"net.ipv4.ip_forward": "1"}
    spec.process.oom_score_adj = 500
    result = run(spec.validate())
    assert result.output.splitlines() == ["env=hello world", "/tmp", "0027", "512", "768", "kbt.example", "1"]
    with open("/proc/sys/net/ipv4/ip_forward") as handle:
        assert handle.read().strip() == "0"  # the sandbox's own network namespace is untouched
    with Running(sleeper(rootfs)) as launched:
        with open("/proc/%d/oom_score_adj" % launched.pid) as handle:
            assert handle.read().strip() == "0"
    spec = sleeper(rootfs)
    spec.process.oom_score_adj = 500
    with Running(spec.validate()) as launched:
        with open("/proc/%d/oom_score_adj" % launched.pid) as handle:
            assert handle.read().strip() == "500"


def test_readonly_rootfs(rootfs):
    spec = shell(rootfs, "touch /kbt-file; touch /tmp/kbt-file && echo tmp-ok")
    spec.root.readonly = True
    result = run(spec.validate())
    assert "touch: /kbt-file: Read-only file system" in result.output
    assert "tmp-ok" in result.output
    assert not os.path.exists(os.path.join(rootfs, "kbt-file"))


def test_etc_files_come_from_annotations_on_a_private_tmpfs(scratch_rootfs):
    hosts = "127.0.0.1 localhost\n10.9.9.9 kbt-peer\n"
    spec = shell(scratch_rootfs, "cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; cat /etc/hostname; "
                                 "echo ---; grep ' /etc/hosts ' /proc/self/mountinfo; ls -a /dev | grep kernelbox")
    spec.annotations = {"io.kernelbox.etc.hosts": hosts, "io.kernelbox.etc.resolv-conf": "nameserver 10.9.9.1\n",
                        "io.kernelbox.etc.hostname": "kbt-box\n"}
    result = run(spec.validate())
    parts = result.output.split("---\n")
    assert parts[:3] == [hosts, "nameserver 10.9.9.1\n", "kbt-box\n"], result.output
    assert " tmpfs " in parts[3] and "nosuid" in parts[3]
    assert ".kernelbox-etc" not in result.output  # the staging place is gone again
    # In the rootfs itself only empty mount targets exist; the content never touched it.
    for name in ("hosts", "resolv.conf", "hostname"):
        assert os.path.getsize(os.path.join(scratch_rootfs, "etc", name)) == 0


def test_bind_and_tmpfs_mounts(rootfs, tmp_path):
    shared = tmp_path / "kbt-shared"  # below pytest's 0700 directory
    shared.mkdir()
    (shared / "in.txt").write_text("from host\n")
    writable = tmp_path / "kbt-writable"
    writable.mkdir()
    os.chown(str(writable), 100000, 100000)  # container root owns it
    spec = shell(rootfs, "cat /data/ro/in.txt; echo x > /data/ro/new 2>&1; echo out > /data/rw/out.txt; "
                         "df -k /data/scratch | tail -1 | awk '{print $2}'; grep ' /data/' /proc/self/mountinfo")
    spec.mounts += [S.Mount("/data/ro", None, str(shared), ["rbind", "ro"]),
                    S.Mount("/data/rw", None, str(writable), ["bind", "rw", "nosuid"]),
                    S.Mount("/data/scratch", "tmpfs", "tmpfs", ["size=1m", "nodev"])]
    result = run(spec.validate())
    lines = result.output.splitlines()
    assert lines[0] == "from host"
    assert "Read-only file system" in lines[1]
    assert lines[2] == "1024"
    assert (writable / "out.txt").read_text() == "out\n"
    assert os.stat(str(writable / "out.txt")).st_uid == 100000
    assert not (shared / "new").exists()
    options = {line.split()[4]: line.split()[5] for line in lines[3:]}
    assert options["/data/ro"].startswith("ro,") and options["/data/rw"].startswith("rw,nosuid")


def test_without_a_user_namespace(rootfs):
    spec = S.default_spec(rootfs, ["/bin/sleep", "30"], user_namespace=False)
    with Running(spec) as launched:
        status = host_status(launched.pid)
        assert status["Uid"].split() == ["0"] * 4
        assert int(status["CapEff"], 16) == DOCKER_CAPS_MASK and int(status["CapBnd"], 16) == DOCKER_CAPS_MASK
        assert os.stat("/proc/%d/ns/user" % launched.pid).st_ino == os.stat("/proc/self/ns/user").st_ino


def test_a_multithreaded_caller_gets_the_two_process_path(rootfs):
    """clone_process needs a single-threaded caller; with a thread running, start() forks a setup process."""
    import threading
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        plan = launch._Plan()
        try:
            launch._prepare(plan, shell(rootfs, "true").validate(), None, [None, 1, 2])
            assert launch._direct(plan) is False
        finally:
            plan.close()
        result = run(shell(rootfs, "echo $$; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"))
    finally:
        stop.set()
        worker.join()
    assert result.output.split() == ["1", "NoNewPrivs:", "1", "Seccomp:", "2"]


def test_extra_devices_are_the_hosts_nodes(rootfs):
    host = os.stat("/dev/kmsg")
    spec = shell(rootfs, "stat -c '%F %t:%T' /dev/kmsg; grep ' /dev/kmsg ' /proc/self/mountinfo | wc -l")
    spec.linux.devices = [S.Device("/dev/kmsg", "c", os.major(host.st_rdev), os.minor(host.st_rdev))]
    result = run(spec.validate())
    assert result.output.splitlines() == ["character special file %x:%x" % (os.major(host.st_rdev),
                                                                            os.minor(host.st_rdev)), "1"]


def test_loopback_is_up_in_a_new_network_namespace(rootfs):
    # runc brings lo up; without it 127.0.0.1 is unreachable and /etc/hosts' localhost is useless.
    script = ("cat /sys/class/net/lo/operstate /sys/class/net/lo/flags; "
              "httpd -p 127.0.0.1:8081 -h /tmp; "
              "wget -O- http://127.0.0.1:8081/ 2>&1")
    result = run(shell(rootfs, script))
    lines = result.output.split("\n")
    assert int(lines[1], 16) & 0x1, result.output  # IFF_UP
    # busybox httpd (it listens before it daemonises) answers 404 for the empty /tmp: HTTP over lo works.
    assert "404" in result.output, result.output
