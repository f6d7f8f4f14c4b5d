# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The launcher refuses what it must and names the step that failed, leaving nothing behind.

A hostile rootfs (symlinked /proc, /sys, /dev; a fake /dev/null), an escaping
cwd, and a failure provoked at each step; the autouse leak check proves that
nothing (process, mount, cgroup, netns) is left after each.
"""

from __future__ import annotations

import errno
import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import launch
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from harness.launch_support import (  # noqa: F401  # pylint: disable=unused-import
    DOCKER_CAPS_MASK, HOST_PYTHON, Running, host_status, rootfs, run, scratch_rootfs, shell, sleeper, subreaper,
    test_cgroup, with_python)


# --- refusals: a hostile rootfs or spec ---------------------------------------------

_UNCLEAR = ("NoneType", "Traceback", "object at 0x", "TypeError", "AttributeError", "KeyError", "ValueError",
            "IndexError", "[Errno")


def assert_clear(message):
    """A refusal a user can act on: no Python internals leak into it (a TypeError was once the whole message)."""
    leaked = [word for word in _UNCLEAR if word in message]
    assert not leaked, (leaked, message)
    assert 20 < len(message) < 600, message


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
    assert_clear(str(info.value))
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


def _tree(root, times=True):
    """Every path below ``root`` with its type and size (and mtime): proof that nothing was created or written."""
    found = {}
    for top, dirs, files in os.walk(root):
        for entry in dirs + files:
            path = os.path.join(top, entry)
            info = os.lstat(path)
            found[os.path.relpath(path, root)] = (info.st_mode, info.st_size) + ((info.st_mtime_ns,) if times else ())
    return found


ETC_HOSTS = {"io.kernelbox.etc.hosts": "127.0.0.1\tlocalhost\n", "io.kernelbox.etc.hostname": "kbt-box\n",
             "io.kernelbox.etc.resolv-conf": "nameserver 192.0.2.53\n"}


@pytest.mark.parametrize("user_namespace", [True, False], ids=["userns", "host-root"])
@pytest.mark.parametrize("name, target", [
    ("hosts", "/dev/null"),                                  # would cover the container's null device
    ("hostname", "/proc/sys/kernel/hostname"),               # would create rootfs/proc/sys/..., then cover procfs
    ("hosts", "../../../../../../kbt-host-file"),             # climbs: resolves inside the root, still refused
    ("resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),  # the benign case, refused the same way
    ("hosts", "/etc/hosts-real"),                            # even a link to a regular file in the image
])
def test_etc_files_through_image_symlinks_are_refused(scratch_rootfs, tmp_path, name, target, user_namespace):
    secret = tmp_path / "kbt-host-file"
    secret.write_text("host secret\n")
    with open(os.path.join(scratch_rootfs, "etc", "hosts-real"), "w") as handle:
        handle.write("10.0.0.1 image\n")
    os.symlink(target, os.path.join(scratch_rootfs, "etc", name))
    spec = shell(scratch_rootfs, "cat /etc/%s" % name, user_namespace=user_namespace)
    spec.annotations.update(ETC_HOSTS)
    before, host_before = _tree(scratch_rootfs), os.stat(str(secret))
    with pytest.raises(launch.LaunchError) as info:
        run(spec.validate())
    assert info.value.step == "etc files" and info.value.errno == errno.ELOOP, str(info.value)
    assert "/etc/%s in the rootfs is a symlink or goes through one" % name in str(info.value)
    assert_clear(str(info.value))
    assert _tree(scratch_rootfs) == before  # nothing created through the link
    assert secret.read_text() == "host secret\n" and os.stat(str(secret)).st_mtime_ns == host_before.st_mtime_ns


def test_mount_targets_made_in_the_rootfs_are_reported_and_a_failed_start_takes_them_back(scratch_rootfs):
    from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import rootfs as rootfs_lib
    os.rmdir(os.path.join(scratch_rootfs, "sys"))
    before = _tree(scratch_rootfs, times=False)
    spec = shell(scratch_rootfs, "/etc/passwd")  # found, not executable: the launch fails at exec
    spec.process.args = ["/etc/passwd"]
    spec.mounts.append(S.Mount("/opt/deep", "tmpfs", "tmpfs", ["nosuid"]))
    spec.annotations.update(ETC_HOSTS)
    with pytest.raises(launch.LaunchError) as info:
        run(spec.validate())
    assert info.value.step == "exec"
    assert _tree(scratch_rootfs, times=False) == before  # /sys, /opt/deep and the /etc files it made are gone

    spec.process.args = ["/bin/true"]
    result = run(spec.validate())
    made = result.launched.created
    assert set(made) == {"/sys", "/opt", "/opt/deep", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}, made
    assert made.index("/opt") < made.index("/opt/deep")  # parents first
    with open(os.path.join(scratch_rootfs, "etc", "hosts"), "w") as handle:
        handle.write("written since\n")  # no longer as made: it stays
    root = os.open(scratch_rootfs, os.O_PATH | os.O_DIRECTORY)
    try:
        removed = rootfs_lib.remove_created(root, made)
    finally:
        os.close(root)
    assert set(removed) == set(made) - {"/etc/hosts"}
    assert set(_tree(scratch_rootfs)) - set(before) == {"etc/hosts"}


def test_etc_directory_symlink_is_refused(scratch_rootfs):
    os.rename(os.path.join(scratch_rootfs, "etc"), os.path.join(scratch_rootfs, "etc.real"))
    os.symlink("proc/sys/kernel", os.path.join(scratch_rootfs, "etc"))
    spec = shell(scratch_rootfs, "true")
    spec.annotations.update(ETC_HOSTS)
    before = _tree(scratch_rootfs)
    with pytest.raises(launch.LaunchError) as info:
        run(spec.validate())
    assert info.value.step == "etc files" and "/etc/hostname in the rootfs is a symlink or goes through one" in str(
        info.value)
    assert _tree(scratch_rootfs) == before


@pytest.mark.parametrize("kind, fragment", [("dir", "is a directory, not a regular file"),
                                            ("fifo", "is a FIFO, not a regular file")])
def test_etc_files_that_are_not_regular_files_are_refused(scratch_rootfs, kind, fragment):
    path = os.path.join(scratch_rootfs, "etc", "hosts")
    os.mkdir(path) if kind == "dir" else os.mkfifo(path)
    spec = shell(scratch_rootfs, "true")
    spec.annotations.update(ETC_HOSTS)
    with pytest.raises(launch.LaunchError) as info:
        run(spec.validate())
    assert info.value.step == "etc files" and "/etc/hosts in the rootfs %s" % fragment in str(info.value)


def test_etc_files_regular_ones_are_covered_not_written(scratch_rootfs):
    with open(os.path.join(scratch_rootfs, "etc", "hosts"), "w") as handle:
        handle.write("10.0.0.1 image\n")
    spec = shell(scratch_rootfs, "cat /etc/hosts /etc/hostname /etc/resolv.conf")
    spec.annotations.update(ETC_HOSTS)
    result = run(spec.validate())
    assert result.output == "127.0.0.1\tlocalhost\nkbt-box\nnameserver 192.0.2.53\n", result.output
    with open(os.path.join(scratch_rootfs, "etc", "hosts")) as handle:
        assert handle.read() == "10.0.0.1 image\n"


@pytest.mark.parametrize("resolver", ["openat2", "walk"])
@pytest.mark.parametrize("user_namespace", [True, False], ids=["userns", "host-root"])
def test_a_sysctl_covered_by_a_mount_is_never_written(scratch_rootfs, monkeypatch, resolver, user_namespace):
    """A procfs file bound over the sysctl's file is procfs too (CVE-2025-52881): the write must not go through.

    Here the container's own domainname file covers net.ipv4.ip_unprivileged_port_start; with the old check
    (on procfs, so fine) the value landed in the domain name."""
    if resolver == "walk":  # a kernel without openat2: the component walk must hold the same line
        from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import inroot
        from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc as kblibc

        def no_openat2(*_args, **_kwargs):
            raise OSError(errno.ENOSYS, "openat2")
        monkeypatch.setattr(kblibc, "openat2", no_openat2)
        monkeypatch.setattr(inroot, "_OPENAT2", [False])
    spec = shell(scratch_rootfs, "cat /proc/sys/kernel/domainname", user_namespace=user_namespace)
    spec.mounts.append(S.Mount("/proc/sys/net/ipv4/ip_unprivileged_port_start", None, "/proc/sys/kernel/domainname",
                               ["bind"]))
    spec.linux.sysctl = {"net.ipv4.ip_unprivileged_port_start": "1024"}
    with pytest.raises(launch.LaunchError) as info:
        run(spec.validate())
    assert info.value.step == "sysctl" and info.value.errno == errno.EXDEV, str(info.value)
    assert ("net.ipv4.ip_unprivileged_port_start: /proc/sys/net/ipv4/ip_unprivileged_port_start is covered by a "
            "mount or reached through a link" in str(info.value))
    assert_clear(str(info.value))


def test_an_uncovered_sysctl_is_written(scratch_rootfs):
    spec = shell(scratch_rootfs, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/net/ipv4/ip_forward")
    spec.linux.sysctl = {"net.ipv4.ip_unprivileged_port_start": "81", "net.ipv4.ip_forward": "1"}
    assert run(spec.validate()).output.split() == ["81", "1"]


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
    assert_clear(str(info.value))


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


def _device_mode(spec, rootfs, tmp_path):
    spec.linux.devices = [S.Device("/dev/zero", "c", 1, 5, file_mode=0o600)]
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
    ("devices", errno.EINVAL, "fileMode 384 differs from the host node's", _device_mode),
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
    assert_clear(str(info.value))
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


def test_a_timeout_kills_and_reaps_everything(rootfs, test_cgroup):
    null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(launch.LaunchError) as info:
            launch.start(shell(rootfs, "true"), stdout=null, stderr=null, cgroup_dir=test_cgroup, timeout=0.0)
    finally:
        os.close(null)
    assert info.value.step == "timeout" and info.value.errno == errno.ETIMEDOUT
    with open(os.path.join(test_cgroup, "cgroup.procs")) as handle:
        assert handle.read() == ""
