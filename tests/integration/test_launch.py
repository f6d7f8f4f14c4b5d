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


def sleeper(rootfs: str, **kwargs) -> S.Spec:
    """A container whose PID 1 is busybox sleep itself (no shell that might fork)."""
    return S.default_spec(rootfs, ["/bin/sleep", "30"], hostname="kbt-box", **kwargs)


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


def test_joins_the_cgroup_before_its_cgroup_namespace(rootfs):
    root = subprocess.run(["findmnt", "-n", "-t", "cgroup2", "-o", "TARGET"], check=True, stdout=subprocess.PIPE,
                          text=True).stdout.split()[0]
    parent = os.path.join(root, os.environ["KB_TEST_CGROUP_PARENT"])
    made_parent = not os.path.isdir(parent)
    leaf = os.path.join(parent, "kbt-launch")
    os.makedirs(leaf)
    try:
        with Running(sleeper(rootfs), cgroup_dir=leaf) as launched:
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


# --- refusals: a hostile rootfs or spec ---------------------------------------------

def _etc_listing():
    return sorted(os.listdir("/etc")), os.stat("/etc").st_mtime_ns


@pytest.mark.parametrize("user_namespace", [True, False], ids=["userns", "host-root"])
@pytest.mark.parametrize("name, target", [("proc", "/"), ("sys", "/etc"), ("dev", "/etc"), ("dev", "../../../etc")])
def test_rootfs_with_symlinked_proc_sys_or_dev_is_refused(scratch_rootfs, name, target, user_namespace):
    os.rmdir(os.path.join(scratch_rootfs, name))
    os.symlink(target, os.path.join(scratch_rootfs, name))
    before = _etc_listing()
    with pytest.raises(launch.LaunchError) as info:
        run(shell(scratch_rootfs, "true", user_namespace=user_namespace))
    assert info.value.step == "rootfs" and info.value.errno == errno.ELOOP
    assert "/%s in the rootfs is a symlink" % name in str(info.value)
    assert _etc_listing() == before  # nothing created or removed on the host


def test_fake_dev_null_in_the_image_is_never_used(scratch_rootfs, tmp_path):
    secret = tmp_path / "kbt-host-file"
    secret.write_text("host secret\n")
    os.symlink(str(secret), os.path.join(scratch_rootfs, "dev", "null"))
    result = run(shell(scratch_rootfs, "stat -c '%F %t:%T' /dev/null; wc -c < /proc/timer_list; "
                                       "echo x > /dev/null; cat /dev/null"))
    assert result.output.splitlines()[:2] == ["character special file 1:3", "0"], result.output
    assert secret.read_text() == "host secret\n"


@pytest.mark.parametrize("kind", ["symlink", "regular"])
def test_fake_dev_null_without_a_dev_tmpfs(scratch_rootfs, tmp_path, kind):
    """With the image's own /dev, a symlinked node is refused; a regular file is covered by the real node."""
    secret = tmp_path / "kbt-host-file"
    secret.write_text("host secret\n")
    fake = os.path.join(scratch_rootfs, "dev", "null")
    if kind == "symlink":
        os.symlink(str(secret), fake)
    else:
        with open(fake, "w") as handle:
            handle.write("not a device\n")
    spec = shell(scratch_rootfs, "stat -c '%F %t:%T' /dev/null; wc -c < /proc/timer_list")
    spec.mounts = [m for m in spec.mounts if not m.destination.startswith("/dev")]
    if kind == "symlink":
        with pytest.raises(launch.LaunchError) as info:
            run(spec.validate())
        assert info.value.step == "devices" and info.value.errno == errno.ELOOP
    else:
        result = run(spec.validate())
        assert result.output.splitlines() == ["character special file 1:3", "0"], result.output
        with open(fake) as handle:
            assert handle.read() == "not a device\n"
    assert secret.read_text() == "host secret\n"


