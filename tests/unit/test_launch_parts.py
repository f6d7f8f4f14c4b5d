# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The launcher's pure parts and its in-root path resolution (on a temporary tree, no privileges)."""

import errno
import os
import resource

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._kernel.mounts import fd_path
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import capabilities as caps
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import confine
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import inroot
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import launch
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import mountopts
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import rootfs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as S
from ansible_collections.kernelbox.containers.plugins.module_utils._sys import libc
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


# --- resolve(): both the openat2 path and the component walk ------------------------------

@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    if request.param == "walk":
        monkeypatch.setattr(inroot, "_OPENAT2", [False])
    return request.param


@pytest.fixture
def tree(tmp_path):
    """root/ with etc/passwd, and outside/secret next to it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("inside\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("outside\n")
    fd = os.open(str(root), os.O_PATH | os.O_DIRECTORY)
    yield root, fd
    os.close(fd)


def read_fd(fd):
    with open(fd_path(fd)) as handle:
        return handle.read()


def test_absolute_and_climbing_symlinks_stay_inside(resolver, tree):
    root, fd = tree
    os.symlink("/etc", str(root / "abs"))
    os.symlink("../../../../../etc", str(root / "climb"))
    for path in ("abs/passwd", "climb/passwd", "/../../etc/passwd", "etc/../../etc/./passwd"):
        target = inroot.resolve(fd, path)
        try:
            assert read_fd(target) == "inside\n", path
        finally:
            os.close(target)


def test_strict_refuses_any_symlink(resolver, tree):
    root, fd = tree
    os.symlink("etc", str(root / "link"))
    with pytest.raises(OSError) as info:
        inroot.resolve(fd, "link/passwd", strict=True)
    assert info.value.errno == errno.ELOOP


def test_no_clamp_refuses_climbing_out(tree):
    root, fd = tree
    os.symlink("../../outside", str(root / "escape"))
    with pytest.raises(OSError) as info:
        inroot.resolve(fd, "/escape", clamp=False)
    assert info.value.errno == errno.EXDEV and "climbs above" in str(info.value)


def test_create_makes_missing_components_inside_the_root_only(resolver, tree, tmp_path):
    root, fd = tree
    os.symlink("/new/dir", str(root / "redirect"))  # would be tmp_path/new/dir if followed on the host
    target = inroot.resolve(fd, "redirect/file", create="file")
    os.close(target)
    assert (root / "new" / "dir" / "file").is_file()
    assert not (tmp_path / "new").exists()
    target = inroot.resolve(fd, "/a/b/c", create="dir")
    os.close(target)
    assert (root / "a" / "b" / "c").is_dir()


def test_magic_links_are_refused(resolver):
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    leaked = os.open("/", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            inroot.resolve(fd, "/proc/self/fd/%d" % leaked)
        assert info.value.errno == errno.ELOOP
        ok = inroot.resolve(fd, "/proc/self/status")  # /proc/self itself is an ordinary symlink
        os.close(ok)
    finally:
        os.close(fd)
        os.close(leaked)


def test_not_a_directory_on_the_way(resolver, tree):
    _root, fd = tree
    with pytest.raises(OSError) as info:
        inroot.resolve(fd, "etc/passwd/x")
    assert info.value.errno == errno.ENOTDIR


# --- mount options -------------------------------------------------------------------

def test_mount_options_map_to_flags_propagation_and_data():
    parsed = mountopts.parse(["nosuid", "nodev", "ro", "rw", "noexec", "rslave", "size=64m", "mode=755"], "tmpfs")
    assert parsed.flags == libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
    assert not parsed.readonly
    assert parsed.propagation == (libc.MS_SLAVE | libc.MS_REC,)
    assert parsed.data_string == "size=64m,mode=755"
    bind = mountopts.parse(["rbind", "ro"], None)
    assert bind.bind and bind.recursive and bind.readonly and bind.data == ()
    assert mountopts.parse([], "bind").bind and not mountopts.parse([], "bind").recursive


@pytest.mark.parametrize("options, mount_type, fragment", [
    (["bind", "size=1m"], None, "not valid for a bind mount"),
    (["remount"], "tmpfs", "remount"),
    (["a,b"], "tmpfs", "one option per list item"),
    ([""], "tmpfs", "not valid"),
])
def test_bad_mount_options(options, mount_type, fragment):
    with pytest.raises(ValidationError, match=fragment):
        mountopts.parse(options, mount_type, "mounts[3].options")


# --- what the parent prepares --------------------------------------------------------------

def test_credentials_drop_everything_outside_bounding():
    capsets = S.Capabilities(bounding=["CAP_KILL", "CAP_CHOWN"], effective=["CAP_KILL"], permitted=["CAP_KILL"])
    creds = caps.prepare_credentials(1000, 1000, [5], capsets, kernel_last_cap=40)
    assert creds.drop_bounding == [c for c in range(41) if c not in (0, 5)]
    assert (creds.effective, creds.permitted, creds.inheritable, creds.ambient) == (1 << 5, 1 << 5, 0, [])
    with pytest.raises(ValidationError, match="not known to this kernel"):
        caps.prepare_credentials(0, 0, [], S.Capabilities(bounding=["CAP_CHECKPOINT_RESTORE"]), kernel_last_cap=39)


def test_confinement_prepare():
    spec = S.default_spec("/srv/rootfs", ["sh", "-c", "true"])
    spec.process.env = ["PATH=/opt/bin::/bin", "A=1", "A=2"]
    spec.process.rlimits = [S.Rlimit("RLIMIT_NOFILE", 10, 20), S.Rlimit("RLIMIT_CORE", 0, (1 << 64) - 1)]
    prepared = confine.prepare(spec.process, spec.linux.seccomp)
    assert prepared.candidates == [b"/opt/bin/sh", b"./sh", b"/bin/sh"]
    assert prepared.env[b"A"] == b"2"
    assert prepared.rlimits == [(resource.RLIMIT_NOFILE, 10, 20),
                                (resource.RLIMIT_CORE, 0, resource.RLIM_INFINITY)]
    assert prepared.no_new_privileges and len(prepared.seccomp_program) % 8 == 0
    spec.process.args = ["/bin/true"]
    assert confine.prepare(spec.process, None).candidates == [b"/bin/true"]


def test_compiled_seccomp_is_cached_but_follows_changes():
    profile = S.default_spec("/srv/rootfs", ["/bin/true"]).linux.seccomp
    first = confine.compile_seccomp(profile)
    assert confine.compile_seccomp(profile) is first
    profile.default_action = "SCMP_ACT_KILL_PROCESS"
    assert confine.compile_seccomp(profile) != first


def test_rootfs_plan_classifies_mounts():
    spec = S.default_spec("/srv/rootfs", ["/bin/true"])
    spec.mounts.append(S.Mount("/data", None, "/srv/data", ["rbind", "ro"]))
    spec.annotations["io.kernelbox.etc.hosts"] = "127.0.0.1 localhost\n"
    plan = rootfs.plan(spec.validate())
    kinds = {op.destination: (op.kind, op.strict) for op in plan.mounts}
    assert kinds["/proc"] == ("proc", True) and kinds["/sys"] == ("sysfs", True)
    assert kinds["/sys/fs/cgroup"] == ("cgroup2", True) and kinds["/tmp"] == ("fs", False)
    assert kinds["/data"] == ("bind", False) and kinds["/dev/pts"] == ("fs", True)
    assert [d.name for d in plan.devices] == ["null", "zero", "full", "random", "urandom", "tty"]
    assert plan.etc_files == [("/etc/hosts", b"127.0.0.1 localhost\n")]


# --- the child -> caller protocol ------------------------------------------------------------

def test_error_report_round_trip():
    read_end, write_end = os.pipe()
    try:
        launch._report(write_end, "pivot_root", errno.EINVAL, "switch to\nthe root: Invalid argument")
        line = os.read(read_end, 4096).decode().rstrip("\n")
    finally:
        os.close(read_end)
        os.close(write_end)
    error = launch._error_from(line)
    assert (error.step, error.errno) == ("pivot_root", errno.EINVAL)
    assert str(error) == "pivot_root: switch to the root: Invalid argument [errno 22]"
    assert error.result == {"launch_step": "pivot_root", "errno": errno.EINVAL}


def test_namespace_report_parses():
    assert launch._parse_namespaces("X user=1 pid=2 network=3") == {"user": 1, "pid": 2, "network": 3}
