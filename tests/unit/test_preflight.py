# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a launch would refuse, found before anything is written: preflight.check on a rootfs in a temporary
directory (read-only lookups), and the pure execve size rules of the spec."""
import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.model import spec as specs
from ansible_collections.kernelbox.containers.plugins.module_utils._runtime.process import preflight
from ansible_collections.kernelbox.containers.plugins.module_utils._sys.validate import ValidationError


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    for name in ("bin", "proc", "sys", "dev", "etc", "work"):
        (root / name).mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF")
    os.symlink("busybox", str(root / "bin" / "sh"))
    (root / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    return str(root)


def spec_for(rootfs, args=("sh", "-c", "true"), **extra):
    spec = specs.default_spec(rootfs, list(args), hostname="web")
    for key, value in extra.items():
        setattr(spec.process, key, value)
    return spec.validate()


def test_a_good_spec_passes(rootfs):
    preflight.check(spec_for(rootfs))
    preflight.check(spec_for(rootfs, ("/bin/busybox",), cwd="/work"))


@pytest.mark.parametrize("change, fragment", [
    (lambda s, r: setattr(s.process, "cwd", "/nope"), "process.cwd: /nope cannot be entered in the rootfs"),
    (lambda s, r: setattr(s.process, "cwd", "/etc/passwd"), "process.cwd: /etc/passwd in the rootfs"),
    (lambda s, r: setattr(s.process, "args", ["kbt-missing"]),
     "process.args[0]: kbt-missing is not found in the rootfs"),
    (lambda s, r: setattr(s.process, "args", ["/usr/bin/env"]), "process.args[0]: /usr/bin/env is not found"),
    (lambda s, r: setattr(s.process, "args", ["/etc"]), "process.args[0]: /etc is not found"),
    (lambda s, r: s.mounts.append(specs.Mount("/data", "bind", "/kbt/no/such/source", ["rbind"])),
     "mounts: the source of the bind mount onto /data, /kbt/no/such/source, does not exist on the host"),
    (lambda s, r: s.linux.namespaces.__setitem__(
        [n.type for n in s.linux.namespaces].index("network"), specs.Namespace("network", "/run/netns/kbt-nope")),
     "the network namespace to join, /run/netns/kbt-nope, cannot be opened"),
    (lambda s, r: s.linux.namespaces.__setitem__(
        [n.type for n in s.linux.namespaces].index("network"), specs.Namespace("network", "/etc/hostname")),
     "/etc/hostname is not a namespace file"),
])
def test_what_the_launch_would_refuse_is_refused_first(rootfs, change, fragment):
    spec = spec_for(rootfs)
    change(spec, rootfs)
    with pytest.raises(ValidationError) as info:
        preflight.check(spec)
    assert fragment in str(info.value)


@pytest.mark.parametrize("top", ["proc", "sys", "dev"])
def test_a_symlinked_proc_sys_or_dev_is_refused(rootfs, top):
    os.rmdir(os.path.join(rootfs, top))
    os.symlink("/etc", os.path.join(rootfs, top))
    with pytest.raises(ValidationError) as info:
        preflight.check(spec_for(rootfs))
    assert "/%s in the rootfs %s is a symlink" % (top, rootfs) in str(info.value)


def test_what_a_mount_provides_is_not_judged(rootfs):
    spec = spec_for(rootfs, ("/opt/tool/run",), cwd="/opt/tool")
    spec.mounts.append(specs.Mount("/opt/tool", "bind", rootfs, ["rbind"]))
    preflight.check(spec)


@pytest.mark.parametrize("change, fragment", [
    (dict(args=["sh", "a\0b"]), "process.args[1]: contains a NUL byte"),
    (dict(env=["PATH=/bin", "A=x\0y"]), "process.env[1]: contains a NUL byte"),
    (dict(args=["sh", "x" * (128 * 1024)]), "process.args[1]: is 131072 bytes; execve takes at most 131071"),
    (dict(args=["sh"] + ["x" * 100000] * 40), "process.args and process.env: 4000"),
])
def test_execve_limits_are_checked_in_the_spec(rootfs, change, fragment):
    spec = specs.default_spec(rootfs, ["sh"], hostname="web")
    for key, value in change.items():
        setattr(spec.process, key, value)
    with pytest.raises(ValidationError) as info:
        spec.validate()
    assert fragment in str(info.value)


def test_a_larger_stack_allows_more_arguments(rootfs):
    spec = specs.default_spec(rootfs, ["sh"], hostname="web")
    spec.process.args += ["x" * 100000] * 40
    spec.process.rlimits.append(specs.Rlimit("RLIMIT_STACK", 64 << 20, 64 << 20))
    spec.validate()  # 4 MB of arguments fit under a quarter of 64 MiB (capped at 6 MiB)