@pytest.mark.parametrize("link, cwd, fragment", [
    (None, "/proc/self/fd/3", "magic link"),
    (None, "/proc/1/cwd", "magic link"),
    (("escape", "../../../../../../../../tmp"), "/escape", "climbs above the container's root"),
    (("magic", "/proc/self/cwd"), "/magic", "magic link"),
])
def test_cwd_escapes_are_refused(scratch_rootfs, link, cwd, fragment):
    if link:
        os.symlink(link[1], os.path.join(scratch_rootfs, link[0]))
    leaked = os.open("/", os.O_RDONLY)
    os.set_inheritable(leaked, True)
    spec = shell(scratch_rootfs, "pwd")
    spec.process.cwd = cwd
    try:
        with pytest.raises(launch.LaunchError) as info:
            run(spec.validate())
    finally:
        os.close(leaked)
    assert info.value.step == "cwd" and fragment in str(info.value)


def test_cwd_symlink_inside_the_rootfs_resolves_inside(scratch_rootfs):
    os.symlink("/bin", os.path.join(scratch_rootfs, "work"))
    spec = shell(scratch_rootfs, "pwd; ls -d /proc/self/cwd/busybox")
    spec.process.cwd = "/work"
    result = run(spec.validate())
    assert result.output.splitlines() == ["/bin", "/proc/self/cwd/busybox"], result.output


# --- a failure at each step names the step and leaves nothing ------------------------

def _caller_side(spec, rootfs, tmp_path):
    return spec


def _nofile_above_hard(spec, rootfs, tmp_path):
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with open("/proc/sys/fs/nr_open") as handle:
        assert hard < int(handle.read())
    spec.process.rlimits = [S.Rlimit("RLIMIT_NOFILE", 1024, hard + 1)]
    return spec


def _set(path, value):
    def change(spec, rootfs, tmp_path):
        target = spec
        for part in path[:-1]:
            target = getattr(target, part)
        setattr(target, path[-1], value)
        return spec
    return change


def _add_mount(mount):
    def change(spec, rootfs, tmp_path):
        spec.mounts.append(mount)
        return spec
    return change


def _join_file_as_netns(spec, rootfs, tmp_path):
    fake = tmp_path / "kbt-not-a-netns"
    fake.write_text("")
    spec.linux.namespaces = [S.Namespace(n.type, str(fake) if n.type == "network" else None)
                             for n in spec.linux.namespaces]
    return spec


def _join_uts_as_netns(spec, rootfs, tmp_path):
    spec.linux.namespaces = [S.Namespace(n.type, "/proc/self/ns/uts" if n.type == "network" else None)
                             for n in spec.linux.namespaces]
    return spec


def _negative_boottime(spec, rootfs, tmp_path):
    spec.linux.namespaces.append(S.Namespace("time"))
    spec.linux.time_offsets = S.TimeOffsets(boottime=S.TimeOffset(secs=-(10 ** 12)))
    return spec


def _device(path, major, minor):
    def change(spec, rootfs, tmp_path):
        spec.linux.devices = [S.Device(path, "c", major, minor)]
        return spec
    return change


def _kill_on_everything(spec, rootfs, tmp_path):
    spec.linux.seccomp = S.seccomp_lib.Profile(default_action="SCMP_ACT_KILL_PROCESS")
    return spec


def _kill_on_execve(spec, rootfs, tmp_path):
    profile = S.default_seccomp(spec)
    for rule in profile.syscalls:
        rule.names = [name for name in rule.names if name != "execve"]
    profile.syscalls = [rule for rule in profile.syscalls if rule.names]
    profile.syscalls.append(S.seccomp_lib.SyscallRule(names=["execve"], action="SCMP_ACT_KILL_PROCESS"))
    spec.linux.seccomp = profile
    return spec


