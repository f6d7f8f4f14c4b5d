# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The launcher on the real kernel: _runtime.launch.start() with a busybox-static rootfs.

Library level (no Ansible): each container costs tens of milliseconds.  What the
container sees is read from inside it (busybox, or the host's Python through a
read-only bind of /usr), and what the host sees through /proc; never through
the launcher's own return values alone.  The autouse leak check (processes,
mounts, cgroups, netns) runs after each test.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import subprocess
import time

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel import netns as netns_lib
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import launch
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc

DOCKER_CAPS_MASK = 0x00000000A80425FB
BUSYBOX = "/bin/busybox"
HOST_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module", autouse=True)
def subreaper():
    """The launcher's contract: the caller is a child subreaper (the supervisor is)."""
    libc.set_child_subreaper()


def make_rootfs(path: str) -> str:
    """A busybox-static rootfs: /bin/busybox and its applets, and the usual top directories."""
    os.makedirs(path)
    os.chmod(path, 0o755)
    for name in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "usr", "data"):
        os.mkdir(os.path.join(path, name), 0o755)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], check=True, stdout=subprocess.PIPE, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", os.path.join(path, "bin", applet))
    # For syscall-level checks the host's Python runs inside through a read-only bind of /usr.
    os.symlink("usr/lib", os.path.join(path, "lib"))
    os.symlink("usr/lib64", os.path.join(path, "lib64"))
    with open(os.path.join(path, "etc", "passwd"), "w") as handle:
        handle.write("root:x:0:0:root:/root:/bin/sh\n")
    return path


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory):
    """Built once per session, under pytest's 0700 temp dir (which container root cannot walk)."""
    return make_rootfs(str(tmp_path_factory.mktemp("kbt-launch") / "rootfs"))


@pytest.fixture
def scratch_rootfs(tmp_path):
    """A throwaway rootfs a test may damage (symlinked /proc, a fake /dev/null...)."""
    return make_rootfs(str(tmp_path / "rootfs"))


def shell(rootfs: str, script: str, **kwargs) -> S.Spec:
    spec = S.default_spec(rootfs, ["/bin/sh", "-c", script], hostname="kbt-box", **kwargs)
    return spec


def with_python(spec: S.Spec, code: str) -> S.Spec:
    spec.mounts.append(S.Mount("/usr", None, "/usr", ["rbind", "ro", "nosuid", "nodev"]))
    spec.process.args = [HOST_PYTHON, "-I", "-S", "-c", code]
    return spec.validate()


class Run:
    def __init__(self, launched: launch.Launched, status: int, output: str) -> None:
        self.launched = launched
        self.status = status
        self.output = output

    @property
    def exit_code(self) -> int:
        return os.waitstatus_to_exitcode(self.status)


def run(spec: S.Spec, timeout: float = 20.0, **kwargs) -> Run:
    """Start, collect stdout+stderr until the container exits, reap it."""
    read_end, write_end = os.pipe()
    try:
        launched = launch.start(spec, stdout=write_end, stderr=write_end, **kwargs)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as reader:
        while True:
            chunk = reader.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if time.monotonic() > deadline:
                os.kill(launched.pid, signal.SIGKILL)
    _pid, status = os.waitpid(launched.pid, 0)
    return Run(launched, status, b"".join(chunks).decode(errors="replace"))


class Running:
    """A container kept alive (sleep) so the host can inspect it; killed and reaped on exit."""

    def __init__(self, spec: S.Spec, **kwargs) -> None:
        self.spec = spec
        self.kwargs = kwargs

    def __enter__(self) -> launch.Launched:
        self.null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
        try:
            self.launched = launch.start(self.spec, stdout=self.null, stderr=self.null, **self.kwargs)
        except BaseException:
            os.close(self.null)
            raise
        return self.launched

    def __exit__(self, *exc) -> None:
        os.close(self.null)
        try:
            os.kill(self.launched.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.launched.pid, 0)


def host_status(pid: int) -> dict:
    with open("/proc/%d/status" % pid) as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


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
    with Running(shell(rootfs, "sleep 30")) as launched:
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
    with Running(shell(rootfs, "sleep 30")) as launched:
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
        with Running(shell(rootfs, "sleep 30")) as launched:
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
        with Running(shell(rootfs, "sleep 30")) as plain:
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


def test_joins_the_cgroup_before_its_cgroup_namespace(rootfs):
    root = subprocess.run(["findmnt", "-n", "-t", "cgroup2", "-o", "TARGET"], check=True, stdout=subprocess.PIPE,
                          text=True).stdout.split()[0]
    parent = os.path.join(root, os.environ["KB_TEST_CGROUP_PARENT"])
    made_parent = not os.path.isdir(parent)
    leaf = os.path.join(parent, "kbt-launch")
    os.makedirs(leaf)
    try:
        with Running(shell(rootfs, "cat /proc/self/cgroup; sleep 30"), cgroup_dir=leaf) as launched:
            with open(os.path.join(leaf, "cgroup.procs")) as handle:
                assert handle.read().split() == [str(launched.pid)]
            with open("/proc/%d/cgroup" % launched.pid) as handle:
                host_view = handle.read()
            assert "0::/%s/kbt-launch" % os.environ["KB_TEST_CGROUP_PARENT"] in host_view
        result = run(shell(rootfs, "grep '^0::' /proc/self/cgroup"), cgroup_dir=leaf)
        assert result.output.strip() == "0::/"  # the cgroup namespace is rooted at the leaf
    finally:
        for path in (leaf, parent) if made_parent else (leaf,):
            for _attempt in range(50):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.05)
