# -*- coding: utf-8 -*-
# Copyright: kernelbox.containers contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
import os

import pytest

from ansible_collections.kernelbox.containers.plugins.module_utils._sys import procfs

DATA = os.path.join(os.path.dirname(__file__), "data")


def sample(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return handle.read()


def test_mountinfo_decodes_octal_escapes_and_fields():
    mounts = procfs.parse_mountinfo(sample("mountinfo_hybrid_host.txt"))
    odd = [m for m in mounts if m.mount_point.startswith("/tmp/kb dir")]
    assert len(odd) == 1
    assert odd[0].mount_point == "/tmp/kb dir,with:odd\\chars"
    assert odd[0].fstype == "tmpfs" and odd[0].propagation == "private"
    overlay = procfs.mounts_at(mounts, "/tmp/kbm")[0]
    assert overlay.fstype == "overlay" and overlay.propagation == "shared"
    assert overlay.super_option("lowerdir") == "/tmp/kbl1:/tmp/kbl2"
    assert overlay.super_option("upperdir") == "/tmp/kbu"
    assert overlay.super_option("missing") is None
    cgroup2 = [m for m in mounts if m.fstype == "cgroup2"]
    assert [m.mount_point for m in cgroup2] == ["/sys/fs/cgroup/unified"]


def test_mounts_at_matches_exactly():
    mounts = procfs.parse_mountinfo(sample("mountinfo_hybrid_host.txt"))
    assert procfs.mounts_at(mounts, "/tmp/kb") == []
    assert procfs.mounts_at(mounts, "/tmp/kbm/") == []


def test_octal_unescape():
    assert procfs.unescape_octal(r"a\040b\011c\012d\134e") == "a b\tc\nd\\e"


def test_split_mount_options_keeps_escaped_commas():
    assert procfs.split_mount_options(r"rw,lowerdir=/a\,b:/c,upperdir=/u") == ("rw", r"lowerdir=/a\,b:/c", "upperdir=/u")


@pytest.mark.parametrize("line", ["", "1 2 3", "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 cgroup2 x rw"])
def test_mountinfo_refuses_garbage(line):
    with pytest.raises((ValueError, IndexError)):
        procfs.parse_mountinfo_line(line)


def test_propagation_tags():
    line = "36 35 98:0 / /mnt rw - ext3 /dev/root rw"
    assert procfs.parse_mountinfo_line(line).propagation == "private"
    assert procfs.parse_mountinfo_line(line.replace("rw -", "rw master:3 -")).propagation == "slave"
    assert procfs.parse_mountinfo_line(line.replace("rw -", "rw shared:2 master:3 -")).propagation == "shared"
    assert procfs.parse_mountinfo_line(line.replace("rw -", "rw unbindable -")).propagation == "unbindable"


def test_status():
    status = procfs.parse_status(sample("proc_status.txt"))
    assert status["Name"] == "cat"
    assert int(status["CapBnd"], 16) > 0
    assert status["NoNewPrivs"] in ("0", "1")


def test_proc_cgroup_hybrid_and_pure():
    hybrid = procfs.parse_proc_cgroup(sample("proc_cgroup_hybrid.txt"))
    assert any(e.controllers == ("memory",) for e in hybrid)
    assert procfs.cgroup2_path_of(sample("proc_cgroup_hybrid.txt")) == "/"
    assert procfs.cgroup2_path_of("0::/kernelbox/web\n") == "/kernelbox/web"
    assert procfs.cgroup2_path_of("4:memory:/x\n") is None


def test_flat_and_nested_keyed():
    assert procfs.parse_flat_keyed("low 0\nhigh 2\noom 1\noom_kill 1\nbad line here\n") == {
        "low": 0, "high": 2, "oom": 1, "oom_kill": 1}
    nested = procfs.parse_nested_keyed("8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n")
    assert nested["8:16"]["wbytes"] == "314773504"


def test_pressure():
    text = ("some avg10=0.00 avg60=1.50 avg300=0.00 total=12345\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=678\n")
    psi = procfs.parse_pressure(text)
    assert psi["some"]["avg60"] == 1.5 and psi["full"]["total"] == 678.0


def test_ns_link():
    assert procfs.parse_ns_link("net:[4026531992]") == ("net", 4026531992)
    with pytest.raises(ValueError):
        procfs.parse_ns_link("/proc/1/ns/net")


def test_proc_stat_with_hostile_comm():
    text = "4606 (a) b) (c) R 4592 4592 1067 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 109585 3133440 396\n"
    stat = procfs.parse_proc_stat(text)
    assert stat.comm == "a) b) (c" and stat.ppid == 4592 and stat.starttime == 109585 and stat.state == "R"