FAILURES = [
    ("join namespaces", errno.EINVAL, "is not a network namespace", _join_file_as_netns),
    ("join namespaces", errno.EINVAL, "is not a network namespace", _join_uts_as_netns),
    ("rootfs", errno.ENOENT, "/kbt-no-such-rootfs", _set(("root", "path"), "/kbt-no-such-rootfs")),
    ("mounts", errno.ENOENT, "bind source /kbt-missing",
     _add_mount(S.Mount("/data", None, "/kbt-missing", ["rbind"]))),
    ("mounts", errno.ENODEV, "kbtfs on /data", _add_mount(S.Mount("/data", "kbtfs", "none", []))),
    ("devices", errno.ENOENT, "/dev/kbt-null", _device("/dev/kbt-null", 1, 3)),
    ("devices", errno.ENODEV, "/dev/zero is not the char device 1:3", _device("/dev/zero", 1, 3)),
    ("time offsets", None, "", _negative_boottime),
    ("sysctl", errno.ENOENT, "net.ipv4.kbt_no_such_sysctl",
     _set(("linux", "sysctl"), {"net.ipv4.kbt_no_such_sysctl": "1"})),
    ("cwd", errno.ENOENT, "/kbt-no-such-dir", _set(("process", "cwd"), "/kbt-no-such-dir")),
    ("rlimits", errno.EPERM, "CAP_SYS_RESOURCE", _nofile_above_hard),
    ("exec", errno.ENOENT, "/bin/kbt-missing", _set(("process", "args"), ["/bin/kbt-missing"])),
    ("exec", errno.EACCES, "/etc/passwd", _set(("process", "args"), ["/etc/passwd"])),
    ("exec", errno.ENOENT, "kbt-not-on-path", _set(("process", "args"), ["kbt-not-on-path"])),
    ("seccomp", errno.ECHILD, "killed by SIGSYS", _kill_on_everything),
    ("exec", errno.ECHILD, "killed by SIGSYS", _kill_on_execve),
]


@pytest.fixture
def test_cgroup():
    """A leaf under the run's test parent, removed afterwards."""
    root = subprocess.run(["findmnt", "-n", "-t", "cgroup2", "-o", "TARGET"], check=True, stdout=subprocess.PIPE,
                          text=True).stdout.split()[0]
    parent = os.path.join(root, os.environ["KB_TEST_CGROUP_PARENT"])
    made_parent = not os.path.isdir(parent)
    leaf = os.path.join(parent, "kbt-launch")
    os.makedirs(leaf)
    yield leaf
    for path in (leaf, parent) if made_parent else (leaf,):
        for _attempt in range(50):
            try:
                os.rmdir(path)
                break
            except OSError:
                time.sleep(0.05)


@pytest.mark.parametrize("step, err, fragment, change", FAILURES,
                         ids=["%s-%d" % (f[0].replace(" ", "_"), i) for i, f in enumerate(FAILURES)])
def test_a_failure_names_the_step_and_leaves_nothing(rootfs, tmp_path, test_cgroup, step, err, fragment, change):
    spec = change(shell(rootfs, "true"), rootfs, tmp_path).validate()
    with pytest.raises(launch.LaunchError) as info:
        run(spec, cgroup_dir=test_cgroup)
    assert info.value.step == step, str(info.value)
    if err is not None:
        assert info.value.errno == err, str(info.value)
    assert fragment in str(info.value)
    assert str(info.value).endswith("[errno %d]" % info.value.errno)
    with open(os.path.join(test_cgroup, "cgroup.procs")) as handle:
        assert handle.read() == ""  # nothing left in the cgroup
    # The autouse leak check proves no process, mount, cgroup or netns is left.


def test_a_cgroup_that_is_not_cgroup2_is_refused_before_fork(rootfs, tmp_path):
    with pytest.raises(launch.LaunchError) as info:
        run(shell(rootfs, "true"), cgroup_dir=str(tmp_path))
    assert info.value.step == "cgroup" and "not a cgroup v2 directory" in str(info.value)


def test_the_caller_must_be_a_subreaper(rootfs):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # PR_SET_CHILD_SUBREAPER is not inherited by fork
        try:
            os.close(read_end)
            try:
                run(shell(rootfs, "true"))
                os.write(write_end, b"started")
            except launch.LaunchError as exc:
                os.write(write_end, ("%s|%s" % (exc.step, exc)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = reader.read().decode()
    os.waitpid(pid, 0)
    assert report.startswith("preflight|") and "child subreaper" in report


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
